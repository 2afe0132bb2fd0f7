//! The `galgo-sim` command line: run one seed or a range, list and inject deliberate bugs.

use std::ops::Range;
use std::panic;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use galgo_consensus::{Bug, Bugs};
use galgo_sim::{
    describe, run_seed, Failure, Options, EXIT_CORRECTNESS, EXIT_CRASH, EXIT_LIVENESS,
};

/// Deterministic simulator for Galgo's VSR replication: one seed reproduces one run exactly.
#[derive(Parser, Debug)]
#[command(name = "galgo-sim", version)]
struct Cli {
    /// Run exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a half-open range of seeds, e.g. `0..1000`; stops at the first failure.
    #[arg(long, value_parser = parse_range)]
    seeds: Option<Range<u64>>,
    /// Compile-time injected bug to enable (see --list-bugs); a run must then fail.
    #[arg(long)]
    inject_bug: Option<String>,
    /// List the deliberate bugs this build can inject, and exit.
    #[arg(long)]
    list_bugs: bool,
    /// Print only failures and the final summary.
    #[arg(long)]
    quiet: bool,
}

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text.split_once("..").ok_or("expected A..B")?;
    let start: u64 = start
        .trim()
        .parse()
        .map_err(|e| format!("bad start: {e}"))?;
    let end: u64 = end.trim().parse().map_err(|e| format!("bad end: {e}"))?;
    if start >= end {
        return Err("empty range: A must be below B".into());
    }
    Ok(start..end)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list_bugs {
        for bug in Bug::ALL {
            println!("{:32} {}", bug.name(), bug.description());
        }
        return ExitCode::SUCCESS;
    }
    let bugs = match &cli.inject_bug {
        None => Bugs::none(),
        Some(name) => match Bug::from_name(name) {
            Some(bug) => Bugs::inject(bug),
            None => {
                eprintln!("unknown bug '{name}'; see galgo-sim --list-bugs");
                return ExitCode::from(2);
            }
        },
    };
    let seeds = match (cli.seed, cli.seeds.clone()) {
        (Some(seed), None) => seed..seed + 1,
        (None, Some(range)) => range,
        _ => {
            eprintln!("give --seed N or --seeds A..B (see --help)");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut passed = 0u64;
    let mut ticks = 0u64;
    for seed in seeds.clone() {
        let options = Options::swarm(seed);
        if !cli.quiet {
            println!("seed {seed}: {}", describe(&options));
        }
        let outcome = panic::catch_unwind(|| run_seed(options, bugs));
        let (code, message) = match outcome {
            Ok((Ok(()), stats, faults)) => {
                passed += 1;
                ticks += stats.ticks;
                if !cli.quiet {
                    println!(
                        "seed {seed}: ok ticks={} acks={} commit={} views={} crashes={} restarts={} (from a checkpoint {}, checkpoints saved {}) pauses={} liveness_ticks={} journal base {} (compacted reads: headers {}, prepares {}) prefix cuts={} transfers={} | {faults}",
                        stats.ticks, stats.acks, stats.commit_max, stats.view_max, stats.crashes, stats.restarts, stats.checkpoint_opens, stats.checkpoints, stats.pauses, stats.liveness_ticks, stats.journal_base_max, stats.compacted_header_reads, stats.compacted_prepare_reads, stats.prefix_cuts, stats.transfers
                    );
                }
                continue;
            }
            Ok((Err(Failure::Correctness(message)), _, _)) => {
                (EXIT_CORRECTNESS, format!("correctness: {message}"))
            }
            Ok((Err(Failure::Liveness(message)), _, _)) => {
                (EXIT_LIVENESS, format!("liveness: {message}"))
            }
            Err(_) => (
                EXIT_CRASH,
                "crash: a panic or assertion (message above)".to_string(),
            ),
        };
        println!("seed {seed}: FAILED {message}");
        let bug = cli
            .inject_bug
            .as_ref()
            .map(|b| format!(" --inject-bug {b}"))
            .unwrap_or_default();
        println!("reproduce: cargo run --release -p galgo-sim -- --seed {seed}{bug}");
        eprintln!(
            "{passed} seeds passed before the failure, {:.1}s",
            started.elapsed().as_secs_f64()
        );
        return ExitCode::from(code as u8);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("{passed} seeds passed ({}..{})", seeds.start, seeds.end);
    eprintln!(
        "{:.1}s, {:.1} seeds/minute, {:.0} simulated ticks/s",
        elapsed,
        passed as f64 * 60.0 / elapsed.max(1e-9),
        ticks as f64 / elapsed.max(1e-9)
    );
    ExitCode::SUCCESS
}
