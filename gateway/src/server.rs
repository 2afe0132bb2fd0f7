//! The gateway's Iggy binary-protocol listener: accepts connections up to a limit and serves
//! each on its own thread, in lockstep (one request, one reply), with a frame size limit and an
//! idle timeout. A malformed frame ends its connection with an eviction naming the reason;
//! nothing a client sends reaches stored data unchecked.
//!
//! Metrics (through the `metrics` facade; the process installs the Prometheus recorder):
//! `galgo_gateway_requests_total{command,outcome}` (outcome ok, error or evicted),
//! `galgo_gateway_request_duration_seconds{command}`, `galgo_gateway_received_bytes_total`,
//! `galgo_gateway_sent_bytes_total`, `galgo_gateway_connections` (open),
//! `galgo_gateway_connections_accepted_total` and `galgo_gateway_connections_refused_total`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use galgo_replica::local_port::LocalPorts;
use galgo_replica::routing::RoutingClient;

use crate::clients::{ClientRegistry, Registered};
use crate::codes::{
    command_name, EVICTION_INVALID_REQUEST_BODY, EVICTION_INVALID_REQUEST_BODY_SIZE,
    EVICTION_INVALID_REQUEST_OPERATION,
};
use crate::connection::{Connection, Outcome};
use crate::frame::{eviction, read_request, reply_status, FrameError, HEADER_SIZE};
use crate::metadata_cache::MetadataCache;
use crate::replies::ProcessStats;

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where the Iggy binary protocol listens.
    pub listen: SocketAddr,
    /// The cluster and its nodes' client ports.
    pub cluster: u128,
    pub nodes: Vec<(u8, SocketAddr)>,
    /// The HTTP port GetClusterMetadata reports.
    pub http_port: u16,
    /// Largest request frame, header included (Iggy's own cap is 64 MiB; Galgo takes one
    /// prepare per send).
    pub frame_size_max: u32,
    /// Largest frame before login (a login is small).
    pub login_frame_size_max: u32,
    pub connections_max: u32,
    /// A connection silent this long is closed (the 0.11.0 client pings every 5 s).
    pub idle_timeout: Duration,
    /// Print refusals and errors to stderr.
    pub verbose: bool,
    /// TLS on every connection when set (`tls::server_config`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Consumer-group members of this gateway are touched every sixth of this; members of a
    /// gateway that stopped leave their groups after it (`member_keeper`).
    pub member_timeout: Duration,
    /// The node of this process (`galgo dev`), reached through in-process links, not TCP.
    pub local: Option<Arc<LocalPorts>>,
}

impl GatewayConfig {
    /// One `key = value` line per setting, for snapshot files; TLS shows only whether it is on.
    pub fn summary(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(id, address)| format!("{id}@{address}"))
            .collect();
        format!(
            "listen = {}\ncluster = {:032x}\nnodes = {}\nhttp_port = {}\nframe_size_max = {}\n\
             login_frame_size_max = {}\nconnections_max = {}\nidle_timeout_ms = {}\n\
             member_timeout_ms = {}\ntls = {}\nverbose = {}\nlocal_links = {}\n",
            self.listen,
            self.cluster,
            nodes.join(", "),
            self.http_port,
            self.frame_size_max,
            self.login_frame_size_max,
            self.connections_max,
            self.idle_timeout.as_millis(),
            self.member_timeout.as_millis(),
            if self.tls.is_some() { "on" } else { "off" },
            self.verbose,
            if self.local.is_some() { "on" } else { "off" },
        )
    }

    pub fn new(listen: SocketAddr, cluster: u128, nodes: Vec<(u8, SocketAddr)>) -> GatewayConfig {
        GatewayConfig {
            listen,
            cluster,
            nodes,
            http_port: 3000,
            // A send carries one batch of at most one prepare (1 MiB), with room for its framing.
            frame_size_max: 2 << 20,
            login_frame_size_max: 4096,
            connections_max: 1024,
            idle_timeout: Duration::from_secs(60),
            verbose: false,
            tls: None,
            member_timeout: Duration::from_secs(30),
            local: None,
        }
    }

    /// A routing client for this gateway's cluster, with a new client identity.
    pub fn routing_client(&self) -> RoutingClient {
        let client = RoutingClient::new(self.cluster, random_client_id(), self.nodes.clone());
        match &self.local {
            Some(local) => client.with_local_ports(local.clone()),
            None => client,
        }
    }
}

