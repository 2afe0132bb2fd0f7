//! Readiness probes behind `/readyz`: a gateway is ready when some node answers that its
//! metadata replica is the primary of a normal view (the gateway can reach a metadata
//! primary); a replica is ready when its own metadata replica is normal in a view (it has
//! joined the cluster and follows, or is, the primary). Each probe asks over the nodes'
//! client ports with a short per-node timeout, so a probe ends within about a second per node.

use std::net::SocketAddr;
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

/// Ready when node `own` says its metadata replica is normal.
pub fn replica_probe(cluster: u128, client: u128, own: u8, nodes: Vec<(u8, SocketAddr)>) -> Probe {
    let mut routing =
        RoutingClient::new(cluster, client, nodes).with_attempt_timeout(PROBE_ATTEMPT_TIMEOUT);
    Box::new(move || match routing.group_status(own, METADATA_GROUP) {
        Ok(Some(status)) if status.normal => Ok(()),
        Ok(Some(status)) => Err(format!(
            "the metadata replica is changing view (view {})",
            status.view
        )),
        Ok(None) => Err("the metadata replica is not running yet".to_string()),
        Err(error) => Err(format!("the node's client port does not answer: {error}")),
    })
}
