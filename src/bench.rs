//! `galgo bench`: load against a running cluster (or `galgo dev`) through the routing client,
//! in iggy-bench's workload shapes, with hdrhistogram latencies.
//!
//! * `pinned-producer`: each producer thread appends batches to its partition (producer i to
//!   partition i mod P); a batch counts once a replication quorum has it on disk.
//! * `pinned-consumer`: the producers fill the partitions first (reported apart), then each
//!   consumer thread reads its partition (consumer j: partition j mod P) from offset 0 to the
//!   end, one batch per poll.
//! * `end-to-end`: producers and consumers run together; a consumer measures, for every batch,
//!   the time from its send to its arrival (the send time rides in the payload).
//!
//! Every thread has its own client. `--rate-limit` paces each producer. Prints MB/s, msg/s and
//! p50/p90/p99/p999/p9999 per batch, next to Iggy's figures on this machine
//! (`../shared/reference/iggy-baseline.md`).

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use galgo_replica::admin::create_stream_and_topic;
use galgo_replica::client_protocol::{PartitionRoute, PollQuery, PollStart, POLL_BYTES_MAX};
use galgo_replica::partition::ops::{PartitionOp, ProducerStamp};
use galgo_replica::partition::reply::PartitionReply;
use galgo_replica::routing::RoutingClient;
use hdrhistogram::Histogram;

/// Largest batch payload: a batch must fit one request body (1 MiB) with its 64-byte head.
pub const BATCH_BYTES_MAX: usize = 1_000_000;
/// Threads of one kind, at most.
pub const ACTORS_MAX: usize = 256;
/// A consumer that sees no new batch for this long gives up (the cluster stopped serving).
const CONSUMER_STALL_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    PinnedProducer,
    PinnedConsumer,
    EndToEnd,
}

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// The workload shape.
    #[arg(long, value_enum, default_value_t = Workload::PinnedProducer)]
    pub workload: Workload,
    /// Producer threads, each with its own client and partition (i mod partitions).
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Consumer threads (pinned-consumer, end-to-end), each reading partition j mod partitions.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// Partitions of the bench topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Replicas per partition (0: the cluster's default).
    #[arg(long, default_value_t = 0)]
    pub replication: u8,
    /// Batches each producer sends.
    #[arg(long, default_value_t = 500)]
    pub batches: u64,
    #[arg(long, default_value_t = 1000)]
    pub messages_per_batch: u32,
    /// Bytes per message (a batch holds at most 1 000 000 bytes).
    #[arg(long, default_value_t = 1000)]
    pub message_size: usize,
    /// MB/s each producer sends at most (0: as fast as batches are acknowledged).
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit: f64,
}

impl BenchArgs {
    fn check(&self) -> Result<(), String> {
        let batch_bytes = self.messages_per_batch as usize * self.message_size;
        if !(8..=BATCH_BYTES_MAX).contains(&batch_bytes) {
            return Err(format!(
                "a batch of {} messages of {} bytes is {batch_bytes} bytes (8 to {BATCH_BYTES_MAX})",
                self.messages_per_batch, self.message_size
            ));
        }
        let consumers_needed = self.workload != Workload::PinnedProducer;
        if !(1..=ACTORS_MAX).contains(&self.producers)
            || (consumers_needed && !(1..=ACTORS_MAX).contains(&self.consumers))
        {
            return Err(format!("producers and consumers: 1 to {ACTORS_MAX}"));
        }
        if self.partitions == 0 || self.batches == 0 {
            return Err("partitions and batches must be at least 1".to_string());
        }
        if !self.rate_limit.is_finite() || self.rate_limit < 0.0 {
            return Err("--rate-limit is MB/s, 0 or more".to_string());
        }
        if consumers_needed && self.consumers > self.partitions as usize {
            return Err("more consumers than partitions: some would read nothing".to_string());
        }
        Ok(())
    }
}

/// What one run measured: batches and their latencies (µs), bytes, wall time.
struct Measured {
    latency: Histogram<u64>,
    messages: u64,
    bytes: u64,
    elapsed: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn report(what: &str, measured: &Measured) {
    let seconds = measured.elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| measured.latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "galgo bench: {what}: {} messages in {seconds:.2} s: {:.1} MB/s, {:.0} msg/s; per batch p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, p9999 {:.2} ms, max {:.2} ms",
        measured.messages,
        measured.bytes as f64 / seconds / 1e6,
        measured.messages as f64 / seconds,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        ms(0.9999),
        measured.latency.max() as f64 / 1000.0
    );
}

