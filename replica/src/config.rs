//! Node configuration: a TOML file (or the embedded `galgo dev` one), then environment
//! variables `GALGO_<SECTION>_<KEY>` over it (a value is read as a TOML value, else as a
//! string), then checks. Every error names the key (or the variable) that is wrong, and
//! unknown keys are errors, so a typo never silently falls back to a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The configuration `galgo dev` runs with.
pub const DEV_CONFIG: &str = include_str!("../config/dev.toml");

/// Nodes in a cluster, at most: the metadata group runs on every node, and a group has at
/// most the consensus core's `REPLICAS_MAX` replicas.
pub const NODES_MAX: usize = galgo_consensus::quorums::REPLICAS_MAX as usize;
pub const SHARDS_MAX: u16 = 1024;
/// Shards `replica.shards = 0` (one per core) runs at most: the embedded configuration's bus
/// and client ports are 100 apart.
pub const AUTO_SHARDS_MAX: u16 = 64;
pub const SEGMENT_SIZE_MIN: u64 = 1 << 20;
pub const SEGMENT_SIZE_MAX: u64 = 1 << 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub replica: ReplicaConfig,
    pub storage: StorageConfig,
    pub gateway: GatewayConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub id: u64,
    /// Replicas per partition unless a topic says otherwise.
    pub replication: u8,
    pub nodes: Vec<NodeConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u8,
    /// host:port of its replica-to-replica listener.
    pub address: String,
    /// host:port of its client port (routing clients and gateways).
    pub client_address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// This node's id in `cluster.nodes`.
    pub id: u8,
    pub data_dir: PathBuf,
    /// monoio shards (one per core when 0).
    pub shards: u16,
    /// host:port of the node's HTTP endpoints (/livez, /readyz, /metrics); empty: none
    /// (`galgo dev` serves them on gateway.http_address).
    #[serde(default)]
    pub http_address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub segment_size: u64,
    /// Write partition logs with O_DIRECT where the filesystem allows it.
    pub direct_io: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Iggy binary protocol listener.
    pub tcp_address: String,
    /// HTTP: /livez, /readyz, /metrics.
    pub http_address: String,
    /// PEM files of the binary protocol's TLS certificate chain and private key; both empty
    /// (the default): plain TCP.
    #[serde(default)]
    pub tls_certificate: String,
    #[serde(default)]
    pub tls_key: String,
    /// A consumer-group member whose gateway has not touched it for this long leaves its
    /// groups (its gateway died); gateways touch their members every sixth of it.
    #[serde(default = "default_member_timeout_ms")]
    pub member_timeout_ms: u64,
}

fn default_member_timeout_ms() -> u64 {
    30_000
}

/// Member timeouts a gateway takes: long enough for several touches over a slow metadata
/// group, short enough that a dead gateway's partitions go back to live consumers.
pub const MEMBER_TIMEOUT_MS_MIN: u64 = 600;
pub const MEMBER_TIMEOUT_MS_MAX: u64 = 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn error(text: impl Into<String>) -> ConfigError {
    ConfigError(text.into())
}