/// What all connections share.
pub struct Shared {
    pub version: String,
    pub advertised: SocketAddr,
    pub http_port: u16,
    pub sessions: AtomicU64,
    pub connections: AtomicU32,
    pub clients: Arc<ClientRegistry>,
    pub metadata_cache: MetadataCache,
    /// The effective configuration as text, for snapshot files (no secrets).
    pub config_summary: String,
    started: Instant,
    start_time_us: u64,
    verbose: bool,
}

impl Shared {
    pub fn log(&self, line: &str) {
        if self.verbose {
            eprintln!("galgo gateway: {line}");
        }
    }

    pub fn process_stats(&self) -> ProcessStats {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = |text: &str, key: &str| -> u64 {
            text.lines()
                .find(|line| line.starts_with(key))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        ProcessStats {
            process_id: std::process::id(),
            memory_usage: kib(&status, "VmRSS:") * 1024,
            total_memory: kib(&meminfo, "MemTotal:") * 1024,
            available_memory: kib(&meminfo, "MemAvailable:") * 1024,
            run_time_us: self.started.elapsed().as_micros() as u64,
            start_time_us: self.start_time_us,
            clients: self.connections.load(Ordering::Relaxed),
            hostname: read("/proc/sys/kernel/hostname"),
            os_version: read("/proc/sys/kernel/osrelease"),
            server_version: self.version.clone(),
            server_semver: semver(env!("CARGO_PKG_VERSION")),
            threads: kib(&status, "Threads:") as u32,
        }
    }
}

/// `MMMmmmppp` of a `major.minor.patch` version (0 if it is not one).
fn semver(version: &str) -> u32 {
    let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [major, minor, patch] if *minor < 1000 && *patch < 1000 => {
            major * 1_000_000 + minor * 1000 + patch
        }
        _ => 0,
    }
}

/// A running gateway listener.
pub struct Gateway {
    pub address: SocketAddr,
}

/// Binds the listener and serves it on a thread of its own.
pub fn start(config: GatewayConfig) -> std::io::Result<Gateway> {
    assert!(!config.nodes.is_empty());
    assert!(config.frame_size_max >= 256);
    let listener = TcpListener::bind(config.listen)?;
    let address = listener.local_addr()?;
    let shared = Arc::new(Shared {
        version: format!("galgo {}", env!("CARGO_PKG_VERSION")),
        advertised: address,
        http_port: config.http_port,
        sessions: AtomicU64::new(0),
        connections: AtomicU32::new(0),
        clients: Arc::new(ClientRegistry::default()),
        metadata_cache: MetadataCache::default(),
        config_summary: config.summary(),
        started: Instant::now(),
        start_time_us: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
        verbose: config.verbose,
    });
    let keeper = config.routing_client();
    let (keeper_shared, timeout) = (shared.clone(), config.member_timeout);
    std::thread::Builder::new()
        .name("galgo-gateway-members".to_string())
        .spawn(move || crate::member_keeper::run(keeper_shared, keeper, timeout))?;
    std::thread::Builder::new()
        .name("galgo-gateway".to_string())
        .spawn(move || accept(listener, config, shared))?;
    Ok(Gateway { address })
}

fn accept(listener: TcpListener, config: GatewayConfig, shared: Arc<Shared>) {
    let mut number = 0u32;
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            continue;
        };
        if shared.connections.load(Ordering::Relaxed) >= config.connections_max {
            shared.log("connection refused: at the connection limit");
            metrics::counter!("galgo_gateway_connections_refused_total").increment(1);
            drop(stream);
            continue;
        }
        // The next number no open connection holds (at most `connections_max` are held).
        for _ in 0..=config.connections_max {
            number = number.wrapping_add(1).max(1);
            if !shared.clients.holds(number) {
                break;
            }
        }
        let address = stream
            .peer_addr()
            .map(|peer| peer.to_string())
            .unwrap_or_default();
        // Counted and registered until the guards drop: when the connection ends, or its
        // thread never starts.
        let counted = Counted::new(shared.clone());
        let member = random_client_id();
        let registered = Registered::new(shared.clients.clone(), number, member, address);
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("galgo-gateway-{number}"))
            .spawn(move || {
                let shared = counted.shared.clone();
                serve(stream, &config, shared, number, member);
                drop(registered);
                drop(counted);
            });
        if spawned.is_err() {
            shared.log("connection dropped: its thread did not start");
        }
    }
}

