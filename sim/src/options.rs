//! Swarm options: every knob of a run drawn from its seed, so each seed tests a different mix.

use galgo_consensus::prng::Prng;
use galgo_consensus::JOURNAL_KEEP_OPS_MIN;

#[derive(Clone, Debug)]
pub struct NetworkOptions {
    pub delay_min: u64,
    pub delay_mean: f64,
    pub loss: f64,
    pub replay: f64,
    /// Per tick: re-send one packet from the recent history between replicas (a message from
    /// an older view arriving very late).
    pub replay_old: f64,
    /// Per Prepare a replica sends: the PrepareOks it got for the same op in older views
    /// are delivered to it again.
    pub replay_stale_acks: f64,
    /// Per packet: delayed by 50–2000 ticks instead of the usual delay.
    pub straggler: f64,
    /// Per packet between replicas: delivered to a random replica instead.
    pub misroute: f64,
    pub path_capacity: usize,
    pub clog_probability: f64,
    pub clog_mean: f64,
    pub bit_flip: f64,
    pub partition_mode: PartitionMode,
    pub partition_symmetric: bool,
    pub partition_probability: f64,
    pub unpartition_probability: f64,
    pub partition_stability: u64,
    pub unpartition_stability: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionMode {
    None,
    UniformSize,
    UniformPartition,
    IsolateSingle,
}

#[derive(Clone, Debug)]
pub struct StorageOptions {
    pub read_latency_min: u64,
    pub read_latency_mean: f64,
    pub write_latency_min: u64,
    pub write_latency_mean: f64,
    pub read_fault: f64,
    pub write_fault: f64,
    pub misdirect: f64,
    pub lost_write: f64,
    pub crash_tear: f64,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub replica_count: u8,
    pub placement_offset: u8,
    pub clients: usize,
    pub clients_max: usize,
    pub pipeline_max: usize,
    pub requests_max: usize,
    pub request_body_max: usize,
    pub network: NetworkOptions,
    pub storage: StorageOptions,
    pub crash_probability: f64,
    pub restart_probability: f64,
    pub pause_probability: f64,
    pub unpause_probability: f64,
    pub ticks_max_requests: u64,
    pub ticks_max_convergence: u64,
    /// Each replica's journal is a `SegmentJournal` on the storage crate's `MemoryDisk`
    /// instead of the simulator's slot disk (whose superblock it still uses).
    pub segment_journal: bool,
    /// Primaries hand leadership back to the preferred replica once it has caught up.
    pub return_leadership: bool,
    /// What the group runs: the plain test state machine, or one of Galgo's broker state
    /// machines under its own workload (and checks).
    pub workload: Workload,
    /// A replica saves a checkpoint each time its commit passed this many ops since its last
    /// one, and opens from it after a crash (0: never).
    pub checkpoint_interval: u64,
    /// Journal entries each replica keeps below its commit point (`Config::journal_keep_ops`):
    /// small values make runs compact their journals and serve repairs from disk.
    pub journal_keep_ops: u64,
    /// Per tick, the chance that a running replica drops the whole segments of its log at
    /// or below both its checkpoint and its journal's base (fault-free retention), so that a
    /// replica that falls behind catches up by state transfer (segment journals with
    /// checkpoints only; 0: never).
    pub prefix_cut_probability: f64,
    /// Segment size of the segment journals: small ones seal often, so prefixes can go.
    pub segment_size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Test,
    /// The partition state machine; clients are idempotent producers.
    Broker,
    /// The metadata state machine; clients send random streams, topics, partitions, users
    /// and consumer-group operations.
    Metadata,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Test => "test",
            Workload::Broker => "broker",
            Workload::Metadata => "metadata",
        }
    }
}