impl Config {
    /// Parses `text`, applies the `GALGO_*` variables of `env` over it, and checks the result.
    pub fn load(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| error(e.to_string().trim_end().to_string()))?;
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with("GALGO_"))
            .collect();
        overrides.sort();
        for (name, value) in overrides {
            apply_override(&mut table, &name, &value)?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| error(e.to_string().trim_end().to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// The checks a parsed configuration must pass.
    pub fn check(&self) -> Result<(), ConfigError> {
        let nodes = &self.cluster.nodes;
        if nodes.is_empty() || nodes.len() > NODES_MAX {
            return Err(error(format!(
                "cluster.nodes has {} nodes (1 to {NODES_MAX})",
                nodes.len()
            )));
        }
        let mut ids: Vec<u8> = nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(error("cluster.nodes has two nodes with one id"));
        }
        for node in nodes {
            parse_address(
                &node.address,
                &format!("cluster.nodes[id = {}].address", node.id),
            )?;
            parse_address(
                &node.client_address,
                &format!("cluster.nodes[id = {}].client_address", node.id),
            )?;
        }
        if !ids.contains(&self.replica.id) {
            return Err(error(format!(
                "replica.id {} is not in cluster.nodes ({ids:?})",
                self.replica.id
            )));
        }
        let replication = self.cluster.replication;
        if replication == 0 || usize::from(replication) > nodes.len() {
            return Err(error(format!(
                "cluster.replication {replication} with {} nodes (1 to the node count)",
                nodes.len()
            )));
        }
        if self.replica.data_dir.as_os_str().is_empty() {
            return Err(error("replica.data_dir is empty"));
        }
        if self.replica.shards > SHARDS_MAX {
            return Err(error(format!(
                "replica.shards {} (0 for one per core, at most {SHARDS_MAX})",
                self.replica.shards
            )));
        }
        let segment_size = self.storage.segment_size;
        if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&segment_size) {
            return Err(error(format!(
                "storage.segment_size {segment_size} (from {SEGMENT_SIZE_MIN} to {SEGMENT_SIZE_MAX})"
            )));
        }
        if self.replica.shards == 0 && nodes.len() > 1 {
            return Err(error(
                "replica.shards is 0 (one per core) in a cluster of several nodes: every node \
                 must run the same number of shards, so set it explicitly",
            ));
        }
        let shards = self.shard_count();
        // Each address takes one port per shard; no two ranges may meet on one host.
        let mut ranges: Vec<(String, SocketAddr, u32)> = Vec::new();
        for node in nodes {
            for (key, address) in [
                ("address", &node.address),
                ("client_address", &node.client_address),
            ] {
                let key = format!("cluster.nodes[id = {}].{key}", node.id);
                let address = parse_address(address, &key)?;
                let port = address.port();
                if port == 0 || u32::from(port) + u32::from(shards) > 65_536 {
                    return Err(error(format!(
                        "{key} port {port}: its {shards} shards need ports {port} to {}, within 1..=65535",
                        u32::from(port) + u32::from(shards) - 1
                    )));
                }
                for (other, other_address, other_end) in &ranges {
                    let same_host = other_address.ip() == address.ip()
                        || other_address.ip().is_unspecified()
                        || address.ip().is_unspecified();
                    let end = u32::from(port) + u32::from(shards);
                    let overlap =
                        u32::from(port) < *other_end && u32::from(other_address.port()) < end;
                    if same_host && overlap {
                        return Err(error(format!(
                            "{key} {address} and {other} {other_address} overlap with {shards} shards (one port each)"
                        )));
                    }
                }
                ranges.push((key, address, u32::from(port) + u32::from(shards)));
            }
        }
        if !self.replica.http_address.is_empty() {
            parse_address(&self.replica.http_address, "replica.http_address")?;
        }
        parse_address(&self.gateway.tcp_address, "gateway.tcp_address")?;
        parse_address(&self.gateway.http_address, "gateway.http_address")?;
        if !(MEMBER_TIMEOUT_MS_MIN..=MEMBER_TIMEOUT_MS_MAX)
            .contains(&self.gateway.member_timeout_ms)
        {
            return Err(error(format!(
                "gateway.member_timeout_ms {} ({MEMBER_TIMEOUT_MS_MIN} to {MEMBER_TIMEOUT_MS_MAX})",
                self.gateway.member_timeout_ms
            )));
        }
        if self.gateway.tls_certificate.is_empty() != self.gateway.tls_key.is_empty() {
            return Err(error(
                "gateway.tls_certificate and gateway.tls_key go together: set both or neither",
            ));
        }
        Ok(())
    }

    /// The shards this node runs: `replica.shards`, or one per core when that is 0. Every node
    /// of a cluster must run as many (shard s talks to shard s): set it in a cluster.
    pub fn shard_count(&self) -> u16 {
        match self.replica.shards {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(usize::from(AUTO_SHARDS_MAX)) as u16,
            shards => shards,
        }
    }

    /// The address this node's replica listener binds.
    pub fn own_address(&self) -> SocketAddr {
        self.own_node()
            .address
            .parse()
            .expect("checked: a socket address")
    }

    /// The address this node's client port binds.
    pub fn own_client_address(&self) -> SocketAddr {
        self.own_node()
            .client_address
            .parse()
            .expect("checked: a socket address")
    }

    fn own_node(&self) -> &NodeConfig {
        self.cluster
            .nodes
            .iter()
            .find(|n| n.id == self.replica.id)
            .expect("checked: replica.id is a node")
    }
}

fn parse_address(text: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| error(format!("{key} '{text}' is not an ip:port address")))
}

