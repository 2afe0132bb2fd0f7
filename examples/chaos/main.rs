//! A black-box fault test of the three-node cluster of deploy/compose.yaml: Iggy's own client
//! (crates.io `iggy` 0.11.0) produces numbered messages to every partition of a fresh topic
//! through the gateway and a second client reads them back while faults run — SIGKILL, pause,
//! network partition and graceful restart of one replica at a time (each replica leads some
//! partitions and follows in others, so every fault hits a primary and a backup). Afterwards
//! every partition is read from offset 0 and checked: lost, duplicated, reordered and
//! unexpected messages, inconsistent offsets, and the longest time without an acknowledgement
//! around each fault. Exit 0 only with no anomaly.
//!
//! ```text
//! deploy/chaos --seconds 300        # builds the image, starts the cluster, runs this
//! cargo run --release --example chaos -- --seconds 300   # against a running cluster
//! ```

mod checker;
mod nemesis;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iggy::prelude::*;

use checker::{Anomalies, Read, Sent};
use nemesis::{Cluster, Fault};

/// The chaos test's options (`--help` lists them).
#[derive(clap::Parser)]
#[command(
    about = "Black-box fault test of the deploy/compose.yaml cluster through the iggy client"
)]
struct Options {
    /// The gateway's Iggy binary-protocol address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    address: String,
    #[arg(long, default_value = "iggy")]
    username: String,
    #[arg(long, default_value = "iggy")]
    password: String,
    /// How long faults run.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Partitions of the test topic.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    partitions: u32,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    messages_per_batch: u32,
    /// Bytes per message.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(32..=100_000))]
    message_size: u32,
    /// How long each fault lasts.
    #[arg(long, default_value_t = 5)]
    fault_seconds: u64,
    /// Containers are PREFIX-replicaN on the network PREFIX.
    #[arg(long, default_value = "galgo")]
    prefix: String,
}

/// Per partition: what each offset held when the live reader polled it.
type LiveReads = Vec<BTreeMap<u64, Vec<u8>>>;

/// A fault as it ran.
struct FaultRecord {
    fault: Fault,
    replica: u8,
    started: Instant,
    healed: Instant,
    /// Until every replica reported healthy again (or why it did not).
    healthy: Result<Duration, String>,
}

