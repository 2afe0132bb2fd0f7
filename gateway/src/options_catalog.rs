//! The option catalog that DescribeOptions (code 13) serves: every key Galgo's CreateTopic
//! accepts, with its canonical kind, its default in that kind's encoding, and what it does.
//! Streams and users have no option keys, as in Iggy 0.11.0.

use galgo_replica::metadata::TopicOptions;

use crate::codes::ERROR_INVALID_FORMAT;
use crate::wire::{put_long_str, put_name, WireError};

/// The scopes of protocol 0.11.0's DescribeOptions request.
pub const SCOPE_TOPIC: u8 = 1;
pub const SCOPE_STREAM: u8 = 2;
pub const SCOPE_USER: u8 = 3;

/// Value kinds, as Iggy's header kinds number them.
const KIND_STRING: u8 = 2;
const KIND_BOOL: u8 = 3;
const KIND_UINT64: u8 = 12;

struct OptionSpec {
    key: &'static str,
    kind: u8,
    default_value: Vec<u8>,
    description: &'static str,
}

fn topic_options() -> Vec<OptionSpec> {
    let defaults = TopicOptions::default();
    vec![
        OptionSpec {
            key: "compression_algorithm",
            kind: KIND_STRING,
            default_value: b"none".to_vec(),
            description: "Only none: Galgo stores batches as the client sent them.",
        },
        OptionSpec {
            key: "message_expiry",
            kind: KIND_UINT64,
            default_value: 0u64.to_le_bytes().to_vec(),
            description: "Microseconds a message is kept; 0 or u64::MAX keeps it forever.",
        },
        OptionSpec {
            key: "max_topic_size",
            kind: KIND_UINT64,
            default_value: 0u64.to_le_bytes().to_vec(),
            description: "Bytes a topic may hold; 0 or u64::MAX means no limit.",
        },
        OptionSpec {
            key: "segment_size",
            kind: KIND_UINT64,
            default_value: defaults.segment_size.to_le_bytes().to_vec(),
            description: "Bytes a partition's segment holds before it seals.",
        },
        OptionSpec {
            key: "durability",
            kind: KIND_STRING,
            default_value: b"replicated".to_vec(),
            description: "replicated or persisted: acknowledged once on a quorum's disks. \
                          relaxed is recorded with the topic, but Galgo does not act on it yet: \
                          its writes are acknowledged on a quorum's disks too.",
        },
        OptionSpec {
            key: "consumer_offset_durability",
            kind: KIND_STRING,
            default_value: b"replicated".to_vec(),
            description: "The same choice for stored consumer offsets (relaxed is recorded, \
                          not acted on yet).",
        },
        OptionSpec {
            key: "messages_required_to_save",
            kind: KIND_UINT64,
            default_value: 0u64.to_le_bytes().to_vec(),
            description: "Accepted and ignored: Galgo writes every batch durably as it comes.",
        },
        OptionSpec {
            key: "size_of_messages_required_to_save",
            kind: KIND_UINT64,
            default_value: 0u64.to_le_bytes().to_vec(),
            description: "Accepted and ignored, like messages_required_to_save.",
        },
        OptionSpec {
            key: "preallocate_segments",
            kind: KIND_BOOL,
            default_value: vec![0],
            description: "Accepted and ignored: Galgo does not preallocate segments.",
        },
        OptionSpec {
            key: "enforce_fsync",
            kind: KIND_BOOL,
            default_value: vec![1],
            description: "Older servers' key; accepted and ignored, Galgo always syncs.",
        },
    ]
}

/// The reply body of DescribeOptions for the request body `body` (one scope byte):
/// `[count u32]` then per option `[key: len u8 + bytes][kind u8][default: len u32 + bytes]
/// [description: len u32 + utf8]`.
pub fn describe_options(body: &[u8]) -> Result<Vec<u8>, WireError> {
    let [scope] = body else {
        return Err(WireError::new(
            ERROR_INVALID_FORMAT,
            format!(
                "describe options: a one-byte scope, not {} bytes",
                body.len()
            ),
        ));
    };
    let options = match *scope {
        SCOPE_TOPIC => topic_options(),
        SCOPE_STREAM | SCOPE_USER => Vec::new(),
        other => {
            return Err(WireError::new(
                ERROR_INVALID_FORMAT,
                format!("describe options: unknown scope {other}"),
            ))
        }
    };
    let mut out = Vec::new();
    out.extend_from_slice(&(options.len() as u32).to_le_bytes());
    for option in &options {
        assert!(!option.key.is_empty() && option.key.len() <= 255);
        put_name(&mut out, option.key);
        out.push(option.kind);
        out.extend_from_slice(&(option.default_value.len() as u32).to_le_bytes());
        out.extend_from_slice(&option.default_value);
        put_long_str(&mut out, option.description);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::topic_options as parse_topic_options;

    #[test]
    fn every_topic_key_listed_is_accepted_with_its_default() {
        let body = describe_options(&[SCOPE_TOPIC]).unwrap();
        let count = u32::from_le_bytes(body[0..4].try_into().unwrap()) as usize;
        assert_eq!(count, topic_options().len());
        // Each listed key and default, sent back as an options block, is taken as is.
        for option in topic_options() {
            let mut block = vec![KIND_STRING];
            block.extend_from_slice(&(option.key.len() as u32).to_le_bytes());
            block.extend_from_slice(option.key.as_bytes());
            block.push(option.kind);
            block.extend_from_slice(&(option.default_value.len() as u32).to_le_bytes());
            block.extend_from_slice(&option.default_value);
            let parsed = parse_topic_options(&block);
            assert!(parsed.is_ok(), "{}: {parsed:?}", option.key);
            assert_eq!(parsed.unwrap(), TopicOptions::default(), "{}", option.key);
        }
    }

    #[test]
    fn streams_and_users_have_no_keys_and_bad_scopes_are_refused() {
        assert_eq!(describe_options(&[SCOPE_STREAM]).unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(describe_options(&[SCOPE_USER]).unwrap(), vec![0, 0, 0, 0]);
        for bad in [&[0u8][..], &[4], &[], &[1, 1]] {
            assert_eq!(
                describe_options(bad).unwrap_err().code,
                ERROR_INVALID_FORMAT
            );
        }
    }
}
