//! Load generator for `psi serve`, and what Podman pays per secret: `cargo bench --bench serve`
//! reproduces every figure in README.md's "Benchmarks" section.
//!
//! It starts the release `psi serve` on a temporary socket with systemd-creds on a temporary
//! host key and an encrypted cache of 10,000 entries (TPM backend: the key in a credentials
//! directory, as `LoadCredentialEncrypted=` delivers it, and one mapping file per entry); the
//! log level is psi's default unless `PSI_LOG_LEVEL` says otherwise. It prints Markdown
//! tables:
//!
//! 1. start-up: spawn to the first `200` from `/healthz`;
//! 2. load: from 1, 4 and 16 concurrent clients (threads with blocking sockets), either one
//!    connection per request as curl and `psi client` make them, or HTTP keep-alive;
//!    lookups/s, latency percentiles, the server's CPU time per request (utime + stime of
//!    the serve process from `/proc/<pid>/stat`, before and after) and its resident memory
//!    (`VmRSS`) afterwards;
//! 3. the driver's cost per secret as Podman pays it: `sh -c "<lookup command>"` with curl
//!    and with `psi client`, once and for a container with 50 secrets (50 in sequence).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use psi::cache::{Backend, Entries};
use psi::secret::{Mapping, SecretValue};

/// Requests in flight per scenario row, as concurrent clients.
const CLIENTS: [usize; 3] = [1, 4, 16];
/// Driver invocations measured per row of the per-secret table.
const INVOCATIONS: usize = 200;
/// Secrets of the container in the per-container row.
const CONTAINER_SECRETS: usize = 50;
/// Entries of the encrypted cache, each with its mapping file.
const CACHE_ENTRIES: usize = 10_000;

fn main() {
    let bench = Bench::new();
    let psi = env!("CARGO_BIN_EXE_psi");

    println!("## psi serve start-up (spawn to first 200 from /healthz, 7 starts)\n");
    for cache in [Cache::Off, Cache::On] {
        let mut startups: Vec<Duration> = (0..7)
            .map(|_| {
                let (serve, took) = bench.start_serve(cache);
                stop(serve);
                took
            })
            .collect();
        startups.sort();
        println!(
            "- {}: median {}, fastest {}, slowest {}",
            cache.name(),
            ms(startups[3]),
            ms(startups[0]),
            ms(startups[6])
        );
    }

    let serves = [Cache::Off, Cache::On].map(|cache| bench.start_serve(cache).0);
    let pid = |cache: Cache| serves[cache as usize].id();
    println!(
        "\n## Load on psi serve\n\n/healthz/cache: {}\n",
        String::from_utf8_lossy(&get(&bench.socket(Cache::On), "/healthz/cache"))
    );
    println!("| scenario | connection | clients | requests/s | p50 | p99 | p99.9 | server CPU per request | serve RSS |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for scenario in bench.scenarios() {
        let pid = pid(scenario.cache);
        for mode in scenario.modes {
            for clients in CLIENTS {
                let before = cpu_time(pid);
                let stats = load(
                    &bench.socket(scenario.cache),
                    &scenario.targets,
                    *mode,
                    clients,
                    scenario.run_for,
                );
                let cpu = cpu_time(pid) - before;
                println!(
                    "| {} | {} | {clients} | {:.0} | {} | {} | {} | {:.1} µs | {:.1} MiB |",
                    scenario.name,
                    mode.name(),
                    stats.rate(),
                    ms(stats.percentile(0.50)),
                    ms(stats.percentile(0.99)),
                    ms(stats.percentile(0.999)),
                    cpu.as_secs_f64() * 1e6 / stats.latencies.len() as f64,
                    rss_kib(pid) as f64 / 1024.0,
                );
            }
        }
    }

    println!("\n## Per secret as Podman pays it (sh -c \"<lookup command>\", sequential)\n");
    println!("| lookup | client | per secret (mean) | p50 | p99 | container with {CONTAINER_SECRETS} secrets |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, cache, id, ok) in [
        ("cache hit", Cache::On, cache_id(0), true),
        ("systemd-creds", Cache::Off, "bench".to_owned(), true),
        ("no mapping (404)", Cache::Off, "absent".to_owned(), false),
    ] {
        let socket = bench.socket(cache);
        let socket = socket.display();
        let curl = format!(
            "curl -sf --unix-socket {socket} http://localhost/lookup/$SECRET_ID >/dev/null"
        );
        let client = format!("{psi} client lookup --socket {socket} >/dev/null");
        for (client_name, command) in [("curl", &curl), ("psi client", &client)] {
            let mut each = driver_runs(command, &id, ok, INVOCATIONS);
            let mean = each.iter().sum::<Duration>() / each.len() as u32;
            each.sort();
            let started = Instant::now();
            driver_runs(command, &id, ok, CONTAINER_SECRETS);
            let container = started.elapsed();
            println!(
                "| {name} | {client_name} | {} | {} | {} | {} |",
                ms(mean),
                ms(each[each.len() / 2]),
                ms(each[each.len() * 99 / 100]),
                ms(container)
            );
        }
    }
    serves.into_iter().for_each(stop);
}

