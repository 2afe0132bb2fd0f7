//! Iggy's own Rust client, crates.io `iggy` 0.11.0, against `galgo dev`: the gateway speaks
//! its binary protocol. Login (refused with bad credentials), ping, cluster metadata (a
//! one-node roster), streams and topics created, read, refused when the name is taken and
//! deleted; messages sent to chosen and balanced partitions and polled back with every
//! strategy, stored consumer offsets and auto-commit; a consumer group whose one member
//! reads every partition once with next and auto-commit; users with permissions enforced
//! and personal access tokens (login with a token, expiry); stats and the client's own info,
//! logout.

mod common;

use common::{dev_command, free_address};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use iggy::prelude::*;

const USERNAME: &str = "iggy";
const PASSWORD: &str = "compat-secret";

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `galgo dev` with its gateway on `gateway`, root USERNAME/PASSWORD, and `env` over that.
fn start_dev(data_dir: &Path, gateway: SocketAddr, log: &Path, env: &[(&str, &Path)]) -> Dev {
    let (bus, client) = (free_address(), free_address());
    let log = std::fs::File::create(log).unwrap();
    let mut command = dev_command(data_dir, bus, client, gateway, PASSWORD);
    command.env("GALGO_ROOT_USERNAME", USERNAME);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("galgo dev starts");
    Dev(child)
}

