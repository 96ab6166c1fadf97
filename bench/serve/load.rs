//! The load generator: concurrent clients (threads with blocking sockets) sending GET requests,
//! one connection per request or kept alive, and the latencies they saw.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new connection per request, `Connection: close`: what curl and `psi client` do.
    PerRequest = 0,
    /// One connection per client for all its requests.
    KeepAlive = 1,
}

pub const MODES: [Mode; 2] = [Mode::PerRequest, Mode::KeepAlive];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::PerRequest => "per request",
            Mode::KeepAlive => "keep-alive",
        }
    }
}

pub struct Stats {
    pub latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// The `p` quantile (0 to 1) of `sorted`, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `clients` threads sending GET requests for `targets` in turn for `run_for`; every answer
/// must be a 200.
pub fn load(
    socket: &Path,
    targets: &[String],
    mode: Mode,
    clients: usize,
    run_for: Duration,
) -> Stats {
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let socket = socket.to_path_buf();
            let targets = targets.to_vec();
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(100_000);
                let mut conn = None;
                // Clients spread over the targets, so they do not ask for the same ID at once.
                let mut next = client * targets.len() / clients;
                while started.elapsed() < run_for {
                    let target = &targets[next % targets.len()];
                    next += 1;
                    let t = Instant::now();
                    match mode {
                        Mode::PerRequest => once(&socket, target),
                        Mode::KeepAlive => {
                            let stream = conn.get_or_insert_with(|| {
                                UnixStream::connect(&socket).expect("connect")
                            });
                            kept_alive(stream, target);
                        }
                    }
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    latencies.sort();
    Stats { latencies, elapsed }
}

fn once(socket: &Path, target: &str) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    let head = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::with_capacity(256);
    stream.read_to_end(&mut reply).unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// One request on a kept-alive connection: reads exactly the head and `Content-Length`
/// bytes of body (psi and the floor server answer every request with a length).
fn kept_alive(stream: &mut UnixStream, target: &str) {
    let head = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::with_capacity(256);
    let mut buf = [0u8; 4096];
    let (head_end, length) = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed a kept-alive connection");
        reply.extend_from_slice(&buf[..n]);
        if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap())
                .expect("Content-Length");
            break (end + 4, length);
        }
    };
    while reply.len() < head_end + length {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed mid-body");
        reply.extend_from_slice(&buf[..n]);
    }
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}
