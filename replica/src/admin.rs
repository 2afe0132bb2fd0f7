//! Administrative steps over the routing client, for tools and tests: creating a stream and a
//! topic through the metadata group and waiting until a node can route to its partitions.

use std::time::{Duration, Instant};

use crate::client_protocol::PartitionRoute;
use crate::metadata::machine::MetadataReply;
use crate::metadata::{Ident, MetadataOp, TopicOptions};
use crate::routing::RoutingClient;

/// How long a new topic may take to become routable.
const ROUTES_DEADLINE: Duration = Duration::from_secs(10);

/// Creates stream `stream` and its topic `topic` (default options; replication 0 means the
/// cluster's default) and returns the topic's partition routes once a node knows them.
pub fn create_stream_and_topic(
    client: &mut RoutingClient,
    stream: &str,
    topic: &str,
    partitions: u32,
    replication_factor: u8,
) -> Result<Vec<PartitionRoute>, String> {
    let ops = [
        MetadataOp::CreateStream {
            name: stream.to_string(),
        },
        MetadataOp::CreateTopic {
            stream: Ident::Name(stream.to_string()),
            name: topic.to_string(),
            partitions,
            replication_factor,
            options: TopicOptions::default(),
        },
    ];
    for op in ops {
        let body = op.encode().map_err(|e| e.to_string())?;
        let reply = client.call_metadata(body).map_err(|e| e.to_string())?;
        match MetadataReply::decode(&reply.body) {
            Ok(MetadataReply::Applied(_)) => {}
            other => return Err(format!("{op:?}: {other:?}")),
        }
    }
    let started = Instant::now();
    while started.elapsed() < ROUTES_DEADLINE {
        if let Some(routes) = client
            .topic_routes(stream, topic)
            .map_err(|e| e.to_string())?
        {
            return Ok(routes);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "no node knows topic {stream}/{topic} after {ROUTES_DEADLINE:?}"
    ))
}
