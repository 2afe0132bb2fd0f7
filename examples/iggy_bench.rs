//! Iggy's own client (crates.io `iggy` 0.11.0) against a Galgo gateway: one pinned producer
//! sends batches to partition 0 of a fresh topic, then one pinned consumer polls them all
//! back. Prints MB/s, messages/s and per-batch latency percentiles (hdrhistogram) next to
//! Iggy's figures on a machine like this one (`../shared/reference/iggy-baseline.md`).
//! Like iggy-bench's batch generator, a thread of its own builds the batches a few ahead, so
//! the producer's time is spent sending (before 2026-12-06 the loop built each batch itself,
//! about 0.3 ms per 1000-message batch that counted against throughput, not latency).
//!
//! ```text
//! GALGO_ROOT_USERNAME=iggy GALGO_ROOT_PASSWORD=iggy cargo run --release -- dev &
//! cargo run --release --example iggy_bench -- --batches 1000
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use iggy::prelude::*;

/// Batches built ahead of the producer, at most.
const BATCHES_AHEAD: usize = 4;

/// The benchmark's options (`--help` lists them).
#[derive(clap::Parser)]
#[command(about = "One pinned producer, then one pinned consumer, through the iggy client")]
struct Options {
    /// The gateway's Iggy binary-protocol address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    address: String,
    #[arg(long, default_value = "iggy")]
    username: String,
    #[arg(long, default_value = "iggy")]
    password: String,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    batches: u32,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    messages_per_batch: u32,
    /// Bytes per message.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    message_size: u32,
    /// Keep the bench's stream and its messages at the end (to measure a restart with data).
    #[arg(long)]
    keep: bool,
}

fn report(what: &str, bytes: u64, messages: u64, elapsed: Duration, latency: &Histogram<u64>) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{what}: {:.1} MB/s, {:.0} messages/s, {messages} messages in {seconds:.2} s; per batch \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, p9999 {:.2} ms",
        bytes as f64 / 1e6 / seconds,
        messages as f64 / seconds,
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.9) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.value_at_quantile(0.999) as f64 / 1000.0,
        latency.value_at_quantile(0.9999) as f64 / 1000.0,
    );
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let options = <Options as clap::Parser>::parse();
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
    let name = format!("bench-{}", std::process::id());
    client
        .create_stream(&name)
        .await
        .map_err(|e| e.to_string())?;
    let stream = Identifier::named(&name).map_err(|e| e.to_string())?;
    let topic_options = TopicCreateOptions {
        partitions_count: Some(1),
        ..TopicCreateOptions::default()
    };
    client
        .create_topic(&stream, "topic-1", &topic_options)
        .await
        .map_err(|e| e.to_string())?;
    let topic = Identifier::named("topic-1").map_err(|e| e.to_string())?;
    println!(
        "iggy bench against galgo at {}: 1 producer, {} batches of {} messages x {} bytes, \
         partition 0",
        options.address, options.batches, options.messages_per_batch, options.message_size
    );
    // Batches are built on a thread of their own, a few ahead, as iggy-bench's batch
    // generator does: the producer's loop measures sending, not building 1000 messages.
    let (batches, mut ready) = tokio::sync::mpsc::channel::<Vec<IggyMessage>>(BATCHES_AHEAD);
    let (count, size) = (options.messages_per_batch, options.message_size as usize);
    let builder = std::thread::spawn(move || {
        let payload = Bytes::from(vec![b'x'; size]);
        for _ in 0..options.batches {
            let messages: Vec<IggyMessage> = (0..count)
                .map(|_| {
                    IggyMessage::builder()
                        .payload(payload.clone())
                        .build()
                        .expect("a message builds")
                })
                .collect();
            if batches.blocking_send(messages).is_err() {
                return; // The producer stopped early.
            }
        }
    });
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let started = Instant::now();
    let mut slowest: Option<(u32, u64)> = None;
    for batch in 0..options.batches {
        let mut messages = ready
            .recv()
            .await
            .ok_or_else(|| "the batch builder stopped".to_string())?;
        let sent = Instant::now();
        client
            .send_messages(
                &stream,
                &topic,
                &Partitioning::partition_id(0),
                &mut messages,
            )
            .await
            .map_err(|e| format!("batch {batch}: {e}"))?;
        let micros = sent.elapsed().as_micros().max(1) as u64;
        latency.record(micros).expect("in bounds");
        if slowest.is_none_or(|(_, worst)| micros > worst) {
            slowest = Some((batch, micros));
        }
    }
    let produced = started.elapsed();
    builder
        .join()
        .map_err(|_| "the batch builder panicked".to_string())?;
    let messages = u64::from(options.batches) * u64::from(options.messages_per_batch);
    let bytes = messages * options.message_size as u64;
    report(
        "producer (quorum-durable)",
        bytes,
        messages,
        produced,
        &latency,
    );
    if let Some((batch, micros)) = slowest {
        println!(
            "  slowest batch: #{batch} ({:.2} ms)",
            micros as f64 / 1000.0
        );
    }
    println!("  Iggy on this machine: 362 MB/s with --enforce-fsync, 990 MB/s from memory");

    let consumer = Consumer::new(Identifier::numeric(1).map_err(|e| e.to_string())?);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let started = Instant::now();
    let mut offset = 0u64;
    let mut polled_messages = 0u64;
    let mut polled_bytes = 0u64;
    while polled_messages < messages {
        let poll = Instant::now();
        let polled = client
            .poll_messages(
                &stream,
                &topic,
                Some(0),
                &consumer,
                &PollingStrategy::offset(offset),
                options.messages_per_batch,
                false,
            )
            .await
            .map_err(|e| format!("poll at {offset}: {e}"))?;
        latency
            .record(poll.elapsed().as_micros().max(1) as u64)
            .expect("in bounds");
        if polled.messages.is_empty() {
            return Err(format!("nothing at offset {offset} of {messages}"));
        }
        for message in &polled.messages {
            polled_bytes += message.payload.len() as u64;
        }
        polled_messages += polled.messages.len() as u64;
        offset = polled.messages.last().expect("not empty").header.offset + 1;
    }
    report(
        "consumer",
        polled_bytes,
        polled_messages,
        started.elapsed(),
        &latency,
    );
    println!("  Iggy on this machine: 1346 MB/s pinned consumer");
    if options.keep {
        println!("stream {name} kept");
        return Ok(());
    }
    client
        .delete_stream(&stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
