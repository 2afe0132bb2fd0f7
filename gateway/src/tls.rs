//! TLS for the binary protocol: the server configuration built from PEM files (certificate
//! chain and private key), with rustls on the aws-lc-rs provider (the one the 0.11.0 client
//! uses). A connection's handshake happens on its first read, on its own thread.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Certificates a chain file may hold (a leaf and its intermediates; more is a mistake).
const CHAIN_CERTIFICATES_MAX: usize = 16;

/// The server configuration for `certificate` (a PEM chain, leaf first) and `key` (a PEM
/// private key: PKCS#8, PKCS#1 or SEC1). Every failure names the file and what is wrong.
pub fn server_config(certificate: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut chain = Vec::new();
    let certificates = CertificateDer::pem_file_iter(certificate)
        .map_err(|error| format!("{}: {error}", certificate.display()))?;
    for parsed in certificates {
        if chain.len() == CHAIN_CERTIFICATES_MAX {
            return Err(format!(
                "{}: more than {CHAIN_CERTIFICATES_MAX} certificates",
                certificate.display()
            ));
        }
        chain.push(parsed.map_err(|error| format!("{}: {error}", certificate.display()))?);
    }
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in it",
            certificate.display()
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|error| format!("{}: {error}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS protocol versions: {error}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("the certificate and key do not make a TLS identity: {error}"))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_refused_with_their_name() {
        let dir = std::env::temp_dir().join(format!("galgo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let error = server_config(&missing, &missing).unwrap_err();
        assert!(error.contains("missing.pem"), "{error}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = server_config(&empty, &empty).unwrap_err();
        assert!(error.contains("no PEM certificate"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
