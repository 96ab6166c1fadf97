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
//!    (`VmRSS`) afterwards. The floor server (`bench/floor/server.rs`: one thread, epoll, a
//!    fixed answer) takes the same load in the same run, each of its rows right before psi's
//!    rows with the same connection mode and clients, and every psi row says how far it is
//!    from the floor;
//! 3. the driver's cost per secret as Podman pays it (`serve/driver.rs`): `sh -c "<lookup
//!    command>"` with a shell builtin, the floor client (`bench/floor/client.rs`), `psi-client`
//!    (built as shipped, `cargo build-psi-client`), `psi client` and curl, interleaved, once
//!    and for a container with 50 secrets (50 in sequence), each against the floor client;
//! 4. memory (printed after the start-up table): a fresh serve's `VmRSS` idle, after a minute
//!    of cache-hit load from 16 clients and 15 s after it, and its peak.
//!
//! `cargo bench --bench serve -- load memory` prints only the tables named; `profile` and
//! `profile-keep-alive` hold a cache-hit load for 30 s for `perf` (README's cost model).
//!
//! The floor programs are built by the bench with the cargo that runs it (`serve/floor.rs`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use psi::cache::{Backend, Entries};
use psi::secret::{Mapping, SecretValue};

// In bench/serve/: a bench's root module resolves its modules beside it, in bench/.
#[path = "serve/driver.rs"]
mod driver;
#[path = "serve/floor.rs"]
mod floor;
#[path = "serve/load.rs"]
mod load;

use load::{load, Mode, Stats, MODES};

/// Requests in flight per scenario row, as concurrent clients.
const CLIENTS: [usize; 3] = [1, 4, 16];
/// Entries of the encrypted cache, each with its mapping file.
const CACHE_ENTRIES: usize = 10_000;

/// The tables, by the name that picks them: `cargo bench --bench serve -- load` prints only
/// the load table (any of them, in any order); no name prints the first four. `profile`
/// is for a profiler, not a table: see [`profile`].
const TABLES: [&str; 6] = [
    "start-up",
    "load",
    "driver",
    "memory",
    "profile",
    "profile-keep-alive",
];

fn main() {
    // cargo passes `--bench`; the rest are table names.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if let Some(unknown) = chosen.iter().find(|c| !TABLES.contains(&c.as_str())) {
        eprintln!(
            "unknown table {unknown:?}; the tables are {}",
            TABLES.join(", ")
        );
        std::process::exit(2);
    }
    let wanted = |table: &str| {
        (chosen.is_empty() && !table.starts_with("profile")) || chosen.iter().any(|c| c == table)
    };
    let floor = floor::Floor::build();
    let bench = Bench::new();
    if wanted("start-up") {
        start_up(&bench);
    }
    // A serve of its own, before the others take the sockets.
    if wanted("memory") {
        memory(&bench);
    }
    let serves = [Cache::Off, Cache::On].map(|cache| bench.start_serve(cache).0);
    if wanted("load") {
        let floors = MODES.map(|mode| floor.start_server(&bench.floor_socket(mode), mode));
        println!(
            "\n## Load on psi serve and on the floor server\n\n/healthz/cache: {}\n",
            String::from_utf8_lossy(&get(&bench.socket(Cache::On), "/healthz/cache"))
        );
        load_table(&bench, |server, mode| match server {
            Server::Psi(cache) => (serves[cache as usize].id(), bench.socket(cache)),
            Server::Floor => (floors[mode as usize].id(), bench.floor_socket(mode)),
        });
        drop(floors);
    }
    if wanted("driver") {
        driver::table(&driver_lookups(&bench, &floor));
    }
    for (table, mode) in [
        ("profile", Mode::PerRequest),
        ("profile-keep-alive", Mode::KeepAlive),
    ] {
        if wanted(table) {
            profile(&bench, serves[Cache::On as usize].id(), mode);
        }
    }
    drop(serves);
}