pub fn run(
    cluster: u128,
    nodes: Vec<(u8, SocketAddr)>,
    args: &BenchArgs,
    client_id: impl Fn() -> u128,
) -> Result<(), String> {
    args.check()?;
    let mut admin = RoutingClient::new(cluster, client_id(), nodes.clone());
    let stream = format!("bench-{:x}", client_id() as u32);
    let routes = create_stream_and_topic(
        &mut admin,
        &stream,
        "bench",
        args.partitions,
        args.replication,
    )?;
    println!(
        "galgo bench: {:?}, {} producers, {} consumers, {} partitions (replication {}), {} batches per producer of {} messages x {} bytes{}",
        args.workload,
        args.producers,
        if args.workload == Workload::PinnedProducer { 0 } else { args.consumers },
        args.partitions,
        args.replication,
        args.batches,
        args.messages_per_batch,
        args.message_size,
        if args.rate_limit > 0.0 {
            format!(", at most {} MB/s per producer", args.rate_limit)
        } else {
            String::new()
        }
    );
    let client = || RoutingClient::new(cluster, client_id(), nodes.clone());
    let clock = Instant::now();
    match args.workload {
        Workload::PinnedProducer => {
            let produced = produce_all(args, &routes, &client, clock)?;
            report("producers (quorum-durable)", &produced);
        }
        Workload::PinnedConsumer => {
            let produced = produce_all(args, &routes, &client, clock)?;
            report("fill (producers)", &produced);
            let consumed = consume_all(args, &routes, &client, clock, false)?;
            report("consumers", &consumed);
        }
        Workload::EndToEnd => {
            let producers = {
                let (args, routes) = (args.clone(), routes.clone());
                let clients: Vec<RoutingClient> = (0..args.producers).map(|_| client()).collect();
                std::thread::spawn(move || produce_with(&args, &routes, clients, clock))
            };
            let consumed = consume_all(args, &routes, &client, clock, true);
            let produced = producers
                .join()
                .map_err(|_| "the producers panicked".to_string())??;
            report("producers (quorum-durable)", &produced);
            report("end to end (send to receipt)", &consumed?);
        }
    }
    println!(
        "galgo bench: Iggy on this machine (iggy-baseline.md, 1 producer, 1000 x 1 KB batches): ~990 MB/s \
         acknowledged from memory, ~362 MB/s with --enforce-fsync (p50 3.6 ms); pinned consumer ~1346 MB/s"
    );
    Ok(())
}

fn produce_all(
    args: &BenchArgs,
    routes: &[PartitionRoute],
    client: &dyn Fn() -> RoutingClient,
    clock: Instant,
) -> Result<Measured, String> {
    let clients: Vec<RoutingClient> = (0..args.producers).map(|_| client()).collect();
    produce_with(args, routes, clients, clock)
}

/// Every producer's batches; the clock starts once every producer registered its session.
fn produce_with(
    args: &BenchArgs,
    routes: &[PartitionRoute],
    clients: Vec<RoutingClient>,
    clock: Instant,
) -> Result<Measured, String> {
    let ready = Arc::new(Barrier::new(clients.len() + 1));
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            let route = routes[index % routes.len()].clone();
            let (args, ready) = (args.clone(), ready.clone());
            std::thread::spawn(move || {
                let registered = client
                    .register_route(&route)
                    .map_err(|e| format!("producer {index}: {e}"));
                ready.wait();
                registered?;
                produce(client, &route, index as u64, &args, clock)
            })
        })
        .collect();
    ready.wait();
    let started = Instant::now();
    let mut latency = histogram();
    for worker in workers {
        let mine = worker
            .join()
            .map_err(|_| "a producer panicked".to_string())??;
        latency.add(mine).expect("same bounds");
    }
    let messages = latency.len() * u64::from(args.messages_per_batch);
    Ok(Measured {
        messages,
        bytes: messages * args.message_size as u64,
        latency,
        elapsed: started.elapsed(),
    })
}

