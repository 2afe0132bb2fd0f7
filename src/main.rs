//! The `galgo` binary: `galgo replica` runs one node of a cluster from a configuration file;
//! `galgo dev` runs a one-node cluster on the embedded configuration, for development, and
//! sets a root user on first start; `galgo bench` measures durable produce throughput against
//! a running cluster.

mod bench;
mod http;
mod readiness;
mod shutdown;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use galgo_gateway::server::GatewayConfig;
use galgo_replica::config::{Config, DEV_CONFIG};
use galgo_replica::local_port::LocalPorts;
use galgo_replica::metadata::machine::MetadataReply;
use galgo_replica::metadata::{MetadataOp, UserStatus};
use galgo_replica::node::{Node, SharedPlacements};
use galgo_replica::routing::RoutingClient;

#[derive(Parser, Debug)]
#[command(
    name = "galgo",
    version,
    about = "Galgo: a replicated message-streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node of a cluster. Every key of the file can be overridden by an environment
    /// variable GALGO_<SECTION>_<KEY> (GALGO_REPLICA_DATA_DIR=/var/lib/galgo).
    Replica {
        /// The node's TOML configuration ([cluster], [replica], [storage], [gateway]).
        #[arg(long)]
        config: std::path::PathBuf,
        /// This node's id in cluster.nodes (overrides replica.id).
        #[arg(long)]
        id: Option<u8>,
    },
    /// Run the gateway: the Iggy binary protocol 0.11.0 (gateway.tcp_address) and HTTP
    /// (gateway.http_address: /livez, /readyz, /metrics) in front of the cluster the file
    /// describes (its nodes' client addresses). Stateless; several can run. If the cluster has
    /// no user yet, it creates root (GALGO_ROOT_USERNAME, default root; GALGO_ROOT_PASSWORD,
    /// else generated and printed).
    Gateway {
        /// The cluster's TOML configuration (the same file as the replicas').
        #[arg(long)]
        config: std::path::PathBuf,
        /// Print refused requests and errors to stderr.
        #[arg(long)]
        verbose: bool,
    },
    /// Run a one-node development cluster and its gateway on the embedded configuration. Sets
    /// a root user on first start (GALGO_ROOT_USERNAME, default root; GALGO_ROOT_PASSWORD,
    /// else generated and printed).
    Dev {
        /// Where the data lives (default ./galgo-data).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
    },
    /// Ask a galgo HTTP endpoint whether it is ready (GET /readyz): exit 0 if it answers 200,
    /// else 1 with its answer. For container healthchecks (the image has no curl).
    Health {
        /// host:port of the HTTP endpoint (gateway.http_address or replica.http_address).
        address: std::net::SocketAddr,
        /// The path to ask.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
    /// Load a running cluster (default: a `galgo dev` on this machine) in iggy-bench's
    /// workload shapes (pinned producer, pinned consumer, end to end) and print throughput
    /// and per-batch latency.
    Bench {
        /// The cluster's configuration (its nodes' client addresses); default: galgo dev's.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
}

fn main() -> ExitCode {
    // A panic anywhere (a shard's thread included) ends the process: a node missing a shard
    // would silently drop that shard's groups, and recovery decides what survived a crash.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let cli = Cli::parse();
    if let Command::Health { address, path } = &cli.command {
        return match http::get(*address, path) {
            Ok((200, _)) => ExitCode::SUCCESS,
            Ok((status, body)) => {
                eprintln!(
                    "galgo health: {address}{path}: {status} {}",
                    body.trim_end()
                );
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("galgo health: {address}{path}: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Command::Bench { config, args } = &cli.command {
        let config = match load_config(config.as_deref(), env) {
            Ok(config) => config,
            Err(code) => return code,
        };
        let nodes = client_addresses(&config);
        let cluster = u128::from(config.cluster.id);
        return match bench::run(cluster, nodes, args, random_u128) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("galgo bench: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Gateway { config, verbose } = &cli.command {
        let config = match load_config(Some(config), env) {
            Ok(config) => config,
            Err(code) => return code,
        };
        return match serve_clients(&config, *verbose, None, None) {
            Ok(()) => loop {
                std::thread::park();
            },
            Err(()) => ExitCode::FAILURE,
        };
    }
    let (text, dev) = match &cli.command {
        Command::Replica { config, id } => {
            let text = match std::fs::read_to_string(config) {
                Ok(text) => text,
                Err(error) => {
                    eprintln!("galgo: cannot read {}: {error}", config.display());
                    return ExitCode::from(2);
                }
            };
            if let Some(id) = id {
                env.retain(|(name, _)| name != "GALGO_REPLICA_ID");
                env.push(("GALGO_REPLICA_ID".to_string(), id.to_string()));
            }
            (text, false)
        }
        Command::Dev { data_dir } => {
            if let Some(dir) = data_dir {
                env.retain(|(name, _)| name != "GALGO_REPLICA_DATA_DIR");
                env.push((
                    "GALGO_REPLICA_DATA_DIR".to_string(),
                    dir.display().to_string(),
                ));
            }
            (DEV_CONFIG.to_string(), true)
        }
        Command::Bench { .. } | Command::Gateway { .. } | Command::Health { .. } => {
            unreachable!("handled above")
        }
    };
    let config = match Config::load(&text, env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("galgo: {error}");
            return ExitCode::from(2);
        }
    };
    run(config, dev)
}

fn run(config: Config, dev: bool) -> ExitCode {
    let shards = config.shard_count();
    // Before any thread starts, so that every thread inherits the blocked signals and only
    // the shutdown thread takes them.
    let stopping = match shutdown::Shutdown::install(shards) {
        Ok(stopping) => stopping,
        Err(error) => {
            eprintln!("galgo: cannot take SIGTERM and SIGINT: {error}");
            return ExitCode::FAILURE;
        }
    };
    let placements = Arc::new(SharedPlacements::default());
    let shards_ready = Arc::new(readiness::ShardsReadiness::new(shards));
    let started = Arc::new(std::sync::Barrier::new(usize::from(shards) + 1));
    // `galgo dev`'s gateway reaches the shards through in-process links.
    let local = dev.then(|| LocalPorts::new(config.replica.id, shards));
    let mut threads = Vec::new();
    for shard in 0..shards {
        let (config, placements, started) = (config.clone(), placements.clone(), started.clone());
        let (stopping, ready, local) = (stopping.clone(), shards_ready.clone(), local.clone());
        let shard_run = ShardRun {
            shard,
            shards,
            placements,
            local,
            started,
            stopping,
            ready,
        };
        let thread = std::thread::Builder::new()
            .name(format!("galgo-shard-{shard}"))
            .spawn(move || run_shard(config, shard_run))
            .expect("a shard thread starts");
        threads.push(thread);
    }
    started.wait();
    println!(
        "galgo: node {} of cluster {} ({} nodes, {shards} shards); replica bus on {}, client port on {} (shard s: port + s); data in {}",
        config.replica.id,
        config.cluster.id,
        config.cluster.nodes.len(),
        config.own_address(),
        config.own_client_address(),
        config.replica.data_dir.display()
    );
    if dev {
        if serve_clients(&config, false, Some(shards_ready), local).is_err() {
            return ExitCode::FAILURE;
        }
    } else if !config.replica.http_address.is_empty() {
        let probe = readiness::replica_probe(
            u128::from(config.cluster.id),
            random_u128(),
            config.replica.id,
            client_addresses(&config),
            shards_ready,
        );
        if start_http(&config.replica.http_address, probe).is_err() {
            return ExitCode::FAILURE;
        }
    }
    for thread in threads {
        // A shard runs until the process ends; one that returns failed to start.
        if thread.join().is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::FAILURE
}

/// What a shard thread shares with the rest of the process.
struct ShardRun {
    shard: u16,
    shards: u16,
    placements: Arc<SharedPlacements>,
    /// Where a gateway in this process takes its links to the shard (`galgo dev`).
    local: Option<Arc<LocalPorts>>,
    started: Arc<std::sync::Barrier>,
    stopping: Arc<shutdown::Shutdown>,
    ready: Arc<readiness::ShardsReadiness>,
}

/// One shard: its runtime, its node half, until the process ends. A shard that cannot start
/// ends the process (a node without one of its shards would silently lose its groups).
fn run_shard(config: Config, run: ShardRun) {
    let shard = run.shard;
    let (outcome, uring) = galgo_storage::file_disk::block_on(async move {
        let node = Node::start(config, shard, run.shards, run.placements, run.local).await?;
        run.started.wait();
        let (stopping, ready) = (run.stopping, run.ready);
        // The shard's tasks run on until the process ends. Everything acknowledged is already
        // durable, so even a kill loses nothing acknowledged; on SIGTERM or SIGINT the shard
        // first hands over the leadership of its groups, so that they do not wait out a
        // heartbeat timeout.
        loop {
            monoio::time::sleep(shutdown::POLL_INTERVAL).await;
            ready.report(shard, node.partitions_not_ready());
            if stopping.requested() {
                node.hand_over_leadership();
                stopping.report_led(shard, node.groups_led());
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), galgo_replica::node::NodeError>(())
    });
    if let Err(error) = outcome {
        eprintln!(
            "galgo: shard {shard}: {error} (runtime: {})",
            if uring { "io_uring" } else { "epoll" }
        );
        std::process::exit(1);
    }
}

/// The configuration in the file at `path` (the embedded dev configuration without one), with
/// the `GALGO_*` variables of `env` over it; a problem is printed and ends the command.
fn load_config(
    path: Option<&std::path::Path>,
    env: Vec<(String, String)>,
) -> Result<Config, ExitCode> {
    let text = match path {
        None => DEV_CONFIG.to_string(),
        Some(path) => std::fs::read_to_string(path).map_err(|error| {
            eprintln!("galgo: cannot read {}: {error}", path.display());
            ExitCode::from(2)
        })?,
    };
    Config::load(&text, env).map_err(|error| {
        eprintln!("galgo: {error}");
        ExitCode::from(2)
    })
}

/// Each node's id and client port (routing clients and gateways connect there).
fn client_addresses(config: &Config) -> Vec<(u8, std::net::SocketAddr)> {
    config
        .cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.client_address.parse().expect("checked: an address")))
        .collect()
}

/// What a gateway process (`galgo gateway`, or inside `galgo dev`) runs: the root user set
/// if the cluster has no user, the Iggy-protocol gateway, and HTTP on `gateway.http_address`.
/// Inside `galgo dev` (`local_shards`) `/readyz` also waits for the node's own partition
/// groups, so a dev server that is still opening its logs is not ready.
fn serve_clients(
    config: &Config,
    verbose: bool,
    local_shards: Option<std::sync::Arc<readiness::ShardsReadiness>>,
    local: Option<Arc<LocalPorts>>,
) -> Result<(), ()> {
    let (cluster, nodes) = (u128::from(config.cluster.id), client_addresses(config));
    let root_nodes = nodes.clone();
    std::thread::spawn(move || set_root_user(cluster, root_nodes));
    start_gateway(config, verbose, local)?;
    let mut gateway = readiness::gateway_probe(cluster, random_u128(), nodes);
    let probe: http::Probe = match local_shards {
        None => gateway,
        Some(shards) => Box::new(move || {
            gateway()?;
            readiness::local_partitions_ready(&shards)
        }),
    };
    start_http(&config.gateway.http_address, probe)
}

/// Starts the Iggy-protocol gateway on `gateway.tcp_address` for the cluster of `config`.
fn start_gateway(config: &Config, verbose: bool, local: Option<Arc<LocalPorts>>) -> Result<(), ()> {
    let listen: std::net::SocketAddr = config
        .gateway
        .tcp_address
        .parse()
        .expect("checked: an address");
    let http: std::net::SocketAddr = config
        .gateway
        .http_address
        .parse()
        .expect("checked: an address");
    let nodes = client_addresses(config);
    let mut gateway = GatewayConfig::new(listen, u128::from(config.cluster.id), nodes);
    gateway.http_port = http.port();
    gateway.verbose = verbose;
    gateway.member_timeout = std::time::Duration::from_millis(config.gateway.member_timeout_ms);
    gateway.local = local;
    let tls = &config.gateway.tls_certificate;
    if !tls.is_empty() {
        let key = std::path::Path::new(&config.gateway.tls_key);
        match galgo_gateway::tls::server_config(std::path::Path::new(tls), key) {
            Ok(server_config) => gateway.tls = Some(server_config),
            Err(error) => {
                eprintln!("galgo: gateway TLS (gateway.tls_certificate, gateway.tls_key): {error}");
                return Err(());
            }
        }
    }
    let transport = if gateway.tls.is_some() { "TLS" } else { "TCP" };
    match galgo_gateway::server::start(gateway) {
        Ok(running) => {
            println!(
                "galgo: gateway (Iggy binary protocol 0.11.0, {transport}) on {}",
                running.address
            );
            Ok(())
        }
        Err(error) => {
            eprintln!("galgo: the gateway cannot listen on {listen}: {error}");
            Err(())
        }
    }
}

/// Serves /livez, /readyz (with `probe`) and /metrics on `address` (checked by the config).
fn start_http(address: &str, probe: http::Probe) -> Result<(), ()> {
    let listen: std::net::SocketAddr = address.parse().expect("checked: an address");
    match http::start(listen, probe, metrics_handle()) {
        Ok(bound) => {
            println!("galgo: HTTP (/livez, /readyz, /metrics) on {bound}");
            Ok(())
        }
        Err(error) => {
            eprintln!("galgo: HTTP cannot listen on {listen}: {error}");
            Err(())
        }
    }
}

/// The process's Prometheus recorder, installed on first use.
fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Request latencies from 100 µs to 30 s.
            const BUCKETS: [f64; 15] = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 5.0, 30.0,
            ];
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                eprintln!("galgo: a metrics recorder was already installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

/// Creates the root user (the first user is root) unless a user exists, and prints what it
/// set. `galgo dev` and every gateway do this at start; the first one to reach the cluster
/// creates root.
fn set_root_user(cluster: u128, nodes: Vec<(u8, std::net::SocketAddr)>) {
    let mut client = RoutingClient::new(cluster, random_u128(), nodes);
    match client.metadata(0, true) {
        Ok((_, metadata)) if !metadata.users.is_empty() => return,
        Ok(_) => {}
        Err(error) => {
            eprintln!("galgo: cannot read the users to set the root user: {error}");
            return;
        }
    }
    let generated = std::env::var("GALGO_ROOT_PASSWORD").is_err();
    let password = std::env::var("GALGO_ROOT_PASSWORD").unwrap_or_else(|_| random_password());
    let hash = match galgo_gateway::credentials::hash_password(password.as_bytes()) {
        Ok(hash) => hash,
        Err(error) => {
            eprintln!("galgo: the root password: {error}");
            return;
        }
    };
    let username = std::env::var("GALGO_ROOT_USERNAME").unwrap_or_else(|_| "root".to_string());
    let op = MetadataOp::CreateUser {
        username: username.clone(),
        password_hash: hash,
        status: UserStatus::Active,
        permissions: None,
    };
    let body = op.encode().expect("a root user encodes");
    match client.call_metadata(body) {
        Ok(reply) => match MetadataReply::decode(&reply.body) {
            Ok(MetadataReply::Applied(_)) if generated => {
                println!("galgo: root user set: username {username}, password {password}")
            }
            Ok(MetadataReply::Applied(_)) => {
                println!(
                    "galgo: root user set: username {username}, password from GALGO_ROOT_PASSWORD"
                )
            }
            Ok(MetadataReply::Refused { reason, .. }) => {
                println!("galgo: root user kept as it was ({reason})")
            }
            Err(error) => eprintln!("galgo: unreadable reply setting the root user: {error}"),
        },
        Err(error) => eprintln!("galgo: setting the root user failed: {error}"),
    }
}

fn random_u128() -> u128 {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    u128::from_le_bytes(bytes).max(1)
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut value = random_u128();
    (0..20)
        .map(|_| {
            let index = (value % ALPHABET.len() as u128) as usize;
            value /= ALPHABET.len() as u128;
            ALPHABET[index] as char
        })
        .collect()
}