async fn connect(options: &Options) -> Result<IggyClient, String> {
    let started = Instant::now();
    loop {
        let attempt = async {
            let client = IggyClientBuilder::new()
                .with_tcp()
                .with_server_address(options.address.clone())
                .build()
                .map_err(|e| e.to_string())?;
            client.connect().await.map_err(|e| e.to_string())?;
            client
                .login_user(&options.username, &options.password)
                .await
                .map_err(|e| format!("login: {e}"))?;
            Ok::<_, String>(client)
        };
        match attempt.await {
            Ok(client) => return Ok(client),
            Err(error) if started.elapsed() > Duration::from_secs(60) => {
                return Err(format!(
                    "cannot reach the gateway at {}: {error}",
                    options.address
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The number of anomalies (and nemesis failures) found.
async fn run() -> Result<u64, String> {
    let options = Arc::new(<Options as clap::Parser>::parse());
    let cluster = Arc::new(Cluster {
        prefix: options.prefix.clone(),
        replicas: 3,
    });
    cluster.wait_healthy(Duration::from_secs(120))?;
    let client = connect(&options).await?;
    let stream_name = format!("chaos-{}", std::process::id());
    client
        .create_stream(&stream_name)
        .await
        .map_err(|e| format!("create stream: {e}"))?;
    let stream = Identifier::named(&stream_name).map_err(|e| e.to_string())?;
    let topic_options = TopicCreateOptions {
        partitions_count: Some(options.partitions),
        ..TopicCreateOptions::default()
    };
    client
        .create_topic(&stream, "events", &topic_options)
        .await
        .map_err(|e| format!("create topic: {e}"))?;
    let topic = Identifier::named("events").map_err(|e| e.to_string())?;
    println!(
        "chaos: {} s of faults on {}, {} partitions, batches of {} x {} bytes, through {}",
        options.seconds,
        options.prefix,
        options.partitions,
        options.messages_per_batch,
        options.message_size,
        options.address
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(
        (0..options.partitions).map(|_| Sent::default()).collect(),
    ));
    let acks: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();

    let producer = {
        let (stop, sent, acks, errors) = (stop.clone(), sent.clone(), acks.clone(), errors.clone());
        let (options, stream, topic) = (options.clone(), stream.clone(), topic.clone());
        tokio::spawn(async move {
            produce(
                &client, &options, &stream, &topic, &stop, &sent, &acks, &errors,
            )
            .await;
            client
        })
    };
    let live: Arc<Mutex<LiveReads>> = Arc::new(Mutex::new(
        (0..options.partitions).map(|_| BTreeMap::new()).collect(),
    ));
    let consumer = {
        let reader = connect(&options).await?;
        let (stop, live, errors) = (stop.clone(), live.clone(), errors.clone());
        let (options, stream, topic) = (options.clone(), stream.clone(), topic.clone());
        tokio::spawn(async move {
            consume(&reader, &options, &stream, &topic, &stop, &live, &errors).await;
        })
    };
    let nemesis = {
        let (cluster, options) = (cluster.clone(), options.clone());
        std::thread::spawn(move || run_nemesis(&cluster, &options, started))
    };
    let records = tokio::task::spawn_blocking(move || nemesis.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the nemesis thread panicked".to_string())?;
    // A little more load on the healed cluster, then stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Release);
    let client = producer.await.map_err(|e| e.to_string())?;
    consumer.await.map_err(|e| e.to_string())?;

    // The final read of every partition, from offset 0.
    let mut total = Anomalies::default();
    let sent = std::mem::take(&mut *sent.lock().expect("not poisoned"));
    let live = std::mem::take(&mut *live.lock().expect("not poisoned"));
    for partition in 0..options.partitions {
        let read = read_all(&client, &stream, &topic, partition).await?;
        let anomalies = checker::check(
            partition,
            &sent[partition as usize],
            &read,
            &live[partition as usize],
        );
        println!(
            "partition {partition}: {} acknowledged, {} read ({} during faults); lost {}, duplicated {}, reordered {}, unexpected {}, inconsistent offsets {}; indeterminate sends stored {} / absent {}",
            sent[partition as usize].acked.len(),
            read.len(),
            live[partition as usize].len(),
            anomalies.lost,
            anomalies.duplicated,
            anomalies.reordered,
            anomalies.unexpected,
            anomalies.inconsistent_offsets,
            anomalies.indeterminate_stored,
            anomalies.indeterminate_absent,
        );
        total.add(&anomalies);
    }
    let acks = std::mem::take(&mut *acks.lock().expect("not poisoned"));
    let mut nemesis_failures = 0u64;
    println!("faults (gap: the longest time without an acknowledged send while the fault ran and until the cluster was healthy again):");
    for record in &records {
        let window_end = match &record.healthy {
            Ok(healthy) => record.healed + *healthy,
            Err(_) => record.healed,
        };
        let gap = longest_gap(&acks, record.started, window_end);
        let healthy = match &record.healthy {
            Ok(after) => format!("healthy {:.1} s after healing", after.as_secs_f64()),
            Err(error) => {
                nemesis_failures += 1;
                format!("NOT HEALTHY: {error}")
            }
        };
        println!(
            "  t={:6.1} s {:9} replica{}: gap {:.2} s; {healthy}",
            record.started.duration_since(started).as_secs_f64(),
            record.fault.name(),
            record.replica,
            gap.as_secs_f64(),
        );
    }
    let errors = std::mem::take(&mut *errors.lock().expect("not poisoned"));
    for error in errors.iter().take(20) {
        println!("client error: {error}");
    }
    let mut per_kind: BTreeMap<&str, (u32, Duration)> = BTreeMap::new();
    for record in &records {
        let end = record.healed + record.healthy.clone().unwrap_or_default();
        let gap = longest_gap(&acks, record.started, end);
        let entry = per_kind.entry(record.fault.name()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(gap);
    }
    let kinds: Vec<String> = per_kind
        .iter()
        .map(|(kind, (count, gap))| {
            format!("{kind} x{count} (longest gap {:.2} s)", gap.as_secs_f64())
        })
        .collect();
    println!(
        "summary: {:.0} s, {} faults: {}; {} acknowledged sends; {} client errors; anomalies {} (lost {}, duplicated {}, reordered {}, unexpected {}, inconsistent offsets {}); unhealthy after a fault: {nemesis_failures}",
        started.elapsed().as_secs_f64(),
        records.len(),
        kinds.join(", "),
        acks.len(),
        errors.len(),
        total.total(),
        total.lost,
        total.duplicated,
        total.reordered,
        total.unexpected,
        total.inconsistent_offsets,
    );
    let _ = client.delete_stream(&stream).await;
    Ok(total.total() + nemesis_failures)
}

/// Sends numbered batches to each partition in turn until `stop`.
#[allow(clippy::too_many_arguments)]
async fn produce(
    client: &IggyClient,
    options: &Options,
    stream: &Identifier,
    topic: &Identifier,
    stop: &AtomicBool,
    sent: &Mutex<Vec<Sent>>,
    acks: &Mutex<Vec<Instant>>,
    errors: &Mutex<Vec<String>>,
) {
    let mut next = vec![0u64; options.partitions as usize];
    let mut partition = 0u32;
    while !stop.load(Ordering::Acquire) {
        let first = next[partition as usize];
        let count = u64::from(options.messages_per_batch);
        next[partition as usize] += count;
        let mut messages: Vec<IggyMessage> = (first..first + count)
            .map(|sequence| {
                IggyMessage::builder()
                    .payload(Bytes::from(checker::payload(
                        partition,
                        sequence,
                        options.message_size as usize,
                    )))
                    .build()
                    .expect("a message builds")
            })
            .collect();
        let outcome = client
            .send_messages(
                stream,
                topic,
                &Partitioning::partition_id(partition),
                &mut messages,
            )
            .await;
        let now = Instant::now();
        {
            let mut sent = sent.lock().expect("not poisoned");
            let entry = &mut sent[partition as usize];
            match &outcome {
                Ok(_) => entry.acked.extend(first..first + count),
                Err(_) => entry.indeterminate.extend(first..first + count),
            }
        }
        match outcome {
            Ok(_) => acks.lock().expect("not poisoned").push(now),
            Err(error) => {
                errors
                    .lock()
                    .expect("not poisoned")
                    .push(format!("send to partition {partition}: {error}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        partition = (partition + 1) % options.partitions;
    }
}

/// Reads every partition forward while faults run, remembering what each offset held.
async fn consume(
    client: &IggyClient,
    options: &Options,
    stream: &Identifier,
    topic: &Identifier,
    stop: &AtomicBool,
    live: &Mutex<LiveReads>,
    errors: &Mutex<Vec<String>>,
) {
    let mut next = vec![0u64; options.partitions as usize];
    let mut partition = 0u32;
    while !stop.load(Ordering::Acquire) {
        let polled = poll(
            client,
            stream,
            topic,
            partition,
            next[partition as usize],
            100,
        )
        .await;
        match polled {
            Ok(polled) => {
                {
                    let mut live = live.lock().expect("not poisoned");
                    for message in &polled.messages {
                        let offset = message.header.offset;
                        live[partition as usize].insert(offset, message.payload.to_vec());
                        next[partition as usize] = next[partition as usize].max(offset + 1);
                    }
                }
                if polled.messages.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Err(error) => {
                errors
                    .lock()
                    .expect("not poisoned")
                    .push(format!("poll of partition {partition}: {error}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        partition = (partition + 1) % options.partitions;
    }
}

/// Up to `count` messages of `partition` from `offset` (no offset is stored).
async fn poll(
    client: &IggyClient,
    stream: &Identifier,
    topic: &Identifier,
    partition: u32,
    offset: u64,
    count: u32,
) -> Result<PolledMessages, IggyError> {
    let consumer = Consumer::new(Identifier::numeric(1).expect("a numeric id"));
    client
        .poll_messages(
            stream,
            topic,
            Some(partition),
            &consumer,
            &PollingStrategy::offset(offset),
            count,
            false,
        )
        .await
}

/// Every message of `partition` from offset 0, in offset order.
async fn read_all(
    client: &IggyClient,
    stream: &Identifier,
    topic: &Identifier,
    partition: u32,
) -> Result<Vec<Read>, String> {
    let mut read = Vec::new();
    let mut offset = 0u64;
    // Bounded: a partition of this test holds far fewer than this many pages.
    for _ in 0..1_000_000 {
        let polled = poll(client, stream, topic, partition, offset, 1000)
            .await
            .map_err(|e| format!("final read of partition {partition} at {offset}: {e}"))?;
        let Some(last) = polled.messages.last() else {
            return Ok(read);
        };
        offset = last.header.offset + 1;
        read.extend(polled.messages.iter().map(|m| Read {
            offset: m.header.offset,
            payload: m.payload.to_vec(),
        }));
    }
    Err(format!("partition {partition} did not end"))
}

/// The longest interval between consecutive acknowledgements (or between `from` and the first
/// one) that overlaps `[from, to]`.
fn longest_gap(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for ack in acks.iter().filter(|a| **a > from) {
        longest = longest.max(ack.duration_since(previous));
        previous = *ack;
        if *ack > to {
            return longest;
        }
    }
    longest.max(
        Instant::now()
            .duration_since(previous)
            .min(to.saturating_duration_since(previous)),
    )
}

/// Runs faults, one at a time, until `options.seconds` have passed since `started`: every
/// kind on every replica in turn.
fn run_nemesis(cluster: &Cluster, options: &Options, started: Instant) -> Vec<FaultRecord> {
    let mut records = Vec::new();
    let deadline = started + Duration::from_secs(options.seconds);
    // Some load before the first fault.
    std::thread::sleep(Duration::from_secs(3));
    let mut round = 0usize;
    while Instant::now() < deadline {
        let replica = (round % usize::from(cluster.replicas)) as u8;
        let fault = Fault::ALL[(round / usize::from(cluster.replicas)) % Fault::ALL.len()];
        round += 1;
        let fault_started = Instant::now();
        if let Err(error) = cluster.inject(fault, replica) {
            println!("nemesis: {error}");
        }
        if fault != Fault::Restart {
            std::thread::sleep(Duration::from_secs(options.fault_seconds));
        }
        if let Err(error) = cluster.heal(fault, replica) {
            println!("nemesis: {error}");
        }
        let healed = Instant::now();
        let healthy = cluster.wait_healthy(Duration::from_secs(60));
        if healthy.is_err() {
            cluster.heal_all();
        }
        println!(
            "nemesis: {} replica{replica} at t={:.1} s, healed after {:.1} s",
            fault.name(),
            fault_started.duration_since(started).as_secs_f64(),
            healed.duration_since(fault_started).as_secs_f64()
        );
        records.push(FaultRecord {
            fault,
            replica,
            started: fault_started,
            healed,
            healthy,
        });
        // Quiet time on the healed cluster before the next fault.
        std::thread::sleep(Duration::from_secs(2));
    }
    cluster.heal_all();
    records
}