/// One producer's batches; each payload starts with its send time (µs on `clock`).
fn produce(
    mut client: RoutingClient,
    route: &PartitionRoute,
    producer: u64,
    args: &BenchArgs,
    clock: Instant,
) -> Result<Histogram<u64>, String> {
    let mut payload = vec![0x5a; args.messages_per_batch as usize * args.message_size];
    let mut latency = histogram();
    let started = Instant::now();
    for sequence in 0..args.batches {
        if args.rate_limit > 0.0 {
            // Pace: batch n leaves no earlier than n batches' worth of bytes at the rate.
            let due = Duration::from_secs_f64(
                sequence as f64 * payload.len() as f64 / (args.rate_limit * 1e6),
            );
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let op = PartitionOp::Append {
            base_offset: 0,
            count: args.messages_per_batch,
            timestamp: 0,
            producer: Some(ProducerStamp {
                producer: producer + 1,
                epoch: 1,
                sequence,
            }),
        };
        let sent = Instant::now();
        let sent_us = sent.duration_since(clock).as_micros() as u64;
        payload[..8].copy_from_slice(&sent_us.to_le_bytes());
        let reply = client
            .call_route(route, op.encode(&payload))
            .map_err(|e| format!("producer {producer}: {e}"))?;
        latency
            .record((sent.elapsed().as_micros() as u64).max(1))
            .expect("within bounds");
        match PartitionReply::decode(&reply.body) {
            Ok(PartitionReply::Appended { .. }) => {}
            other => return Err(format!("producer {producer}: batch {sequence}: {other:?}")),
        }
    }
    Ok(latency)
}

/// Every consumer reads its partition to the end of what the producers send there.
fn consume_all(
    args: &BenchArgs,
    routes: &[PartitionRoute],
    client: &dyn Fn() -> RoutingClient,
    clock: Instant,
    end_to_end: bool,
) -> Result<Measured, String> {
    let partitions = routes.len();
    let workers: Vec<_> = (0..args.consumers)
        .map(|index| {
            let partition = index % partitions;
            // Producers i with i mod P == partition write here, `batches` each.
            let producers_here = (0..args.producers).filter(|i| i % partitions == partition);
            let expected = producers_here.count() as u64 * args.batches;
            let (route, args, mut client) = (routes[partition].clone(), args.clone(), client());
            std::thread::spawn(move || {
                consume(&mut client, &route, expected, &args, clock, end_to_end)
                    .map_err(|e| format!("consumer {index}: {e}"))
            })
        })
        .collect();
    let started = Instant::now();
    let mut latency = histogram();
    let mut batches = 0u64;
    for worker in workers {
        let (mine, count) = worker
            .join()
            .map_err(|_| "a consumer panicked".to_string())??;
        latency.add(mine).expect("same bounds");
        batches += count;
    }
    let messages = batches * u64::from(args.messages_per_batch);
    Ok(Measured {
        messages,
        bytes: messages * args.message_size as u64,
        latency,
        elapsed: started.elapsed(),
    })
}

/// Polls `route` from offset 0 until `expected` batches arrived, one batch per poll. The
/// latency of a batch is its poll's (or, end to end, the time since its send).
fn consume(
    client: &mut RoutingClient,
    route: &PartitionRoute,
    expected: u64,
    args: &BenchArgs,
    clock: Instant,
    end_to_end: bool,
) -> Result<(Histogram<u64>, u64), String> {
    let mut latency = histogram();
    let (mut offset, mut received) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while received < expected {
        let asked = Instant::now();
        let query = PollQuery {
            start: PollStart::Offset(offset),
            batches_max: 1,
            bytes_max: POLL_BYTES_MAX,
        };
        // A new topic's groups take a moment to start: no answer counts as nothing yet.
        let polled = client.poll(route, query);
        let Some(batch) = polled.as_ref().ok().and_then(|p| p.batches.first()) else {
            if last_progress.elapsed() > CONSUMER_STALL_MAX {
                return Err(format!(
                    "no new batch for {CONSUMER_STALL_MAX:?} at offset {offset} ({received} of {expected} read): {:?}",
                    polled.err()
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        if batch.base_offset != offset || batch.count != args.messages_per_batch {
            return Err(format!(
                "expected a batch of {} at offset {offset}, got {} at {}",
                args.messages_per_batch, batch.count, batch.base_offset
            ));
        }
        let value = if end_to_end {
            let sent_us = batch
                .bytes
                .get(
                    batch
                        .bytes
                        .len()
                        .saturating_sub(args.messages_per_batch as usize * args.message_size)..,
                )
                .and_then(|payload| payload.get(..8))
                .map(|head| u64::from_le_bytes(head.try_into().expect("8 bytes")))
                .ok_or("a batch too short for its send time")?;
            (clock.elapsed().as_micros() as u64).saturating_sub(sent_us)
        } else {
            asked.elapsed().as_micros() as u64
        };
        latency.record(value.max(1)).expect("within bounds");
        offset += u64::from(batch.count);
        received += 1;
        last_progress = Instant::now();
    }
    Ok((latency, received))
}