/// Resident memory of a fresh `psi serve` with the 10,000-entry cache: idle after start,
/// after a minute of cache-hit lookups from 16 clients (one connection per request), and
/// 15 s after the load stopped (blocking-pool threads end after 10 s idle).
fn memory(bench: &Bench) {
    let (serve, _) = bench.start_serve(Cache::On);
    let pid = serve.id();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let idle = rss_kib(pid);
    let targets: Vec<String> = (0..CACHE_ENTRIES)
        .map(|i| format!("/lookup/{}", cache_id(i)))
        .collect();
    let stats = load(
        &bench.socket(Cache::On),
        &targets,
        Mode::PerRequest,
        16,
        Duration::from_secs(60),
    );
    let loaded = rss_kib(pid);
    std::thread::sleep(Duration::from_secs(15));
    let after = rss_kib(pid);
    let peak = status_kib(pid, "VmHWM:");
    println!("\n## Memory of psi serve with 10,000 cache entries\n");
    println!("| idle after start | after 60 s at 16 clients ({:.0} lookups/s) | 15 s after the load | peak (VmHWM) |", stats.rate());
    println!("|---:|---:|---:|---:|");
    println!(
        "| {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
        mib(idle),
        mib(loaded),
        mib(after),
        mib(peak)
    );
    drop(serve);
}

/// Cache-hit lookups from 16 clients for 30 s, one connection per request (`profile`) or
/// kept alive (`profile-keep-alive`), with the serve process's PID printed first: what
/// README's cost model was profiled on, with `perf record -g -p PID -- sleep 20` started
/// once the PID is printed.
fn profile(bench: &Bench, pid: u32, mode: Mode) {
    let targets: Vec<String> = (0..CACHE_ENTRIES)
        .map(|i| format!("/lookup/{}", cache_id(i)))
        .collect();
    println!("profile: psi serve is PID {pid}; cache-hit load for 30 s from now");
    let before = cpu_time(pid);
    let stats = load(
        &bench.socket(Cache::On),
        &targets,
        mode,
        16,
        Duration::from_secs(30),
    );
    let cpu_us = (cpu_time(pid) - before).as_secs_f64() * 1e6 / stats.latencies.len() as f64;
    println!(
        "profile: {:.0} lookups/s, {cpu_us:.1} µs of server CPU per request",
        stats.rate()
    );
}