impl Options {
    pub fn swarm(seed: u64) -> Options {
        let mut prng = Prng::from_seed(seed);
        let replica_count = *pick(&mut prng, &[1u8, 2, 3, 3, 3, 4, 5]);
        let clients_max = prng.range_inclusive(2, 8) as usize;
        let partition_mode = *pick(
            &mut prng,
            &[
                PartitionMode::None,
                PartitionMode::UniformSize,
                PartitionMode::UniformPartition,
                PartitionMode::IsolateSingle,
            ],
        );
        let delay_min = prng.range_inclusive(0, 3);
        let network = NetworkOptions {
            delay_min,
            delay_mean: prng.range_inclusive(3.max(delay_min), 10) as f64,
            loss: percent(&mut prng, 30),
            replay: percent(&mut prng, 50),
            replay_old: 0.0,
            replay_stale_acks: 0.0,
            straggler: 0.0,
            misroute: 0.0,
            path_capacity: prng.range_inclusive(2, 20) as usize,
            clog_probability: percent(&mut prng, 2) / 10.0,
            clog_mean: prng.range_inclusive(0, 500) as f64,
            bit_flip: percent(&mut prng, 1),
            partition_mode,
            partition_symmetric: prng.chance(0.5),
            partition_probability: percent(&mut prng, 3) / 10.0,
            unpartition_probability: (1.0 + prng.unit() * 9.0) / 100.0,
            partition_stability: prng.range_inclusive(100, 200),
            unpartition_stability: prng.range_inclusive(0, 20),
        };
        let read_latency_min = prng.range_inclusive(0, 3);
        let write_latency_min = prng.range_inclusive(0, 3);
        let write_latency_ceiling = if prng.chance(0.1) { 100 } else { 10 };
        let storage = StorageOptions {
            read_latency_min,
            read_latency_mean: prng.range_inclusive(read_latency_min, 10) as f64,
            write_latency_min,
            write_latency_mean: prng.range_inclusive(write_latency_min, write_latency_ceiling)
                as f64,
            read_fault: percent(&mut prng, 10),
            write_fault: percent(&mut prng, 10),
            misdirect: percent(&mut prng, 10),
            lost_write: percent(&mut prng, 5),
            crash_tear: 0.8 + prng.unit() * 0.2,
        };
        let mut options = Options {
            seed,
            replica_count,
            placement_offset: prng.below(u64::from(replica_count)) as u8,
            clients: prng.range_inclusive(1, clients_max as u64 + 2) as usize,
            clients_max,
            pipeline_max: *pick(&mut prng, &[1usize, 2, 4, 8, 8, 8]),
            requests_max: prng.range_inclusive(100, 300) as usize,
            request_body_max: *pick(&mut prng, &[0usize, 16, 256]),
            network,
            storage,
            crash_probability: percent(&mut prng, 2) / 50.0,
            restart_probability: percent(&mut prng, 2),
            pause_probability: percent(&mut prng, 1) / 10.0,
            unpause_probability: percent(&mut prng, 2).max(0.001),
            ticks_max_requests: 40_000,
            ticks_max_convergence: 30_000,
            segment_journal: false,
            return_leadership: false,
            workload: Workload::Test,
            checkpoint_interval: 0,
            journal_keep_ops: u64::MAX,
            prefix_cut_probability: 0.0,
            segment_size: 64 * 1024,
        };
        // Drawn last, so adding it left every earlier draw of a seed as it was.
        options.network.replay_old = percent(&mut prng, 5);
        options.network.straggler = percent(&mut prng, 2);
        options.network.misroute = percent(&mut prng, 2);
        options.segment_journal = prng.chance(0.5);
        options.return_leadership = prng.chance(0.5);
        options.workload = *pick(
            &mut prng,
            &[
                Workload::Test,
                Workload::Broker,
                Workload::Broker,
                Workload::Metadata,
            ],
        );
        if prng.chance(0.5) {
            options.network.replay_stale_acks = 0.2 + prng.unit() * 0.8;
        }
        options.checkpoint_interval = *pick(&mut prng, &[0u64, 0, 4, 16, 64]);
        options.journal_keep_ops = *pick(
            &mut prng,
            &[u64::MAX, JOURNAL_KEEP_OPS_MIN, JOURNAL_KEEP_OPS_MIN, 96],
        );
        let prefix_cut = *pick(&mut prng, &[0.0, 0.002, 0.01, 0.05]);
        let segment_size = *pick(&mut prng, &[64 * 1024, 8 * 1024]);
        if options.segment_journal && options.checkpoint_interval > 0 {
            options.prefix_cut_probability = prefix_cut;
            options.segment_size = segment_size;
        }
        options
    }
}

fn pick<'a, T>(prng: &mut Prng, choices: &'a [T]) -> &'a T {
    &choices[prng.below(choices.len() as u64) as usize]
}

/// A probability drawn uniformly in [0, max_percent %].
fn percent(prng: &mut Prng, max_percent: u64) -> f64 {
    prng.unit() * max_percent as f64 / 100.0
}
