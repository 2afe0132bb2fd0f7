//! The PyPI `apache-iggy` 0.9.0 client (Iggy's Python SDK, built on the Rust SDK 0.11.0)
//! against `galgo dev`: `tests/python/smoke.py` logs in, creates a stream and topic, sends
//! and polls messages (offset, next with auto-commit, last) and cleans up. The test installs
//! the client itself, once, into a virtual environment under Cargo's test scratch directory
//! (`python3` and PyPI must be reachable).

mod common;

use common::{dev_command, free_address};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT: &str = "apache-iggy==0.9.0";

/// A Python interpreter that has the client, installing it on first use.
fn python_with_the_client() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-apache-iggy-0.9.0");
    let python = venv.join("bin").join("python");
    let has_client = |python: &Path| {
        Command::new(python)
            .args(["-c", "import apache_iggy"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if has_client(&python) {
        return python;
    }
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 runs (the Python client test needs it)");
    assert!(created.success(), "python3 -m venv {}", venv.display());
    let installed = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", CLIENT])
        .status()
        .expect("pip runs");
    assert!(installed.success(), "pip install {CLIENT}");
    assert!(has_client(&python), "{CLIENT} imports after installing");
    python
}

#[test]
fn the_python_apache_iggy_0_9_client_sends_and_polls_through_the_gateway() {
    let python = python_with_the_client();
    let root = std::env::temp_dir().join(format!("galgo-python-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (bus, client, gateway) = (free_address(), free_address(), free_address());
    let log = std::fs::File::create(root.join("dev.log")).unwrap();
    let mut dev = dev_command(&root.join("data"), bus, client, gateway, "python-secret")
        .env("GALGO_ROOT_USERNAME", "iggy")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("galgo dev starts");
    let started = Instant::now();
    while std::net::TcpStream::connect(gateway).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "no gateway");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The root user is set just after start; the script's login may race it once.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/smoke.py");
    let mut outcome = None;
    for _ in 0..20 {
        let output = Command::new(&python)
            .arg(&script)
            .args([&gateway.to_string(), "iggy", "python-secret"])
            .output()
            .expect("the script runs");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        let credentials = stderr.contains("InvalidCredentials") || stderr.contains("credentials");
        outcome = Some(output);
        if !credentials {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = dev.kill();
    let _ = dev.wait();
    let output = outcome.expect("ran at least once");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the Python client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
}