/// Prints the start-up times of `psi serve`, with and without a cache.
fn start_up(bench: &Bench) {
    println!("## psi serve start-up (spawn to first 200 from /healthz, 7 starts)\n");
    for cache in [Cache::Off, Cache::On] {
        let mut startups: Vec<Duration> = (0..7)
            .map(|_| {
                let (serve, took) = bench.start_serve(cache);
                drop(serve);
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
}

/// Loads every scenario and prints the table. `server` gives the process and socket that
/// answer a scenario's requests in a connection mode.
fn load_table(bench: &Bench, server: impl Fn(Server, Mode) -> (u32, PathBuf)) {
    let scenarios = bench.scenarios();
    // Measured mode by mode and client count by client count, each scenario in turn, so that
    // a psi row and the floor row it is compared with run moments apart.
    let mut rows = Vec::new();
    for mode in MODES {
        for clients in CLIENTS {
            for (i, scenario) in scenarios.iter().enumerate() {
                if !scenario.modes.contains(&mode) {
                    continue;
                }
                let (pid, socket) = server(scenario.server, mode);
                let before = cpu_time(pid);
                let stats = load(&socket, &scenario.targets, mode, clients, scenario.run_for);
                let cpu = cpu_time(pid) - before;
                rows.push(Row {
                    scenario: i,
                    mode,
                    clients,
                    cpu_us: cpu.as_secs_f64() * 1e6 / stats.latencies.len() as f64,
                    rss_mib: rss_kib(pid) as f64 / 1024.0,
                    stats,
                });
            }
        }
    }
    println!("| scenario | connection | clients | requests/s | p50 | p99 | p99.9 | server CPU per request | server RSS | requests/s vs floor | CPU vs floor |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, scenario) in scenarios.iter().enumerate() {
        for row in rows.iter().filter(|row| row.scenario == i) {
            let floor = rows.iter().find(|floor| {
                matches!(scenarios[floor.scenario].server, Server::Floor)
                    && floor.mode == row.mode
                    && floor.clients == row.clients
            });
            let floor = floor.expect("a floor row for every mode and client count");
            println!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1} µs | {:.1} MiB | {:.2}x | {:.2}x |",
                scenario.name,
                row.mode.name(),
                row.clients,
                row.stats.rate(),
                ms(row.stats.percentile(0.50)),
                ms(row.stats.percentile(0.99)),
                ms(row.stats.percentile(0.999)),
                row.cpu_us,
                row.rss_mib,
                row.stats.rate() / floor.stats.rate(),
                row.cpu_us / floor.cpu_us,
            );
        }
    }
}

/// The lookups of the per-secret table, each with its driver commands: a shell builtin, the
/// floor client, `psi client` and curl (named with their executable's size).
fn driver_lookups(bench: &Bench, floor: &floor::Floor) -> [driver::Lookup; 3] {
    let psi = env!("CARGO_BIN_EXE_psi");
    let size = |path: &Path| std::fs::metadata(path).expect("executable").len() as f64 / 1e6;
    let floor_client = format!(
        "floor client ({}, {:.2} MB)",
        if floor.client_static {
            "static"
        } else {
            "dynamic"
        },
        size(&floor.client)
    );
    let psi_client = format!("psi client ({:.1} MB)", size(Path::new(psi)));
    let lean = driver::build_psi_client();
    let lean_client = format!("psi-client (static, {:.2} MB)", size(lean));
    [
        ("cache hit", Cache::On, cache_id(0), true),
        ("systemd-creds", Cache::Off, "bench".to_owned(), true),
        ("no mapping (404)", Cache::Off, "absent".to_owned(), false),
    ]
    .map(|(name, cache, id, found)| {
        let socket = bench.socket(cache);
        let socket = socket.display();
        let client = |name: &str, kind, command: String| driver::Client {
            name: name.to_owned(),
            kind,
            command,
        };
        let curl = format!(
            "curl -sf --unix-socket {socket} http://localhost/lookup/$SECRET_ID >/dev/null"
        );
        driver::Lookup {
            name,
            id,
            found,
            clients: vec![
                client(
                    "sh builtin",
                    driver::Kind::Builtin,
                    "echo \"$SECRET_ID\" >/dev/null".to_owned(),
                ),
                client(
                    &floor_client,
                    driver::Kind::Floor,
                    format!("{} {socket} >/dev/null", floor.client.display()),
                ),
                client(
                    &lean_client,
                    driver::Kind::Driver,
                    format!("{} lookup --socket {socket} >/dev/null", lean.display()),
                ),
                client(
                    &psi_client,
                    driver::Kind::Driver,
                    format!("{psi} client lookup --socket {socket} >/dev/null"),
                ),
                client("curl", driver::Kind::Driver, curl),
            ],
        }
    })
}

/// Who answers a scenario's requests.
#[derive(Debug, Clone, Copy)]
enum Server {
    Psi(Cache),
    /// The floor server (`bench/floor/server.rs`), one process per connection mode.
    Floor,
}

/// One measured row of the load table.
struct Row {
    /// Index into the scenarios.
    scenario: usize,
    mode: Mode,
    clients: usize,
    stats: Stats,
    /// Server CPU time per request, in µs.
    cpu_us: f64,
    /// The server's resident memory afterwards, in MiB.
    rss_mib: f64,
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
    server: Server,
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

    fn floor_socket(&self, mode: Mode) -> PathBuf {
        let stem = match mode {
            Mode::PerRequest => "floor",
            Mode::KeepAlive => "floor-keep-alive",
        };
        self.dir.path().join(format!("{stem}.sock"))
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
                name: "floor server (any request)",
                server: Server::Floor,
                targets: vec!["/healthz".into()],
                modes: &MODES,
                run_for: Duration::from_secs(2),
            },
            Scenario {
                name: "GET /healthz",
                server: Server::Psi(Cache::Off),
                targets: vec!["/healthz".into()],
                modes: &MODES,
                run_for: Duration::from_secs(2),
            },
            Scenario {
                name: "lookup, systemd-creds",
                server: Server::Psi(Cache::Off),
                targets: vec!["/lookup/bench".into()],
                modes: &[Mode::PerRequest],
                run_for: Duration::from_secs(2),
            },
            Scenario {
                name: "lookup, cache hit (10,000 entries)",
                server: Server::Psi(Cache::On),
                targets: (0..CACHE_ENTRIES)
                    .map(|i| format!("/lookup/{}", cache_id(i)))
                    .collect(),
                modes: &MODES,
                run_for: Duration::from_secs(3),
            },
        ]
    }

    /// Starts `psi serve` and returns it with the time from spawn to the first 200 from
    /// `/healthz`. Logs go to a file in the temp directory, as they would to journald.
    fn start_serve(&self, cache: Cache) -> (Running, Duration) {
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
                return (Running(child), started.elapsed());
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

/// A server process the bench started: stopped (SIGTERM, then waited for) when dropped, so a
/// bench that panics leaves no server behind.
pub struct Running(Child);

impl Running {
    pub fn new(child: Child) -> Running {
        Running(child)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
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
    status_kib(pid, "VmRSS:")
}

/// A KiB field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
