//! Permissions in Iggy's shape: ten global flags, then per-stream flags with per-topic flags
//! under them, and the rule that decides whether a user may do an action. The gateway asks
//! `allows` before it forwards a request.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};

/// Streams (and topics per stream) a permission set may name: bounds decoding.
pub const PERMISSION_ENTRIES_MAX: u32 = 1000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalPermissions {
    pub manage_servers: bool,
    pub read_servers: bool,
    pub manage_users: bool,
    pub read_users: bool,
    pub manage_streams: bool,
    pub read_streams: bool,
    pub manage_topics: bool,
    pub read_topics: bool,
    pub poll_messages: bool,
    pub send_messages: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicPermissions {
    pub manage_topic: bool,
    pub read_topic: bool,
    pub poll_messages: bool,
    pub send_messages: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPermissions {
    pub manage_stream: bool,
    pub read_stream: bool,
    pub manage_topics: bool,
    pub read_topics: bool,
    pub poll_messages: bool,
    pub send_messages: bool,
    pub topics: BTreeMap<u32, TopicPermissions>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub global: GlobalPermissions,
    pub streams: BTreeMap<u32, StreamPermissions>,
}

impl GlobalPermissions {
    /// The flags in wire order (Iggy's and Galgo's codecs both use it).
    pub fn flags(&self) -> [bool; 10] {
        [
            self.manage_servers,
            self.read_servers,
            self.manage_users,
            self.read_users,
            self.manage_streams,
            self.read_streams,
            self.manage_topics,
            self.read_topics,
            self.poll_messages,
            self.send_messages,
        ]
    }

    pub fn from_flags(f: [bool; 10]) -> GlobalPermissions {
        GlobalPermissions {
            manage_servers: f[0],
            read_servers: f[1],
            manage_users: f[2],
            read_users: f[3],
            manage_streams: f[4],
            read_streams: f[5],
            manage_topics: f[6],
            read_topics: f[7],
            poll_messages: f[8],
            send_messages: f[9],
        }
    }
}

impl StreamPermissions {
    /// The stream-level flags in wire order (its topics apart).
    pub fn flags(&self) -> [bool; 6] {
        [
            self.manage_stream,
            self.read_stream,
            self.manage_topics,
            self.read_topics,
            self.poll_messages,
            self.send_messages,
        ]
    }

    pub fn from_flags(f: [bool; 6], topics: BTreeMap<u32, TopicPermissions>) -> StreamPermissions {
        StreamPermissions {
            manage_stream: f[0],
            read_stream: f[1],
            manage_topics: f[2],
            read_topics: f[3],
            poll_messages: f[4],
            send_messages: f[5],
            topics,
        }
    }
}

impl TopicPermissions {
    /// The flags in wire order.
    pub fn flags(&self) -> [bool; 4] {
        [
            self.manage_topic,
            self.read_topic,
            self.poll_messages,
            self.send_messages,
        ]
    }

    pub fn from_flags(f: [bool; 4]) -> TopicPermissions {
        TopicPermissions {
            manage_topic: f[0],
            read_topic: f[1],
            poll_messages: f[2],
            send_messages: f[3],
        }
    }
}

/// What a request does, for the permission check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    ReadServers,
    ManageServers,
    ReadUsers,
    ManageUsers,
    CreateStream,
    ReadStream { stream: u32 },
    ManageStream { stream: u32 },
    CreateTopic { stream: u32 },
    ReadTopic { stream: u32, topic: u32 },
    ManageTopic { stream: u32, topic: u32 },
    Poll { stream: u32, topic: u32 },
    Send { stream: u32, topic: u32 },
}

impl Permissions {
    /// Every flag set: the root user's permissions.
    pub fn all() -> Permissions {
        Permissions {
            global: GlobalPermissions {
                manage_servers: true,
                read_servers: true,
                manage_users: true,
                read_users: true,
                manage_streams: true,
                read_streams: true,
                manage_topics: true,
                read_topics: true,
                poll_messages: true,
                send_messages: true,
            },
            streams: BTreeMap::new(),
        }
    }

    /// Whether these permissions allow `action`. A right to manage implies the right to read
    /// at the same level; rights on a stream cover its topics.
    pub fn allows(&self, action: Action) -> bool {
        let g = &self.global;
        let stream = |id: u32| self.streams.get(&id);
        let topic = |s: u32, t: u32| stream(s).and_then(|sp| sp.topics.get(&t));
        match action {
            Action::ReadServers => g.manage_servers || g.read_servers,
            Action::ManageServers => g.manage_servers,
            Action::ReadUsers => g.manage_users || g.read_users,
            Action::ManageUsers => g.manage_users,
            Action::CreateStream => g.manage_streams,
            Action::ReadStream { stream: s } => {
                g.manage_streams
                    || g.read_streams
                    || stream(s).is_some_and(|p| p.manage_stream || p.read_stream)
            }
            Action::ManageStream { stream: s } => {
                g.manage_streams || stream(s).is_some_and(|p| p.manage_stream)
            }
            Action::CreateTopic { stream: s } => {
                g.manage_streams
                    || g.manage_topics
                    || stream(s).is_some_and(|p| p.manage_stream || p.manage_topics)
            }
            Action::ReadTopic {
                stream: s,
                topic: t,
            } => {
                g.manage_streams
                    || g.read_streams
                    || g.manage_topics
                    || g.read_topics
                    || stream(s).is_some_and(|p| {
                        p.manage_stream || p.read_stream || p.manage_topics || p.read_topics
                    })
                    || topic(s, t).is_some_and(|p| p.manage_topic || p.read_topic)
            }
            Action::ManageTopic {
                stream: s,
                topic: t,
            } => {
                g.manage_streams
                    || g.manage_topics
                    || stream(s).is_some_and(|p| p.manage_stream || p.manage_topics)
                    || topic(s, t).is_some_and(|p| p.manage_topic)
            }
            // As Iggy: reading or managing topics or streams, at any level above, may poll.
            Action::Poll {
                stream: s,
                topic: t,
            } => {
                g.poll_messages
                    || g.read_topics
                    || g.manage_topics
                    || g.read_streams
                    || g.manage_streams
                    || stream(s).is_some_and(|p| {
                        p.poll_messages
                            || p.read_topics
                            || p.manage_topics
                            || p.read_stream
                            || p.manage_stream
                    })
                    || topic(s, t)
                        .is_some_and(|p| p.poll_messages || p.read_topic || p.manage_topic)
            }
            // As Iggy: managing topics or streams, at any level above, may send.
            Action::Send {
                stream: s,
                topic: t,
            } => {
                g.send_messages
                    || g.manage_topics
                    || g.manage_streams
                    || stream(s)
                        .is_some_and(|p| p.send_messages || p.manage_topics || p.manage_stream)
                    || topic(s, t).is_some_and(|p| p.send_messages || p.manage_topic)
            }
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        for flag in self.global.flags() {
            w.bool(flag);
        }
        w.count(
            self.streams.len(),
            PERMISSION_ENTRIES_MAX,
            "streams with permissions",
        );
        for (id, s) in &self.streams {
            w.u32(*id);
            for flag in s.flags() {
                w.bool(flag);
            }
            w.count(
                s.topics.len(),
                PERMISSION_ENTRIES_MAX,
                "topics of a stream with permissions",
            );
            for (id, t) in &s.topics {
                w.u32(*id);
                for flag in t.flags() {
                    w.bool(flag);
                }
            }
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Permissions, DecodeError> {
        let mut f = [false; 10];
        for flag in &mut f {
            *flag = r.bool("global permission")?;
        }
        let global = GlobalPermissions::from_flags(f);
        let mut streams = BTreeMap::new();
        for _ in 0..r.count("stream permissions", PERMISSION_ENTRIES_MAX)? {
            let id = r.u32("stream id")?;
            let mut f = [false; 6];
            for flag in &mut f {
                *flag = r.bool("stream permission")?;
            }
            let mut topics = BTreeMap::new();
            for _ in 0..r.count("topic permissions", PERMISSION_ENTRIES_MAX)? {
                let topic_id = r.u32("topic id")?;
                let mut t = [false; 4];
                for flag in &mut t {
                    *flag = r.bool("topic permission")?;
                }
                topics.insert(topic_id, TopicPermissions::from_flags(t));
            }
            streams.insert(id, StreamPermissions::from_flags(f, topics));
        }
        Ok(Permissions { global, streams })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_cover_what_they_should_and_nothing_more() {
        let none = Permissions::default();
        assert!(!none.allows(Action::ReadServers));
        assert!(!none.allows(Action::Poll {
            stream: 1,
            topic: 1
        }));
        let root = Permissions::all();
        assert!(root.allows(Action::ManageUsers));
        assert!(root.allows(Action::Send {
            stream: 9,
            topic: 9
        }));

        let mut p = Permissions::default();
        p.streams.insert(
            1,
            StreamPermissions {
                read_stream: true,
                topics: BTreeMap::from([(
                    2,
                    TopicPermissions {
                        send_messages: true,
                        ..Default::default()
                    },
                )]),
                ..Default::default()
            },
        );
        assert!(p.allows(Action::ReadStream { stream: 1 }));
        assert!(p.allows(Action::ReadTopic {
            stream: 1,
            topic: 7
        }));
        assert!(!p.allows(Action::ManageStream { stream: 1 }));
        assert!(!p.allows(Action::ReadStream { stream: 2 }));
        assert!(p.allows(Action::Send {
            stream: 1,
            topic: 2
        }));
        assert!(!p.allows(Action::Send {
            stream: 1,
            topic: 3
        }));
        // Reading the stream allows polling its topics, not sending to them.
        let poll = |stream, topic| Action::Poll { stream, topic };
        let send = |stream, topic| Action::Send { stream, topic };
        assert!(p.allows(poll(1, 2)));
        assert!(!p.allows(poll(2, 2)));
        assert!(!p.allows(Action::CreateStream));
        let mut managers = Permissions::default();
        managers.global.manage_topics = true;
        assert!(managers.allows(send(4, 4)));
        assert!(managers.allows(poll(4, 4)));
        assert!(!managers.allows(Action::ManageStream { stream: 4 }));
        let mut topic_manager = Permissions::default();
        topic_manager.streams.insert(
            5,
            StreamPermissions {
                topics: BTreeMap::from([(
                    6,
                    TopicPermissions {
                        manage_topic: true,
                        ..Default::default()
                    },
                )]),
                ..Default::default()
            },
        );
        assert!(topic_manager.allows(send(5, 6)) && topic_manager.allows(poll(5, 6)));
        assert!(!topic_manager.allows(send(5, 7)));

        let mut w = Writer::default();
        p.encode(&mut w);
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(&bytes);
        assert_eq!(Permissions::decode(&mut r).unwrap(), p);
        r.finish().unwrap();
    }
}
