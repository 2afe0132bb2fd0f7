//! Keeps this gateway's consumer-group members alive in the metadata group, and expires the
//! members of gateways that died. Every sixth of the member timeout it touches the members
//! of its connections that are in a group (`TouchMembers`, at most `TOUCH_MEMBERS_MAX` per
//! op), then, if the metadata holds a member idle for longer than the timeout by this host's
//! clock, proposes `ExpireMembers` (the metadata group decides by the op's own timestamp, so
//! every replica drops the same members). A gateway that stops leaves its members to expire.

use std::sync::Arc;
use std::time::Duration;

use galgo_replica::metadata::ops::TOUCH_MEMBERS_MAX;
use galgo_replica::metadata::MetadataOp;
use galgo_replica::routing::RoutingClient;

use crate::credentials::now_us;
use crate::server::Shared;

/// Runs forever on its own thread (the gateway runs as long as its process).
pub fn run(shared: Arc<Shared>, mut routing: RoutingClient, timeout: Duration) {
    let interval = timeout / 6;
    assert!(interval > Duration::ZERO);
    let idle_us = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
    loop {
        std::thread::sleep(interval);
        let members: Vec<u128> = shared
            .clients
            .all()
            .into_iter()
            .filter(|(_, entry)| !entry.groups.is_empty())
            .map(|(_, entry)| entry.member)
            .collect();
        for chunk in members.chunks(TOUCH_MEMBERS_MAX as usize) {
            let op = MetadataOp::TouchMembers {
                members: chunk.to_vec(),
            };
            propose(&shared, &mut routing, &op);
        }
        // Only when some member looks idle: an idle cluster's metadata log does not grow.
        let Ok((_, metadata)) = routing.metadata(0, false) else {
            continue;
        };
        let now = now_us();
        if metadata
            .member_seen
            .values()
            .any(|seen| now.saturating_sub(*seen) > idle_us)
        {
            propose(
                &shared,
                &mut routing,
                &MetadataOp::ExpireMembers { idle_us },
            );
        }
    }
}

fn propose(shared: &Shared, routing: &mut RoutingClient, op: &MetadataOp) {
    let body = match op.encode() {
        Ok(body) => body,
        Err(error) => {
            shared.log(&format!(
                "member keeper: {op:?} does not encode: {}",
                error.0
            ));
            return;
        }
    };
    if let Err(error) = routing.call_metadata(body) {
        shared.log(&format!("member keeper: {error}"));
    }
}