/// Sets `section.key` from the variable `GALGO_SECTION_KEY`. The section is the first word;
/// the rest is the key (keys may hold underscores: GALGO_REPLICA_DATA_DIR is replica.data_dir).
/// A variable whose first word is no section is not for us and is left alone; a known section
/// with an unknown key is an error (a typo must not fall back to a default). The value is read
/// as the key's type: strings verbatim, integers as plain decimal, booleans as true or false,
/// lists (cluster.nodes) as a TOML value.
fn apply_override(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let rest = name["GALGO_".len()..].to_ascii_lowercase();
    let defaults: toml::Table = DEV_CONFIG.parse().expect("the embedded config parses");
    let Some((section, key)) = rest.split_once('_') else {
        return Ok(());
    };
    let Some(section_defaults) = defaults.get(section).and_then(|v| v.as_table()) else {
        return Ok(());
    };
    let Some(default) = section_defaults.get(key) else {
        return Err(error(format!(
            "{name}: there is no key {key} in section [{section}]"
        )));
    };
    let wrong = |what: &str| error(format!("{name}: '{value}' is not {what} ({section}.{key})"));
    let parsed = match default {
        toml::Value::String(_) => toml::Value::String(value.to_string()),
        toml::Value::Integer(_) => {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(wrong("a decimal integer"));
            }
            toml::Value::Integer(value.parse().map_err(|_| wrong("a decimal integer"))?)
        }
        toml::Value::Boolean(_) => match value {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => return Err(wrong("true or false")),
        },
        _ => format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| wrong("a TOML value"))?,
    };
    let section_table = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(section_table) = section_table.as_table_mut() else {
        return Err(error(format!("[{section}] is not a table")));
    };
    section_table.insert(key.to_string(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_embedded_config_loads_and_variables_override_it() {
        let config = Config::load(DEV_CONFIG, env(&[])).unwrap();
        assert_eq!(config.replica.data_dir, PathBuf::from("galgo-data"));
        assert_eq!(config.own_address(), "127.0.0.1:7000".parse().unwrap());
        let config = Config::load(
            DEV_CONFIG,
            env(&[
                ("GALGO_REPLICA_DATA_DIR", "/var/lib/galgo"),
                ("GALGO_STORAGE_SEGMENT_SIZE", "2097152"),
                ("GALGO_STORAGE_DIRECT_IO", "false"),
                ("GALGO_GATEWAY_TCP_ADDRESS", "0.0.0.0:9090"),
                (
                    "GALGO_CLUSTER_NODES",
                    r#"[{id = 0, address = "10.0.0.1:7000", client_address = "10.0.0.1:7100"},
                        {id = 1, address = "10.0.0.2:7000", client_address = "10.0.0.2:7100"}]"#,
                ),
                ("GALGO_REPLICA_SHARDS", "2"),
                ("GALGO_ROOT_PASSWORD", "not a config key"),
                ("GALGO_LOG", "debug"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.replica.data_dir, PathBuf::from("/var/lib/galgo"));
        assert_eq!(config.storage.segment_size, 2 << 20);
        assert!(!config.storage.direct_io);
        assert_eq!(config.gateway.tcp_address, "0.0.0.0:9090");
        assert_eq!(config.cluster.nodes.len(), 2);
        // A string key takes the text as it is, whatever it looks like; integers are decimal.
        let refused = Config::load(
            DEV_CONFIG,
            env(&[
                ("GALGO_REPLICA_DATA_DIR", "123"),
                ("GALGO_REPLICA_ID", "07"),
            ]),
        )
        .unwrap_err();
        assert!(refused.0.contains("replica.id 7"), "{refused}");
        let config = Config::load(DEV_CONFIG, env(&[("GALGO_REPLICA_DATA_DIR", r"C:\new")]));
        assert_eq!(config.unwrap().replica.data_dir, PathBuf::from(r"C:\new"));
    }

    #[test]
    fn every_error_names_the_key() {
        // (config text, variables, the key the error must name)
        type Case = (String, Vec<(String, String)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                DEV_CONFIG.replace("shards = 0", "shard = 0"),
                env(&[]),
                "shard",
            ),
            (
                DEV_CONFIG.replace("id = 0\n", "id = 5\n"),
                env(&[]),
                "replica.id",
            ),
            (
                DEV_CONFIG.replace("replication = 1", "replication = 2"),
                env(&[]),
                "cluster.replication",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[("GALGO_STORAGE_SEGMENT_SIZE", "5")]),
                "storage.segment_size",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[("GALGO_STORAGE_SEGMENTSIZE", "5")]),
                "GALGO_STORAGE_SEGMENTSIZE",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[("GALGO_GATEWAY_HTTP_ADDRESS", "localhost")]),
                "gateway.http_address",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[("GALGO_GATEWAY_TLS_CERTIFICATE", "/etc/galgo/cert.pem")]),
                "gateway.tls_key",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[("GALGO_GATEWAY_MEMBER_TIMEOUT_MS", "5")]),
                "gateway.member_timeout_ms",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[("GALGO_REPLICA_SHARDS", "lots")]),
                "GALGO_REPLICA_SHARDS",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[("GALGO_REPLICA_ID", "0x1")]),
                "GALGO_REPLICA_ID",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[("GALGO_STORAGE_DIRECT_IO", "yes")]),
                "GALGO_STORAGE_DIRECT_IO",
            ),
            ("[cluster\n".to_string(), env(&[]), "cluster"),
            (
                DEV_CONFIG.replace("127.0.0.1:7000", "nowhere"),
                env(&[]),
                "cluster.nodes[id = 0].address",
            ),
            (
                DEV_CONFIG.replace("127.0.0.1:7100", "nowhere"),
                env(&[]),
                "cluster.nodes[id = 0].client_address",
            ),
            (
                DEV_CONFIG.replace("127.0.0.1:7100", "127.0.0.1:7001"),
                env(&[("GALGO_REPLICA_SHARDS", "2")]),
                "cluster.nodes[id = 0].client_address",
            ),
            (
                DEV_CONFIG.to_string(),
                env(&[(
                    "GALGO_CLUSTER_NODES",
                    r#"[{id = 0, address = "10.0.0.1:7000", client_address = "10.0.0.1:7100"},
                        {id = 1, address = "10.0.0.2:7000", client_address = "10.0.0.2:7100"}]"#,
                )]),
                "replica.shards",
            ),
        ];
        for (text, variables, key) in cases {
            let message = Config::load(&text, variables).unwrap_err().to_string();
            assert!(message.contains(key), "'{message}' should name {key}");
        }
    }
}
