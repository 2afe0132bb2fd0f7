//! The HTTP endpoints of a galgo process (a gateway, `galgo dev`, or a replica with
//! `replica.http_address` set): `GET /livez` (the process answers), `GET /readyz` (a readiness
//! probe passes) and `GET /metrics` (Prometheus text). HTTP/1.1, one request per connection,
//! a thread per connection up to `CONNECTIONS_MAX`, requests of at most `REQUEST_SIZE_MAX`
//! bytes read within `READ_TIMEOUT`. Anything else gets a 4xx and the connection closes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

/// Open HTTP connections at most; more are closed at once.
const CONNECTIONS_MAX: u32 = 64;
/// Request line and headers, at most (a probe or a scrape sends a few hundred bytes).
const REQUEST_SIZE_MAX: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the process is ready to serve: `Err` says why not.
pub type Probe = Box<dyn FnMut() -> Result<(), String> + Send>;

struct Shared {
    probe: Mutex<Probe>,
    metrics: PrometheusHandle,
    connections: AtomicU32,
}

/// Binds `listen` and serves the endpoints on threads of their own; the bound address.
pub fn start(
    listen: SocketAddr,
    probe: Probe,
    metrics: PrometheusHandle,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    let address = listener.local_addr()?;
    let shared = Arc::new(Shared {
        probe: Mutex::new(probe),
        metrics,
        connections: AtomicU32::new(0),
    });
    std::thread::Builder::new()
        .name("galgo-http".to_string())
        .spawn(move || accept(listener, shared))?;
    Ok(address)
}

fn accept(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            continue;
        };
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        let connection_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("galgo-http-connection".to_string())
            .spawn(move || {
                serve(stream, &connection_shared);
                connection_shared.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    if stream.set_read_timeout(Some(READ_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(READ_TIMEOUT)).is_err()
    {
        return;
    }
    let response = match read_head(&mut stream) {
        Ok(head) => respond(&head, shared),
        Err(status) => Response::text(status, status_text(status)),
    };
    let _ = stream.write_all(&response.encode());
}

/// The request line and headers, up to the blank line; an HTTP status when they cannot be read.
fn read_head(stream: &mut impl Read) -> Result<String, u16> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_blank_line(&head) {
            head.truncate(end);
            return String::from_utf8(head).map_err(|_| 400);
        }
        if head.len() >= REQUEST_SIZE_MAX {
            return Err(431);
        }
        let room = (REQUEST_SIZE_MAX - head.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) | Err(_) => return Err(400),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.status,
            status_text(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn respond(head: &str, shared: &Shared) -> Response {
    let request_line = head.lines().next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "a request line is METHOD TARGET VERSION\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "HTTP/1.x only\n");
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return Response::text(405, "GET or HEAD only\n");
    }
    let path = target.split('?').next().unwrap_or("");
    let mut response = match path {
        "/livez" => Response::text(200, "live\n"),
        "/readyz" => {
            let outcome = match shared.probe.lock() {
                Ok(mut probe) => probe(),
                Err(_) => Err("the readiness probe panicked".to_string()),
            };
            match outcome {
                Ok(()) => Response::text(200, "ready\n"),
                Err(why) => Response::text(503, format!("not ready: {why}\n")),
            }
        }
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: shared.metrics.render(),
            head_only: false,
        },
        _ => Response::text(404, "the endpoints are /livez, /readyz and /metrics\n"),
    };
    response.head_only = head_only;
    response
}

/// `GET path` from the HTTP endpoint at `address` (a health check's client): the status and
/// the body, within `READ_TIMEOUT` and `REQUEST_SIZE_MAX` bytes of answer head.
pub fn get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, READ_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: {address}\r\n\r\n").as_bytes())?;
    let mut answer = Vec::new();
    // A readiness answer is a line; a metrics page may be long, but a check needs its start.
    stream.take(1 << 20).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn shared(ready: bool) -> Shared {
        let recorder = PrometheusBuilder::new().build_recorder();
        Shared {
            probe: Mutex::new(Box::new(move || {
                if ready {
                    Ok(())
                } else {
                    Err("no metadata primary".to_string())
                }
            })),
            metrics: recorder.handle(),
            connections: AtomicU32::new(0),
        }
    }

    fn answer(head: &str, shared: &Shared) -> String {
        String::from_utf8(respond(head, shared).encode()).unwrap()
    }

    #[test]
    fn endpoints_answer() {
        let ready = shared(true);
        assert!(answer("GET /livez HTTP/1.1\r\nhost: x", &ready).starts_with("HTTP/1.1 200"));
        assert!(answer("GET /readyz HTTP/1.1", &ready).ends_with("ready\n"));
        let not_ready = shared(false);
        let text = answer("GET /readyz?verbose HTTP/1.1", &not_ready);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.ends_with("not ready: no metadata primary\n"));
        let metrics = answer("GET /metrics HTTP/1.0", &ready);
        assert!(metrics.contains("content-type: text/plain; version=0.0.4"));
    }

    #[test]
    fn bad_requests_get_4xx() {
        let ready = shared(true);
        assert!(answer("GET /nope HTTP/1.1", &ready).starts_with("HTTP/1.1 404"));
        let post = answer("POST /livez HTTP/1.1", &ready);
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("allow: GET, HEAD"));
        assert!(answer("GET /livez", &ready).starts_with("HTTP/1.1 400"));
        assert!(answer("GET /livez SPDY/3", &ready).starts_with("HTTP/1.1 400"));
        assert!(answer("", &ready).starts_with("HTTP/1.1 400"));
        let head = answer("HEAD /livez HTTP/1.1", &ready);
        assert!(head.contains("content-length: 5") && head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_client_reads_the_answer() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let address = start(
            "127.0.0.1:0".parse().unwrap(),
            Box::new(|| Err("starting".to_string())),
            recorder.handle(),
        )
        .unwrap();
        assert_eq!(get(address, "/livez").unwrap(), (200, "live\n".to_string()));
        let (status, body) = get(address, "/readyz").unwrap();
        assert_eq!((status, body.as_str()), (503, "not ready: starting\n"));
    }

    #[test]
    fn request_heads_are_bounded() {
        let mut complete: &[u8] = b"GET /livez HTTP/1.1\r\nhost: a\r\n\r\nignored";
        assert_eq!(
            read_head(&mut complete).unwrap(),
            "GET /livez HTTP/1.1\r\nhost: a"
        );
        let endless = vec![b'a'; REQUEST_SIZE_MAX * 2];
        assert_eq!(read_head(&mut endless.as_slice()), Err(431));
        let mut cut: &[u8] = b"GET /livez HTTP/1.1\r\n";
        assert_eq!(read_head(&mut cut), Err(400));
    }
}