fn serve(
    mut stream: TcpStream,
    config: &GatewayConfig,
    shared: Arc<Shared>,
    number: u32,
    member: u128,
) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    // A client that stops reading ends its connection after the idle timeout too.
    if stream.set_read_timeout(Some(config.idle_timeout)).is_err()
        || stream.set_write_timeout(Some(config.idle_timeout)).is_err()
    {
        return;
    }
    let routing = config.routing_client();
    let mut connection = Connection::new(shared.clone(), routing, peer, number, member);
    match &config.tls {
        None => serve_requests(&mut stream, config, &shared, &mut connection, peer),
        Some(tls) => match rustls::ServerConnection::new(tls.clone()) {
            // The handshake runs on the first read, under the same idle timeout.
            Ok(session) => {
                let mut stream = rustls::StreamOwned::new(session, stream);
                serve_requests(&mut stream, config, &shared, &mut connection, peer);
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
            Err(error) => shared.log(&format!("{peer}: TLS session not started: {error}")),
        },
    }
    connection.close();
}

fn serve_requests(
    stream: &mut (impl Read + Write),
    config: &GatewayConfig,
    shared: &Shared,
    connection: &mut Connection,
    peer: std::net::SocketAddr,
) {
    loop {
        let size_max = if connection.logged_in() {
            config.frame_size_max
        } else {
            config.login_frame_size_max
        };
        let mut request = match read_request(stream, size_max) {
            Ok(request) => {
                metrics::counter!("galgo_gateway_received_bytes_total")
                    .increment((HEADER_SIZE + request.body.len()) as u64);
                request
            }
            Err(FrameError::Closed) | Err(FrameError::Io(_)) => return,
            Err(error) => {
                shared.log(&format!("{peer}: bad frame: {error:?}"));
                let reason = match error {
                    FrameError::BadSize(_) => EVICTION_INVALID_REQUEST_BODY_SIZE,
                    FrameError::BadChecksum => EVICTION_INVALID_REQUEST_BODY,
                    _ => EVICTION_INVALID_REQUEST_OPERATION,
                };
                let _ = stream.write_all(&eviction(0, reason, None));
                return;
            }
        };
        let command = command_name(request.operation, request.code);
        let started = Instant::now();
        let outcome = connection.handle(&mut request);
        let (frame, result) = match &outcome {
            Outcome::Reply(frame) if reply_status(frame) == 0 => (frame, "ok"),
            Outcome::Reply(frame) => (frame, "error"),
            Outcome::Evict(frame) => (frame, "evicted"),
        };
        metrics::histogram!("galgo_gateway_request_duration_seconds", "command" => command)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("galgo_gateway_requests_total", "command" => command, "outcome" => result)
            .increment(1);
        metrics::counter!("galgo_gateway_sent_bytes_total").increment(frame.len() as u64);
        let written = stream.write_all(frame);
        if written.is_err() || matches!(outcome, Outcome::Evict(_)) {
            return;
        }
    }
}

/// One open connection in `Shared::connections`, for as long as it lives (a panic included).
struct Counted {
    shared: Arc<Shared>,
}

impl Counted {
    fn new(shared: Arc<Shared>) -> Counted {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("galgo_gateway_connections_accepted_total").increment(1);
        metrics::gauge!("galgo_gateway_connections").increment(1.0);
        Counted { shared }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("galgo_gateway_connections").decrement(1.0);
    }
}

fn random_client_id() -> u128 {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    u128::from_le_bytes(bytes).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_pack_as_iggy_reads_them() {
        assert_eq!(semver("0.1.0"), 1000);
        assert_eq!(semver("0.9.0"), 9000);
        assert_eq!(semver("1.2.3"), 1_002_003);
        assert_eq!(semver("dev"), 0);
    }
}