/// The two `psi serve` set-ups: without a cache (every lookup asks the provider) and with the
/// 10,000-entry encrypted cache. They share the state directory and its mappings.
#[derive(Debug, Clone, Copy)]
enum Cache {
    Off = 0,
    On = 1,
}

impl Cache {
    fn name(self) -> &'static str {
        match self {
            Cache::Off => "without a cache",
            Cache::On => "with 10,000 cache entries",
        }
    }

    fn file_stem(self) -> &'static str {
        match self {
            Cache::Off => "plain",
            Cache::On => "cached",
        }
    }
}

/// The temporary directory, configurations and sealed values every run shares.
struct Bench {
    dir: tempfile::TempDir,
    host_key: PathBuf,
    credentials: PathBuf,
}

struct Scenario {
    name: &'static str,
    cache: Cache,
    /// Requested in turn, each client starting at its own offset.
    targets: Vec<String>,
    modes: &'static [Mode],
    run_for: Duration,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let bench = Bench {
            host_key: dir.path().join("credential.secret"),
            credentials: dir.path().join("credentials"),
            dir,
        };
        for cache in [Cache::Off, Cache::On] {
            let enabled = match cache {
                Cache::Off => "",
                Cache::On => "cache:\n  enabled: true\n  backend: tpm\n",
            };
            std::fs::write(
                bench.config(cache),
                format!(
                    "state_dir: {}/state\nsocket_path: {}\n{enabled}",
                    bench.dir.path().display(),
                    bench.socket(cache).display()
                ),
            )
            .expect("config");
        }
        bench.write_cache();
        let mut store = bench
            .psi(
                Cache::Off,
                &["--log-level", "warn", "creds", "store", "bench"],
            )
            .stdin(Stdio::piped())
            .spawn()
            .expect("psi creds store");
        store
            .stdin
            .take()
            .unwrap()
            .write_all(b"benchmark-value")
            .unwrap();
        assert!(
            store.wait().unwrap().success(),
            "psi creds store failed (is systemd-creds installed?)"
        );
        bench
    }

    fn config(&self, cache: Cache) -> PathBuf {
        self.dir.path().join(format!("{}.yaml", cache.file_stem()))
    }

    fn socket(&self, cache: Cache) -> PathBuf {
        self.dir.path().join(format!("{}.sock", cache.file_stem()))
    }

    fn psi(&self, cache: Cache, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_psi"));
        cmd.arg("-c")
            .arg(self.config(cache))
            .args(args)
            .env("SYSTEMD_CREDENTIAL_SECRET", &self.host_key)
            .env("CREDENTIALS_DIRECTORY", &self.credentials)
            .env_remove("PSI_SOCKET_TOKEN");
        cmd
    }

    /// `CACHE_ENTRIES` systemd-creds mappings (their blobs are never decrypted: every lookup
    /// is a cache hit) and `cache.enc` holding a 64-byte value for each, under a random key.
    fn write_cache(&self) {
        let state = self.dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&self.credentials).unwrap();
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key).unwrap();
        std::fs::write(self.credentials.join(psi::cache::KEY_CREDENTIAL), key).unwrap();
        let mut entries = Entries::empty();
        for i in 0..CACHE_ENTRIES {
            let name = format!("cached-{i}");
            let mapping = Mapping::new("systemd-creds", &[("name", &name), ("blob", "AAAA")]);
            std::fs::write(state.join(cache_id(i)), mapping.to_bytes()).unwrap();
            entries.insert(
                entries.digest(&mapping),
                SecretValue::new(format!("{i:064}").into_bytes()),
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(psi::cache::save(
                &psi::state::StateDir::new(&state).cache_path(),
                &Backend::Tpm(key.into()),
                &entries,
            ))
            .expect("cache.enc");
    }

    /// What is measured under load. The systemd-creds lookup starts one `systemd-creds`
    /// process per request (about 8 ms), so a few seconds give enough samples.
    fn scenarios(&self) -> Vec<Scenario> {
        vec![
            Scenario {
                name: "GET /healthz",
                cache: Cache::Off,
                targets: vec!["/healthz".into()],
                modes: &[Mode::PerRequest, Mode::KeepAlive],
                run_for: Duration::from_secs(2),
            },
            Scenario {
                name: "lookup, systemd-creds",
                cache: Cache::Off,
                targets: vec!["/lookup/bench".into()],
                modes: &[Mode::PerRequest],
                run_for: Duration::from_secs(2),
            },
            Scenario {
                name: "lookup, cache hit (10,000 entries)",
                cache: Cache::On,
                targets: (0..CACHE_ENTRIES)
                    .map(|i| format!("/lookup/{}", cache_id(i)))
                    .collect(),
                modes: &[Mode::PerRequest, Mode::KeepAlive],
                run_for: Duration::from_secs(3),
            },
        ]
    }

    /// Starts `psi serve` and returns it with the time from spawn to the first 200 from
    /// `/healthz`. Logs go to a file in the temp directory, as they would to journald.
    fn start_serve(&self, cache: Cache) -> (Child, Duration) {
        let log = self.dir.path().join(format!("{}.log", cache.file_stem()));
        let log = std::fs::File::create(log).unwrap();
        let started = Instant::now();
        let mut child = self
            .psi(cache, &["serve"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("psi serve");
        let deadline = started + Duration::from_secs(10);
        loop {
            if healthy(&self.socket(cache)) {
                return (child, started.elapsed());
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("psi serve exited with {status}");
            }
            assert!(Instant::now() < deadline, "psi serve did not start");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// The Podman-style ID (25 hex digits) of cache entry `i`.
fn cache_id(i: usize) -> String {
    format!("{i:025x}")
}

/// The body of `GET target`, whatever the status.
fn get(socket: &Path, target: &str) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).expect("connect");
    let head = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let body = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| i + 4);
    reply.split_off(body)
}

fn healthy(socket: &Path) -> bool {
    UnixStream::connect(socket)
        .ok()
        .and_then(|mut stream| {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).ok()?;
            Some(reply.starts_with(b"HTTP/1.1 200"))
        })
        .unwrap_or(false)
}

fn stop(mut serve: Child) {
    let pid = nix::unistd::Pid::from_raw(serve.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = serve.wait();
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// A new connection per request, `Connection: close`: what curl and `psi client` do.
    PerRequest,
    /// One connection per client for all its requests.
    KeepAlive,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::PerRequest => "per request",
            Mode::KeepAlive => "keep-alive",
        }
    }
}

