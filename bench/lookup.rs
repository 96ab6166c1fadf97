//! Load generator for `psi serve`: requests over the Unix socket, one connection per request
//! as Podman's curl driver makes them, from C concurrent clients for a fixed time.
//!
//! Reproduce the README figures with `cargo bench --bench lookup` (needs systemd-creds).
//! It starts the release `psi serve` on a temp socket with a temp host key, seals one value,
//! and prints a table of throughput and latency percentiles per scenario.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long each scenario runs; bounded so the benchmark always stops by itself.
const RUN_FOR: Duration = Duration::from_secs(3);

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("credential.secret");
    let socket = dir.path().join("psi.sock");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}/state\nsocket_path: {}\n",
            dir.path().display(),
            socket.display()
        ),
    )
    .expect("config");
    let psi = env!("CARGO_BIN_EXE_psi");

    let mut store = Command::new(psi)
        .args([
            "-c",
            config.to_str().unwrap(),
            "--log-level",
            "warn",
            "creds",
            "store",
            "bench",
        ])
        .env("SYSTEMD_CREDENTIAL_SECRET", &secret)
        .stdin(Stdio::piped())
        .spawn()
        .expect("psi creds store");
    std::io::Write::write_all(store.stdin.as_mut().unwrap(), b"benchmark-value").unwrap();
    drop(store.stdin.take());
    assert!(
        store.wait().unwrap().success(),
        "psi creds store failed (is systemd-creds installed?)"
    );

    let mut serve = Command::new(psi)
        .args([
            "-c",
            config.to_str().unwrap(),
            "--log-level",
            "warn",
            "serve",
        ])
        .env("SYSTEMD_CREDENTIAL_SECRET", &secret)
        .spawn()
        .expect("psi serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "psi serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("| scenario | clients | requests/s | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, target) in [
        ("GET /healthz", "/healthz"),
        ("GET /lookup (systemd-creds)", "/lookup/bench"),
    ] {
        for clients in [1, 16] {
            let stats = runtime.block_on(load(&socket, target, clients));
            println!("{stats_line}", stats_line = stats.row(name, clients));
        }
    }
    let _ = Command::new("kill").arg(serve.id().to_string()).status();
    let _ = serve.wait();
}

struct Stats {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn row(mut self, name: &str, clients: usize) -> String {
        self.latencies.sort();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            format!("{:.2} ms", self.latencies[i].as_secs_f64() * 1000.0)
        };
        let rate = self.latencies.len() as f64 / self.elapsed.as_secs_f64();
        format!(
            "| {name} | {clients} | {rate:.0} | {} | {} | {} |",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        )
    }
}

async fn load(socket: &Path, target: &'static str, clients: usize) -> Stats {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let socket: PathBuf = socket.to_path_buf();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < RUN_FOR {
                let t = Instant::now();
                request(&socket, target).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Stats {
        latencies,
        elapsed: started.elapsed(),
    }
}

async fn request(socket: &Path, target: &str) {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    let head = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reply = Vec::with_capacity(256);
    stream.read_to_end(&mut reply).await.unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}
