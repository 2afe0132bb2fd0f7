//! `galgo-sim`: a deterministic simulator for Galgo's VSR replication. One thread, one seed,
//! simulated time, network and disks; faults drawn per seed (swarm testing); safety checkers
//! every tick, then a liveness phase on a healed cluster.

pub mod broker_checker;
pub mod checker;
pub mod client;
pub mod disk;
pub mod network;
pub mod options;
pub mod segments;
pub mod simulator;
pub mod state_machine;

use galgo_consensus::Bugs;

pub use checker::Failure;
pub use options::Options;
pub use simulator::{RunStats, Simulator};

/// Exit codes, as TigerBeetle's VOPR uses them.
pub const EXIT_CRASH: i32 = 127;
pub const EXIT_LIVENESS: i32 = 128;
pub const EXIT_CORRECTNESS: i32 = 129;

/// One line describing the drawn options (printed before the run, so a failure is explained).
pub fn describe(options: &Options) -> String {
    let n = &options.network;
    let s = &options.storage;
    format!(
        "journal={} keep={} workload={} return_leadership={} checkpoint={} prefix_cut={} segment={} replicas={} offset={} clients={} clients_max={} pipeline={} requests={} body_max={} | net delay={}+exp({}) loss={:.3} replay={:.3}/old {:.3}/stale acks {:.2} straggle={:.3} misroute={:.3} cap={} clog={:.4}/{} flip={:.4} partition={:?}/{} p={:.4} | disk w={}+exp({}) read_fault={:.3} write_fault={:.3} misdirect={:.3} lost={:.3} tear={:.2} | crash={:.5} restart={:.4} pause={:.5}",
        if options.segment_journal { "segments" } else { "slots" },
        options.journal_keep_ops,
        options.workload.name(),
        options.return_leadership,
        options.checkpoint_interval,
        options.prefix_cut_probability,
        options.segment_size,
        options.replica_count,
        options.placement_offset,
        options.clients,
        options.clients_max,
        options.pipeline_max,
        options.requests_max,
        options.request_body_max,
        n.delay_min,
        n.delay_mean,
        n.loss,
        n.replay,
        n.replay_old,
        n.replay_stale_acks,
        n.straggler,
        n.misroute,
        n.path_capacity,
        n.clog_probability,
        n.clog_mean,
        n.bit_flip,
        n.partition_mode,
        if n.partition_symmetric { "sym" } else { "asym" },
        n.partition_probability,
        s.write_latency_min,
        s.write_latency_mean,
        s.read_fault,
        s.write_fault,
        s.misdirect,
        s.lost_write,
        s.crash_tear,
        options.crash_probability,
        options.restart_probability,
        options.pause_probability,
    )
}

/// Runs one seed to completion.
pub fn run_seed(options: Options, bugs: Bugs) -> (Result<(), Failure>, RunStats, String) {
    let mut simulator = Simulator::new(options, bugs);
    let result = simulator.run();
    let net = simulator.network_stats();
    let disks = simulator.disk_stats();
    let torn: u64 = disks.iter().map(|d| d.torn).sum();
    let corrupted: u64 = disks.iter().map(|d| d.corrupted + d.latent).sum();
    let misdirected: u64 = disks.iter().map(|d| d.misdirected + d.lost).sum();
    let mut faults = format!(
        "packets={} lost={} replayed={} stale acks={} flipped={} partitions={} | torn={} corrupt={} misdirected/lost={}",
        net.sent, net.lost, net.replayed, net.stale_acks_replayed, net.flipped, net.partitions, torn, corrupted, misdirected
    );
    if let Some((records_damaged, memory_torn, zeros)) = simulator.segment_fault_stats() {
        faults.push_str(&format!(
            " | segments: records damaged={records_damaged} torn on crash={memory_torn} zeros ahead={} KiB",
            zeros / 1024
        ));
    }
    if let Some((stores, stale)) = simulator.broker_store_stats() {
        faults.push_str(&format!(
            " | offset stores accepted={stores} stale refused={stale}"
        ));
    }
    (result, simulator.stats.clone(), faults)
}