struct Stats {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

/// `clients` threads sending GET requests for `targets` in turn for `run_for`; every answer
/// must be a 200.
fn load(socket: &Path, targets: &[String], mode: Mode, clients: usize, run_for: Duration) -> Stats {
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
/// bytes of body (psi answers every request with a length).
fn kept_alive(stream: &mut UnixStream, target: &str) {
    let head = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::with_capacity(256);
    let mut buf = [0u8; 4096];
    let (head_end, length) = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "psi serve closed a kept-alive connection");
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
        assert!(n > 0, "psi serve closed mid-body");
        reply.extend_from_slice(&buf[..n]);
    }
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// Runs `sh -c command` `times` times in sequence with `SECRET_ID=id`, as Podman's shell
/// driver does, and returns each wall time. `ok`: whether the lookup must succeed.
fn driver_runs(command: &str, id: &str, ok: bool, times: usize) -> Vec<Duration> {
    (0..times)
        .map(|_| {
            let started = Instant::now();
            let status = Command::new("/bin/sh")
                .args(["-c", command])
                .env("SECRET_ID", id)
                .stderr(Stdio::null())
                .status()
                .expect("sh");
            let took = started.elapsed();
            assert_eq!(status.success(), ok, "{command}: {status}");
            took
        })
        .collect()
}

/// utime + stime of process `pid` (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
