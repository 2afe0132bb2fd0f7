//! Readiness probes behind `/readyz`: a gateway is ready when some node answers that its
//! metadata replica is the primary of a normal view (the gateway can reach a metadata
//! primary); a replica is ready when its own metadata replica is normal in a view (it has
//! joined the cluster and follows, or is, the primary) and every partition group placed on
//! it is open, in a normal view and applied up to what it knows is committed (so a node that
//! restarted is not ready until it caught up). Network checks ask over the nodes' client
//! ports with a short per-node timeout, so a probe ends within about a second per node; the
//! partition groups' state comes from the node's own shards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use galgo_replica::node::METADATA_GROUP;
use galgo_replica::routing::RoutingClient;

use crate::http::Probe;

/// How long one node gets to answer a probe.
const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Ready when one of `nodes` says its metadata replica is the normal primary.
pub fn gateway_probe(cluster: u128, client: u128, nodes: Vec<(u8, SocketAddr)>) -> Probe {
    let ids: Vec<u8> = nodes.iter().map(|(id, _)| *id).collect();
    let mut routing =
        RoutingClient::new(cluster, client, nodes).with_attempt_timeout(PROBE_ATTEMPT_TIMEOUT);
    Box::new(move || {
        let mut answered = 0usize;
        for id in &ids {
            match routing.group_status(*id, METADATA_GROUP) {
                Ok(Some(status)) if status.normal && status.primary => return Ok(()),
                Ok(_) => answered += 1,
                Err(_) => {}
            }
        }
        Err(format!(
            "no metadata primary: {answered} of {} nodes answered, none leads",
            ids.len()
        ))
    })
}

/// What each shard of this process last reported: its partition groups not serving yet.
pub struct ShardsReadiness {
    not_ready: Vec<AtomicUsize>,
}

/// A shard that has not reported yet.
const UNREPORTED: usize = usize::MAX;

impl ShardsReadiness {
    pub fn new(shards: u16) -> ShardsReadiness {
        assert!(shards > 0);
        ShardsReadiness {
            not_ready: (0..shards).map(|_| AtomicUsize::new(UNREPORTED)).collect(),
        }
    }

    pub fn report(&self, shard: u16, not_ready: usize) {
        assert!(not_ready != UNREPORTED);
        self.not_ready[usize::from(shard)].store(not_ready, Ordering::Relaxed);
    }

    /// Partition groups not serving over all shards; an error while a shard never reported.
    pub fn partitions_not_ready(&self) -> Result<usize, String> {
        let mut total = 0usize;
        for (shard, count) in self.not_ready.iter().enumerate() {
            match count.load(Ordering::Relaxed) {
                UNREPORTED => return Err(format!("shard {shard} has not started")),
                count => total += count,
            }
        }
        Ok(total)
    }
}

/// Ready when node `own` says its metadata replica is normal and its shards serve every
/// partition group placed on it.
pub fn replica_probe(
    cluster: u128,
    client: u128,
    own: u8,
    nodes: Vec<(u8, SocketAddr)>,
    shards: Arc<ShardsReadiness>,
) -> Probe {
    let mut routing =
        RoutingClient::new(cluster, client, nodes).with_attempt_timeout(PROBE_ATTEMPT_TIMEOUT);
    Box::new(move || {
        match routing.group_status(own, METADATA_GROUP) {
            Ok(Some(status)) if status.normal => {}
            Ok(Some(status)) => {
                return Err(format!(
                    "the metadata replica is changing view (view {})",
                    status.view
                ))
            }
            Ok(None) => return Err("the metadata replica is not running yet".to_string()),
            Err(error) => return Err(format!("the node's client port does not answer: {error}")),
        }
        local_partitions_ready(&shards)
    })
}

/// Ready when every shard of this node reported each partition group placed on it serving
/// (and shard 0 its metadata applied and published).
pub fn local_partitions_ready(shards: &ShardsReadiness) -> Result<(), String> {
    match shards.partitions_not_ready()? {
        0 => Ok(()),
        count => Err(format!(
            "{count} partition groups are opening, changing view or catching up"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_ready_only_once_all_reported_nothing_pending() {
        let shards = ShardsReadiness::new(2);
        assert!(shards.partitions_not_ready().is_err());
        shards.report(0, 0);
        assert!(shards.partitions_not_ready().is_err(), "shard 1 is silent");
        shards.report(1, 3);
        assert_eq!(shards.partitions_not_ready(), Ok(3));
        shards.report(1, 0);
        assert_eq!(shards.partitions_not_ready(), Ok(0));
    }
}
