//! The chaos test's nemesis: faults on the containers of deploy/compose.yaml through the docker
//! CLI — SIGKILL and start, pause and unpause, a network partition (disconnect from the compose
//! network and connect again at the same address), and a graceful restart (SIGTERM, so a
//! primary hands over first) — one replica at a time, so a quorum always stays up. Each fault
//! is healed before the next, and the cluster must report healthy again within a bound.

use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Pause,
    Partition,
    Restart,
}

impl Fault {
    pub const ALL: [Fault; 4] = [Fault::Kill, Fault::Pause, Fault::Partition, Fault::Restart];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Restart => "restart",
        }
    }
}

/// The containers of deploy/compose.yaml: `{prefix}-replica{n}` on the network `{prefix}`.
pub struct Cluster {
    pub prefix: String,
    pub replicas: u8,
}

impl Cluster {
    pub fn container(&self, replica: u8) -> String {
        format!("{}-replica{replica}", self.prefix)
    }

    fn network(&self) -> String {
        self.prefix.clone()
    }

    /// The fixed address of replica `replica` on the compose network.
    fn address(&self, replica: u8) -> String {
        format!("172.28.0.{}", 11 + u32::from(replica))
    }

    /// Starts `fault` on `replica`.
    pub fn inject(&self, fault: Fault, replica: u8) -> Result<(), String> {
        let container = self.container(replica);
        match fault {
            Fault::Kill => docker(&["kill", "--signal", "KILL", &container]),
            Fault::Pause => docker(&["pause", &container]),
            Fault::Partition => docker(&["network", "disconnect", &self.network(), &container]),
            // Stopped with SIGTERM (graceful: leadership is handed over), then started.
            Fault::Restart => docker(&["restart", "--time", "10", &container]),
        }
    }

    /// Ends `fault` on `replica`.
    pub fn heal(&self, fault: Fault, replica: u8) -> Result<(), String> {
        let container = self.container(replica);
        match fault {
            Fault::Kill => docker(&["start", &container]),
            Fault::Pause => docker(&["unpause", &container]),
            Fault::Partition => docker(&[
                "network",
                "connect",
                "--ip",
                &self.address(replica),
                &self.network(),
                &container,
            ]),
            Fault::Restart => Ok(()),
        }
    }

    /// Undoes whatever may be left of any fault on every replica (errors ignored: most of
    /// these have nothing to undo).
    pub fn heal_all(&self) {
        for replica in 0..self.replicas {
            for fault in Fault::ALL {
                let _ = self.heal(fault, replica);
            }
        }
    }

    /// Waits until every replica's healthcheck reports healthy; how long it took.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let mut unhealthy = Vec::new();
            for replica in 0..self.replicas {
                let container = self.container(replica);
                let status = docker_output(&[
                    "inspect",
                    "--format",
                    "{{.State.Health.Status}}",
                    &container,
                ])
                .unwrap_or_else(|e| e);
                if status.trim() != "healthy" {
                    unhealthy.push(format!("{container}: {}", status.trim()));
                }
            }
            if unhealthy.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "not healthy after {timeout:?}: {}",
                    unhealthy.join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn docker(args: &[&str]) -> Result<(), String> {
    docker_output(args).map(|_| ())
}

fn docker_output(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
