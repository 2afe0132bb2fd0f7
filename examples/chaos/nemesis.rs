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

    /// Waits until every replica answers ready (its `/readyz`, asked inside its container
    /// with `galgo health`, not Docker's debounced health status) twice in a row a second
    /// apart: a replica that comes back from a partition needs a moment to learn it is
    /// behind, and it is ready only once it caught up. How long it took.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let mut ready_once = false;
        loop {
            let mut unready = Vec::new();
            for replica in 0..self.replicas {
                let container = self.container(replica);
                if let Err(why) = docker(&["exec", &container, "/galgo", "health", REPLICA_HEALTH])
                {
                    unready.push(format!("{container}: {why}"));
                }
            }
            if unready.is_empty() && ready_once {
                return Ok(started.elapsed());
            }
            ready_once = unready.is_empty();
            if started.elapsed() > timeout {
                return Err(format!(
                    "not ready after {timeout:?}: {}",
                    unready.join(", ")
                ));
            }
            std::thread::sleep(if ready_once {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(250)
            });
        }
    }
}

/// A replica's HTTP endpoint inside its container (deploy/config/cluster.toml).
const REPLICA_HEALTH: &str = "127.0.0.1:3100";

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