/// Waits (up to 30 s) until the gateway accepts connections: once the node is up.
async fn wait_listening(gateway: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(gateway).is_err() {
        assert!(Instant::now() < deadline, "the gateway never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(gateway: SocketAddr) -> IggyClient {
    let client = IggyClientBuilder::new()
        .with_tcp()
        .with_server_address(gateway.to_string())
        .build()
        .expect("a client builds");
    client.connect().await.expect("the client connects");
    client
}

async fn login_as(client: &IggyClient) -> IdentityInfo {
    client.login_user(USERNAME, PASSWORD).await.unwrap()
}

/// Logs in, retrying while the dev node sets its root user on first start.
async fn login(client: &IggyClient) -> IdentityInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.login_user(USERNAME, PASSWORD).await {
            Ok(identity) => return identity,
            Err(error) if Instant::now() < deadline => {
                eprintln!("login not yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("login failed: {error}"),
        }
    }
}

#[test]
fn the_iggy_0_11_client_manages_streams_and_topics_through_the_gateway() {
    let root = std::env::temp_dir().join(format!("galgo-iggy-compat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let gateway = free_address();
    let _dev = start_dev(&root.join("data"), gateway, &root.join("dev.log"), &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        wait_listening(gateway).await;
        let client = client(gateway).await;
        client
            .ping()
            .await
            .expect("a ping before login is answered");
        let identity = login(&client).await;
        assert_eq!(identity.user_id, 0, "the root user is user 0");
        client.ping().await.unwrap();

        // A wrong password on another connection: InvalidCredentials.
        let stranger = self::client(gateway).await;
        let refused = stranger.login_user(USERNAME, "wrong-password").await;
        assert!(
            matches!(refused, Err(IggyError::InvalidCredentials)),
            "{refused:?}"
        );
        // Before login nothing but ping is served.
        assert!(stranger.get_streams().await.is_err());

        let cluster = client.get_cluster_metadata().await.unwrap();
        assert_eq!(cluster.nodes.len(), 1, "a one-node roster: {cluster:?}");

        let stream = client.create_stream("orders").await.unwrap();
        assert_eq!(stream.name, "orders");
        let again = client.create_stream("orders").await;
        assert!(
            matches!(again, Err(IggyError::StreamNameAlreadyExists(_))),
            "{again:?}"
        );
        let streams = client.get_streams().await.unwrap();
        assert!(streams.iter().any(|s| s.name == "orders"));
        let stream_id = Identifier::named("orders").unwrap();

        let options = TopicCreateOptions {
            partitions_count: Some(3),
            ..TopicCreateOptions::default()
        };
        let topic = client
            .create_topic(&stream_id, "payments", &options)
            .await
            .unwrap();
        assert_eq!(topic.name, "payments");
        assert_eq!(topic.partitions_count, 3);
        let topic_id = Identifier::named("payments").unwrap();
        let read = client.get_topic(&stream_id, &topic_id).await.unwrap();
        let read = read.expect("the topic is found");
        assert_eq!(read.partitions.len(), 3);
        let topics = client.get_topics(&stream_id).await.unwrap();
        assert_eq!(topics.len(), 1);
        let details = client.get_stream(&stream_id).await.unwrap().unwrap();
        assert_eq!(details.topics_count, 1);
        let taken = client.create_topic(&stream_id, "payments", &options).await;
        assert!(
            matches!(taken, Err(IggyError::TopicNameAlreadyExists(_, _))),
            "{taken:?}"
        );

        send_and_poll(&client, &stream_id, &topic_id).await;
        consume_as_group(&client, &stream_id, &topic_id).await;
        more_partitions(&client, &stream_id, &topic_id).await;
        topic_made_elsewhere(&client, gateway, &stream_id).await;
        renames(&client).await;

        let stats = client.get_stats().await.unwrap();
        assert!(stats.streams_count >= 1);
        assert!(stats.partitions_count >= 3);
        // The option catalog: every topic key with its canonical kind; none for streams.
        let topic_keys = client.describe_options(OptionsScope::Topic).await.unwrap();
        let durability = topic_keys.iter().find(|o| o.key == "durability").unwrap();
        assert_eq!(durability.kind, HeaderKind::String);
        assert_eq!(durability.default_value, b"replicated".to_vec());
        assert!(topic_keys.iter().any(|o| o.key == "message_expiry"
            && o.kind == HeaderKind::Uint64
            && !o.description.is_empty()));
        assert!(client
            .describe_options(OptionsScope::Stream)
            .await
            .unwrap()
            .is_empty());
        // A snapshot file: a zip whose entries name what was asked for.
        let snapshot = client
            .snapshot(
                SnapshotCompression::Deflated,
                vec![SystemSnapshotType::Test, SystemSnapshotType::ServerConfig],
            )
            .await
            .unwrap();
        let zip = &snapshot.0;
        assert_eq!(&zip[0..4], b"PK\x03\x04");
        let contains = |needle: &[u8]| zip.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"test.txt") && contains(b"server_config.txt"));
        assert!(!contains(b"process_list.txt"));
        assert!(contains(format!("listen = {gateway}").as_bytes()));
        let me = client.get_me().await.unwrap();
        assert_eq!(me.user_id, Some(0));
        // Every open connection is a client: this one, and the stranger (not logged in).
        let clients = client.get_clients().await.unwrap();
        assert!(clients.len() >= 2, "{clients:?}");
        assert!(clients
            .iter()
            .any(|c| c.client_id == me.client_id && c.user_id == Some(0)));
        assert!(clients.iter().any(|c| c.user_id.is_none()));
        let found = client
            .get_client(me.client_id)
            .await
            .unwrap()
            .expect("itself");
        assert_eq!(found.address, me.address);
        assert!(client.get_client(u32::MAX - 1).await.unwrap().is_none());

        users_and_tokens(&client, gateway).await;

        client.delete_topic(&stream_id, &topic_id).await.unwrap();
        assert!(client
            .get_topic(&stream_id, &topic_id)
            .await
            .unwrap()
            .is_none());
        client.delete_stream(&stream_id).await.unwrap();
        assert!(client.get_stream(&stream_id).await.unwrap().is_none());
        let missing = client.delete_stream(&stream_id).await;
        assert!(missing.is_err());
        client.logout_user().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&root);
}

/// Two partitions added (they take messages at once) and then deleted again (the last
/// two: sends to them are refused).
async fn more_partitions(client: &IggyClient, stream: &Identifier, topic: &Identifier) {
    client.create_partitions(stream, topic, 2).await.unwrap();
    let topic_details = client.get_topic(stream, topic).await.unwrap().unwrap();
    assert_eq!(topic_details.partitions_count, 5);
    let mut messages = vec![IggyMessage::from_str("on partition 4").unwrap()];
    client
        .send_messages(stream, topic, &Partitioning::partition_id(4), &mut messages)
        .await
        .unwrap();
    let polled = poll_from_start(client, stream, topic, 4, 10).await;
    assert_eq!(payloads(&polled), ["on partition 4"]);
    assert!(client.create_partitions(stream, topic, 0).await.is_err());
    client.delete_partitions(stream, topic, 2).await.unwrap();
    let topic_details = client.get_topic(stream, topic).await.unwrap().unwrap();
    assert_eq!(topic_details.partitions_count, 3);
    let mut messages = vec![IggyMessage::from_str("too far").unwrap()];
    let refused = client
        .send_messages(stream, topic, &Partitioning::partition_id(4), &mut messages)
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

/// A topic created through another connection takes sends at once (the gateway's cached
/// metadata does not know it yet and asks the metadata primary), and one deleted there is
/// refused.
async fn topic_made_elsewhere(client: &IggyClient, gateway: SocketAddr, stream: &Identifier) {
    let other = self::client(gateway).await;
    login_as(&other).await;
    let options = TopicCreateOptions {
        partitions_count: Some(1),
        ..TopicCreateOptions::default()
    };
    other.create_topic(stream, "fresh", &options).await.unwrap();
    let fresh = Identifier::named("fresh").unwrap();
    let mut messages = vec![IggyMessage::from_str("at once").unwrap()];
    client
        .send_messages(
            stream,
            &fresh,
            &Partitioning::partition_id(0),
            &mut messages,
        )
        .await
        .unwrap();
    other.delete_topic(stream, &fresh).await.unwrap();
    let mut messages = vec![IggyMessage::from_str("too late").unwrap()];
    let refused = client
        .send_messages(
            stream,
            &fresh,
            &Partitioning::partition_id(0),
            &mut messages,
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

/// A stream and a topic renamed; the topic's expiry changed while its other options stay.
async fn renames(client: &IggyClient) {
    client.create_stream("renamable").await.unwrap();
    let before = Identifier::named("renamable").unwrap();
    client
        .update_stream(&before, "renamed", &StreamUpdateOptions::default())
        .await
        .unwrap();
    assert!(client.get_stream(&before).await.unwrap().is_none());
    let stream = Identifier::named("renamed").unwrap();
    assert!(client.get_stream(&stream).await.unwrap().is_some());
    let options = TopicCreateOptions {
        partitions_count: Some(1),
        ..TopicCreateOptions::default()
    };
    let created = client.create_topic(&stream, "t1", &options).await.unwrap();
    let ten_seconds = IggyExpiry::ExpireDuration(IggyDuration::new(Duration::from_secs(10)));
    let update = TopicUpdateOptions {
        message_expiry: Some(ten_seconds),
        ..TopicUpdateOptions::default()
    };
    client
        .update_topic(&stream, &Identifier::named("t1").unwrap(), "t2", &update)
        .await
        .unwrap();
    let topic = client
        .get_topic(&stream, &Identifier::named("t2").unwrap())
        .await
        .unwrap()
        .expect("renamed");
    assert_eq!(topic.id, created.id);
    assert_eq!(topic.message_expiry, ten_seconds);
    assert_eq!(topic.max_topic_size, created.max_topic_size);
    client.create_stream("taken").await.unwrap();
    let taken = client
        .update_stream(&stream, "taken", &StreamUpdateOptions::default())
        .await;
    assert!(
        matches!(taken, Err(IggyError::StreamNameAlreadyExists(_))),
        "{taken:?}"
    );
    client.delete_stream(&stream).await.unwrap();
    client
        .delete_stream(&Identifier::named("taken").unwrap())
        .await
        .unwrap();
}

fn code<T: std::fmt::Debug>(result: Result<T, IggyError>) -> u32 {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(error) => error.as_code(),
    }
}

/// Users (create, read, permissions enforced, password change, rename and deactivate,
/// delete; root protected) and personal access tokens (create, list, log in with, expire,
/// delete), each through the client's own calls.
async fn users_and_tokens(root: &IggyClient, gateway: SocketAddr) {
    let unauthorized = IggyError::Unauthorized.as_code();
    let readers = Permissions {
        global: GlobalPermissions {
            read_streams: true,
            poll_messages: true,
            ..GlobalPermissions::default()
        },
        streams: None,
    };
    let alice = root
        .create_user(
            "alice",
            "alice-pass",
            UserStatus::Active,
            Some(readers.clone()),
        )
        .await
        .unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.status, UserStatus::Active);
    assert_eq!(alice.permissions, Some(readers.clone()));
    let taken = root
        .create_user("alice", "other-pass", UserStatus::Active, None)
        .await;
    assert_eq!(code(taken), IggyError::UserAlreadyExists.as_code());
    let users = root.get_users().await.unwrap();
    assert!(users.iter().any(|u| u.username == "alice"));
    assert!(users.iter().any(|u| u.id == 0));
    let alice_id = Identifier::named("alice").unwrap();
    let read = root
        .get_user(&alice_id)
        .await
        .unwrap()
        .expect("alice is found");
    assert_eq!(read.id, alice.id);
    assert_eq!(read.permissions, Some(readers));
    assert!(root
        .get_user(&Identifier::named("nobody").unwrap())
        .await
        .unwrap()
        .is_none());

    // Alice may read streams but not create them, nor manage users.
    let as_alice = client(gateway).await;
    let identity = as_alice.login_user("alice", "alice-pass").await.unwrap();
    assert_eq!(identity.user_id, alice.id);
    as_alice.get_streams().await.unwrap();
    assert_eq!(code(as_alice.create_stream("alices").await), unauthorized);
    assert_eq!(code(as_alice.get_users().await), unauthorized);
    assert_eq!(
        code(
            as_alice
                .create_user("mallory", "mallory-pass", UserStatus::Active, None)
                .await
        ),
        unauthorized
    );
    // She reads herself, and changes her own password (the current one is checked).
    assert_eq!(
        as_alice
            .get_user(&alice_id)
            .await
            .unwrap()
            .unwrap()
            .username,
        "alice"
    );
    let wrong = as_alice
        .change_password(&alice_id, "not-hers", "alice-new")
        .await;
    assert_eq!(code(wrong), IggyError::InvalidCredentials.as_code());
    as_alice
        .change_password(&alice_id, "alice-pass", "alice-new")
        .await
        .unwrap();
    let old = client(gateway).await;
    assert!(old.login_user("alice", "alice-pass").await.is_err());
    let new = client(gateway).await;
    new.login_user("alice", "alice-new").await.unwrap();

    // Root grants stream management: now she creates (and deletes) a stream.
    let managers = Permissions {
        global: GlobalPermissions {
            manage_streams: true,
            ..GlobalPermissions::default()
        },
        streams: None,
    };
    root.update_permissions(&alice_id, Some(managers))
        .await
        .unwrap();
    as_alice.create_stream("alices").await.unwrap();
    as_alice
        .delete_stream(&Identifier::named("alices").unwrap())
        .await
        .unwrap();

    // Renamed and deactivated: her logins stop.
    root.update_user(
        &alice_id,
        Some("alice2"),
        Some(UserStatus::Inactive),
        &UserUpdateOptions::default(),
    )
    .await
    .unwrap();
    let renamed = root
        .get_user(&Identifier::named("alice2").unwrap())
        .await
        .unwrap()
        .expect("renamed");
    assert_eq!(renamed.status, UserStatus::Inactive);
    let inactive = client(gateway).await;
    assert!(inactive.login_user("alice2", "alice-new").await.is_err());

    // Personal access tokens: created, listed, logged in with, expired, deleted.
    let token = root
        .create_personal_access_token("ci", IggyExpiry::NeverExpire)
        .await
        .unwrap();
    assert!(!token.token.is_empty());
    let again = root
        .create_personal_access_token("ci", IggyExpiry::NeverExpire)
        .await;
    assert_eq!(
        code(again),
        IggyError::PersonalAccessTokenAlreadyExists(String::new(), 0).as_code()
    );
    let short = root
        .create_personal_access_token(
            "short",
            IggyExpiry::ExpireDuration(IggyDuration::new(Duration::from_millis(1500))),
        )
        .await
        .unwrap();
    let listed = root.get_personal_access_tokens().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["ci", "short"]);
    assert!(listed[0].expiry_at.is_none());
    assert!(listed[1].expiry_at.is_some());
    let with_token = client(gateway).await;
    let identity = with_token
        .login_with_personal_access_token(&token.token)
        .await
        .unwrap();
    assert_eq!(identity.user_id, 0);
    with_token.get_streams().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let expired = client(gateway).await;
    let refused = expired.login_with_personal_access_token(&short.token).await;
    assert_eq!(
        code(refused),
        IggyError::InvalidPersonalAccessToken.as_code()
    );
    root.delete_personal_access_token("ci").await.unwrap();
    let deleted = client(gateway).await;
    assert!(deleted
        .login_with_personal_access_token(&token.token)
        .await
        .is_err());
    assert!(code(root.delete_personal_access_token("ci").await) != 0);

    // Deleting: alice2 goes; root cannot.
    root.delete_user(&Identifier::named("alice2").unwrap())
        .await
        .unwrap();
    assert!(root
        .get_user(&Identifier::named("alice2").unwrap())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        code(root.delete_user(&Identifier::numeric(0).unwrap()).await),
        IggyError::CannotDeleteUser(0).as_code()
    );
}

#[test]
fn the_iggy_client_speaks_tls_to_a_gateway_with_a_certificate() {
    let root = std::env::temp_dir().join(format!("galgo-iggy-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (certificate, key) = (root.join("cert.pem"), root.join("key.pem"));
    std::fs::write(&certificate, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let gateway = free_address();
    let _dev = start_dev(
        &root.join("data"),
        gateway,
        &root.join("dev.log"),
        &[
            ("GALGO_GATEWAY_TLS_CERTIFICATE", &certificate),
            ("GALGO_GATEWAY_TLS_KEY", &key),
        ],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        wait_listening(gateway).await;
        let tls_client = IggyClientBuilder::new()
            .with_tcp()
            .with_server_address(gateway.to_string())
            .with_tls_enabled(true)
            .with_tls_domain("localhost".to_string())
            .with_tls_ca_file(certificate.display().to_string())
            .with_tls_validate_certificate(true)
            .build()
            .unwrap();
        tls_client.connect().await.expect("a TLS connection");
        login(&tls_client).await;
        tls_client.create_stream("secure").await.unwrap();
        let stream = Identifier::named("secure").unwrap();
        let options = TopicCreateOptions {
            partitions_count: Some(1),
            ..TopicCreateOptions::default()
        };
        tls_client
            .create_topic(&stream, "t", &options)
            .await
            .unwrap();
        let topic = Identifier::named("t").unwrap();
        let mut messages = vec![IggyMessage::from_str("over TLS").unwrap()];
        tls_client
            .send_messages(
                &stream,
                &topic,
                &Partitioning::partition_id(0),
                &mut messages,
            )
            .await
            .unwrap();
        let polled = poll_from_start(&tls_client, &stream, &topic, 0, 10).await;
        assert_eq!(payloads(&polled), ["over TLS"]);
        // A plain-TCP client gets no answer it can use.
        let plain = IggyClientBuilder::new()
            .with_tcp()
            .with_server_address(gateway.to_string())
            .with_reconnection_max_retries(Some(0))
            .build()
            .unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            plain.connect().await?;
            plain.login_user(USERNAME, PASSWORD).await
        })
        .await;
        assert!(
            !matches!(refused, Ok(Ok(_))),
            "a plain login must not succeed: {refused:?}"
        );
    });
    let _ = std::fs::remove_dir_all(&root);
}

fn payloads(polled: &PolledMessages) -> Vec<String> {
    polled
        .messages
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect()
}

async fn send_and_poll(client: &IggyClient, stream: &Identifier, topic: &Identifier) {
    // Three batches to partition 0: m0..m9, then m10..m14, then m15..m19.
    let mut sent = Vec::new();
    for range in [0..10, 10..15, 15..20] {
        let mut messages: Vec<IggyMessage> = range
            .clone()
            .map(|i| {
                sent.push(format!("m{i}"));
                IggyMessage::from_str(&format!("m{i}")).unwrap()
            })
            .collect();
        client
            .send_messages(stream, topic, &Partitioning::partition_id(0), &mut messages)
            .await
            .expect("a batch is appended");
    }
    // Balanced sends spread over the three partitions (the client picks, from GetTopic).
    for i in 0..3 {
        let mut messages = vec![IggyMessage::from_str(&format!("b{i}")).unwrap()];
        client
            .send_messages(stream, topic, &Partitioning::balanced(), &mut messages)
            .await
            .unwrap();
    }
    let consumer = Consumer::new(Identifier::numeric(7).unwrap());
    let poll = |strategy: PollingStrategy, count: u32, auto_commit: bool| {
        let consumer = consumer.clone();
        async move {
            client
                .poll_messages(
                    stream,
                    topic,
                    Some(0),
                    &consumer,
                    &strategy,
                    count,
                    auto_commit,
                )
                .await
                .expect("a poll answer")
        }
    };
    let all = poll(PollingStrategy::offset(0), 100, false).await;
    let partition_zero: Vec<String> = payloads(&all);
    assert_eq!(&partition_zero[..20], &sent[..], "every message, in order");
    assert_eq!(all.partition_id, 0);
    for (index, message) in all.messages.iter().enumerate() {
        assert_eq!(message.header.offset, index as u64, "offsets are dense");
        assert!(message.header.timestamp > 0, "stamped by the server");
    }
    let end = all.messages.len() as u64;
    assert_eq!(all.current_offset, end - 1);
    // From inside a batch, across batches, a count that ends inside one.
    let middle = poll(PollingStrategy::offset(12), 5, false).await;
    assert_eq!(payloads(&middle), sent[12..17].to_vec());
    assert_eq!(middle.messages[0].header.offset, 12);
    let first = poll(PollingStrategy::first(), 3, false).await;
    assert_eq!(payloads(&first), sent[..3].to_vec());
    let last = poll(PollingStrategy::last(), 2, false).await;
    assert_eq!(
        last.messages.last().unwrap().header.offset,
        end - 1,
        "last ends at the newest message"
    );
    assert_eq!(last.messages.len(), 2);
    let since = all.messages[15].header.timestamp;
    let by_time = poll(PollingStrategy::timestamp(since.into()), 100, false).await;
    assert!(
        by_time.messages.first().unwrap().header.offset <= 15
            && by_time.messages.last().unwrap().header.offset == end - 1,
        "from the batch stamped at or after the time"
    );
    let past_end = poll(PollingStrategy::offset(end + 5), 10, false).await;
    assert!(past_end.messages.is_empty());

    // Next with auto-commit walks the partition once; the stored offset follows.
    assert!(client
        .get_consumer_offset(&consumer, stream, topic, Some(0))
        .await
        .unwrap()
        .is_none());
    let mut walked = Vec::new();
    for _ in 0..20 {
        let page = poll(PollingStrategy::next(), 4, true).await;
        if page.messages.is_empty() {
            break;
        }
        walked.extend(payloads(&page));
    }
    assert_eq!(
        walked, partition_zero,
        "next with auto-commit reads each message once"
    );
    let stored = client
        .get_consumer_offset(&consumer, stream, topic, Some(0))
        .await
        .unwrap()
        .expect("auto-commit stored the offset");
    assert_eq!(stored.stored_offset, end - 1);
    // An explicit store moves it back; next resumes after it.
    client
        .store_consumer_offset(&consumer, stream, topic, Some(0), 9)
        .await
        .unwrap();
    let resumed = poll(PollingStrategy::next(), 2, false).await;
    assert_eq!(payloads(&resumed), sent[10..12].to_vec());
    // Deleted: next starts over; a second delete finds nothing.
    client
        .delete_consumer_offset(&consumer, stream, topic, Some(0))
        .await
        .unwrap();
    assert!(client
        .get_consumer_offset(&consumer, stream, topic, Some(0))
        .await
        .unwrap()
        .is_none());
    let again = poll(PollingStrategy::next(), 2, false).await;
    assert_eq!(payloads(&again), sent[0..2].to_vec());
    assert!(client
        .delete_consumer_offset(&consumer, stream, topic, Some(0))
        .await
        .is_err());
    let beyond = client
        .store_consumer_offset(&consumer, stream, topic, Some(0), end + 100)
        .await;
    assert!(beyond.is_err(), "an offset past the end is refused");
}

/// Messages in each of the topic's three partitions, read by offset.
async fn partition_counts(
    client: &IggyClient,
    stream: &Identifier,
    topic: &Identifier,
) -> Vec<usize> {
    let mut counts = Vec::new();
    for partition in 0..3 {
        let polled = poll_from_start(client, stream, topic, partition, 1000).await;
        counts.push(polled.messages.len());
    }
    counts
}

/// Up to `count` messages of `partition` from offset 0, for a reader that commits nothing.
async fn poll_from_start(
    client: &IggyClient,
    stream: &Identifier,
    topic: &Identifier,
    partition: u32,
    count: u32,
) -> PolledMessages {
    client
        .poll_messages(
            stream,
            topic,
            Some(partition),
            &Consumer::new(Identifier::numeric(99).unwrap()),
            &PollingStrategy::offset(0),
            count,
            false,
        )
        .await
        .unwrap()
}

/// Five messages of `partition` for `group`, next with auto-commit.
async fn group_poll(
    client: &IggyClient,
    stream: &Identifier,
    topic: &Identifier,
    group: &Consumer,
    partition: u32,
) -> Result<PolledMessages, IggyError> {
    client
        .poll_messages(
            stream,
            topic,
            Some(partition),
            group,
            &PollingStrategy::next(),
            5,
            true,
        )
        .await
}

async fn consume_as_group(client: &IggyClient, stream: &Identifier, topic: &Identifier) {
    let created = client
        .create_consumer_group(stream, topic, "readers")
        .await
        .unwrap();
    assert_eq!(
        (created.name.as_str(), created.members_count),
        ("readers", 0)
    );
    let taken = client.create_consumer_group(stream, topic, "readers").await;
    assert!(
        matches!(taken, Err(IggyError::ConsumerGroupNameAlreadyExists(..))),
        "a group name is taken once: {taken:?}"
    );
    // A numeric-looking name: the client names it by that number afterwards.
    client
        .create_consumer_group(stream, topic, "7")
        .await
        .unwrap();
    let seven = Identifier::named("7").unwrap();
    client
        .join_consumer_group(stream, topic, &seven)
        .await
        .unwrap();
    let details = client
        .get_consumer_group(stream, topic, &seven)
        .await
        .unwrap()
        .expect("found by its numeric-looking name");
    assert_eq!((details.name.as_str(), details.members_count), ("7", 1));
    // GetMe lists the groups this connection is in.
    let me = client.get_me().await.unwrap();
    assert!(
        me.consumer_groups.iter().any(|g| g.group_id == details.id),
        "{me:?}"
    );
    client
        .leave_consumer_group(stream, topic, &seven)
        .await
        .unwrap();
    let me = client.get_me().await.unwrap();
    assert!(
        !me.consumer_groups.iter().any(|g| g.group_id == details.id),
        "{me:?}"
    );
    let again = client.leave_consumer_group(stream, topic, &seven).await;
    assert!(
        matches!(again, Err(IggyError::ConsumerGroupMemberNotFound(..))),
        "{again:?}"
    );
    client
        .delete_consumer_group(stream, topic, &seven)
        .await
        .unwrap();
    let group_id = Identifier::named("readers").unwrap();
    let group = Consumer::group(group_id.clone());
    // Not a member yet: refused.
    assert!(group_poll(client, stream, topic, &group, 0).await.is_err());
    client
        .join_consumer_group(stream, topic, &group_id)
        .await
        .unwrap();
    let details = client
        .get_consumer_group(stream, topic, &group_id)
        .await
        .unwrap()
        .expect("the group exists");
    assert_eq!(details.members_count, 1);
    assert_eq!(
        details.members[0].partitions,
        vec![0, 1, 2],
        "one member owns all"
    );
    let groups = client.get_consumer_groups(stream, topic).await.unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");

    let expected = partition_counts(client, stream, topic).await;
    for (partition, expected) in expected.iter().enumerate() {
        let mut read = Vec::new();
        for _ in 0..100 {
            let page = group_poll(client, stream, topic, &group, partition as u32)
                .await
                .unwrap();
            assert_eq!(page.partition_id, partition as u32);
            if page.messages.is_empty() {
                break;
            }
            read.extend(page.messages.iter().map(|m| m.header.offset));
        }
        let dense: Vec<u64> = (0..*expected as u64).collect();
        assert_eq!(
            read, dense,
            "partition {partition}: every offset once, in order"
        );
        let stored = client
            .get_consumer_offset(&group, stream, topic, Some(partition as u32))
            .await
            .unwrap();
        if *expected > 0 {
            assert_eq!(stored.unwrap().stored_offset, *expected as u64 - 1);
        }
    }
    client
        .leave_consumer_group(stream, topic, &group_id)
        .await
        .unwrap();
    assert!(
        group_poll(client, stream, topic, &group, 0).await.is_err(),
        "a member that left polls no more"
    );
    client
        .delete_consumer_group(stream, topic, &group_id)
        .await
        .unwrap();
    assert!(client
        .get_consumer_group(stream, topic, &group_id)
        .await
        .unwrap()
        .is_none());
}

/// The `.log` files of the partition log with the most segments under `data_dir` (the one
/// partition this test writes to).
fn partition_segment_files(data_dir: &Path) -> usize {
    let mut most = 0;
    for entry in std::fs::read_dir(data_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("group-") {
            continue;
        }
        let logs = std::fs::read_dir(entry.path())
            .unwrap()
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
            .count();
        most = most.max(logs);
    }
    most
}

#[test]
fn delete_segments_drops_the_oldest_segments_and_purge_every_message() {
    let root = std::env::temp_dir().join(format!("galgo-iggy-segments-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let gateway = free_address();
    let data = root.join("data");
    let segment_size = Path::new("1048576");
    let _dev = start_dev(
        &data,
        gateway,
        &root.join("dev.log"),
        &[("GALGO_STORAGE_SEGMENT_SIZE", segment_size)],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        wait_listening(gateway).await;
        let client = client(gateway).await;
        login(&client).await;
        client.create_stream("retained").await.unwrap();
        let stream = Identifier::named("retained").unwrap();
        let options = TopicCreateOptions {
            partitions_count: Some(1),
            ..TopicCreateOptions::default()
        };
        client.create_topic(&stream, "t", &options).await.unwrap();
        let topic = Identifier::named("t").unwrap();
        // 600 batches of 16 messages of 1000 bytes: about nine 1 MiB segments, and enough
        // ops for a checkpoint and a compacted journal (segments go only below both).
        const BATCHES: u64 = 600;
        const PER_BATCH: u64 = 16;
        for batch in 0..BATCHES {
            let mut messages: Vec<IggyMessage> = (0..PER_BATCH)
                .map(|i| {
                    let mut payload = format!("{} ", batch * PER_BATCH + i).into_bytes();
                    payload.resize(1000, b'x');
                    IggyMessage::builder()
                        .payload(payload.into())
                        .build()
                        .unwrap()
                })
                .collect();
            client
                .send_messages(
                    &stream,
                    &topic,
                    &Partitioning::partition_id(0),
                    &mut messages,
                )
                .await
                .unwrap();
        }
        let total = BATCHES * PER_BATCH;
        let before = partition_segment_files(&data);
        assert!(before >= 8, "{before} segments");
        let consumer = Consumer::new(Identifier::numeric(1).unwrap());
        let behind = Consumer::new(Identifier::numeric(2).unwrap());
        // Partition 0 polled by `consumer` with `strategy`, `count` messages at most.
        let poll = |consumer: &Consumer, strategy: PollingStrategy, count: u32| {
            let (client, stream, topic, consumer) = (&client, &stream, &topic, consumer.clone());
            async move {
                client
                    .poll_messages(stream, topic, Some(0), &consumer, &strategy, count, false)
                    .await
                    .unwrap()
            }
        };
        let first_offset = || async {
            poll(&consumer, PollingStrategy::offset(0), 1)
                .await
                .messages[0]
                .header
                .offset
        };
        assert_eq!(first_offset().await, 0);
        // A consumer whose stored offset the cut passes.
        client
            .store_consumer_offset(&behind, &stream, &topic, Some(0), 5)
            .await
            .unwrap();

        client.delete_segments(&stream, &topic, 0, 3).await.unwrap();
        let cut = first_offset().await;
        assert!(cut > 0 && cut % PER_BATCH == 0, "polls start at {cut}");
        let next = poll(&behind, PollingStrategy::next(), 1).await;
        assert_eq!(
            next.messages[0].header.offset, cut,
            "next goes on from the cut"
        );
        // The files go once the checkpoint and the journal allow (a tick or two here).
        let deadline = Instant::now() + Duration::from_secs(20);
        while partition_segment_files(&data) != before - 3 {
            assert!(
                Instant::now() < deadline,
                "{} segment files, not {}",
                partition_segment_files(&data),
                before - 3
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Every message from the cut on is still there, in order; by timestamp too.
        let mut offset = cut;
        while offset < total {
            let polled = poll(&consumer, PollingStrategy::offset(offset), 1000).await;
            for message in &polled.messages {
                assert_eq!(message.header.offset, offset);
                let text = String::from_utf8_lossy(&message.payload);
                assert!(text.starts_with(&format!("{offset} ")), "{offset}");
                offset += 1;
            }
        }
        let by_time = poll(&consumer, PollingStrategy::timestamp(0.into()), 1).await;
        assert_eq!(by_time.messages[0].header.offset, cut);
        // Asking for more than there are: every sealed segment the replicas applied goes,
        // never the active one.
        client
            .delete_segments(&stream, &topic, 0, 1000)
            .await
            .unwrap();
        let later = first_offset().await;
        assert!(later > cut && later < total, "polls start at {later}");
        let last = poll(&consumer, PollingStrategy::last(), 1).await;
        assert_eq!(last.messages[0].header.offset, total - 1);
        // A partition that does not exist.
        assert!(client.delete_segments(&stream, &topic, 5, 1).await.is_err());

        // PurgeTopic: no message is kept; offsets go on after the last one.
        client.purge_topic(&stream, &topic).await.unwrap();
        for strategy in [PollingStrategy::offset(0), PollingStrategy::first()] {
            assert!(poll(&consumer, strategy, 10).await.messages.is_empty());
        }
        let mut after = vec![IggyMessage::from_str("after the purge").unwrap()];
        client
            .send_messages(&stream, &topic, &Partitioning::partition_id(0), &mut after)
            .await
            .unwrap();
        let polled = poll(&consumer, PollingStrategy::offset(0), 10).await;
        assert_eq!(polled.messages.len(), 1);
        assert_eq!(polled.messages[0].header.offset, total);
        // PurgeStream: every topic of the stream.
        client.purge_stream(&stream).await.unwrap();
        let polled = poll(&consumer, PollingStrategy::first(), 10).await;
        assert!(polled.messages.is_empty());
        assert!(client
            .purge_topic(&stream, &Identifier::named("none").unwrap())
            .await
            .is_err());
    });
}
