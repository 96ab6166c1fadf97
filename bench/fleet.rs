//! A fleet against one Infisical: 300 hosts of 20 workloads each run setup's discovery
//! (psi's own [`Discoverer`](psi::setup::discover::Discoverer) and Infisical client, one
//! client per run as one `psi setup` process has) against ONE fake Infisical enforcing the
//! recorded rate limit (60 requests per route per 60 s window, fixtures 90-93), after every
//! folder changed upstream.
//!
//! Infisical keys its limits by client address and route. Two fleets:
//! - **an address per host** (the usual case): each host reaches the fake under a URL prefix
//!   `/from/10.x.y.z` that the fake takes for its client address, so each has its own budget;
//! - **one address** (a fleet behind NAT or an egress proxy, or an Infisical behind a load
//!   balancer whose address it takes for the client's): all hosts share one budget per route.
//!   The worst case, and the one README's sizing rule is for.
//!
//! Time is virtual (`support::virtual_clock`): the hosts' timer offsets, `Retry-After`s and
//! budget waits take no wall time, and the fake's clock moves with it. Hosts booted together
//! (the synchronized case the randomized delay exists for); the change is made as their
//! timers come due, and each host's run starts at its `FixedRandomDelay=yes` offset,
//! computed as systemd does (a hash of the machine ID and the unit name, modulo
//! `RandomizedDelaySec=`) but with SHA-256 of made-up machine IDs in place of systemd's keyed
//! SipHash: either spreads uniformly. Converged is when the last host's run has listed the
//! new values; the target is within one refresh interval, with no failed run.
//!
//! Reproduce the README figures with `cargo bench --bench fleet`; `FLEET_HOSTS=N` changes the
//! fleet's size. Needs nothing but the fake.

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use support::fleet::{Host, CLIENT_ID, CLIENT_SECRET};
use support::infisical::{FakeInfisical, Generation};
use support::virtual_clock::VirtualClock;

const WORKLOADS: usize = 20;
const PROJECT: &str = "9e3c1b2a-4d5f-4a6b-8c7d-0e1f2a3b4c5d";
/// The recorded limit: fixtures 90-93.
const LIMIT: u32 = 60;
const UNIT: &str = "psi-infisical-refresh.timer";

/// (own address per host, refresh interval, randomized delay in minutes): the default timers
/// for a fleet of addresses, then one shared address with the default and wider spreads.
const ROWS: [(bool, u64, u64); 5] = [
    (true, 60, 5),
    (false, 60, 5),
    (false, 60, 60),
    (false, 180, 120),
    (false, 240, 180),
];

fn main() {
    let hosts: usize = std::env::var("FLEET_HOSTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    println!(
        "psi fleet: {hosts} hosts x {WORKLOADS} workloads, one fake Infisical, {LIMIT} requests per route and client address per 60 s"
    );
    println!(
        "{:<14} {:<18} {:>9} {:>8} {:>7} {:>11} {:>10} {:>10} {:>8}",
        "addresses",
        "interval / delay",
        "API calls",
        "per run",
        "429s",
        "failed runs",
        "converged",
        "target",
        "wall"
    );
    for (own, interval, delay) in ROWS {
        let started = Instant::now();
        let wave = simulate(hosts, own, Duration::from_secs(delay * 60));
        let target = Duration::from_secs(interval * 60);
        println!(
            "{:<14} {:<18} {:>9} {:>8.1} {:>7} {:>11} {:>10} {:>10} {:>7.1}s",
            if own { "one per host" } else { "one shared" },
            format!("{interval}m / {delay}m"),
            wave.calls,
            wave.calls as f64 / hosts as f64,
            wave.throttled,
            wave.failed,
            minutes(wave.converged),
            if wave.failed == 0 && wave.converged <= target {
                "met"
            } else {
                "missed"
            },
            started.elapsed().as_secs_f64()
        );
    }
}

struct Wave {
    calls: usize,
    throttled: usize,
    failed: usize,
    converged: Duration,
}

/// One refresh wave after a change upstream, each host starting at its offset in `delay`;
/// `own`: each host under an address of its own.
fn simulate(hosts: usize, own: bool, delay: Duration) -> Wave {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth(CLIENT_ID, CLIENT_SECRET, 30 * 86_400, 30 * 86_400);
    fake.add_project(PROJECT, "fleet");
    for w in 0..WORKLOADS {
        for k in 0..5 {
            set(&fake, w, k, "");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fleet: Vec<Arc<Host>> = (0..hosts)
        .map(|i| {
            let url = if own {
                format!("{}/from/10.0.{}.{}", fake.url(), i / 256, i % 256)
            } else {
                fake.url()
            };
            Arc::new(Host::new(&url, PROJECT, WORKLOADS, ""))
        })
        .collect();
    let start = UNIX_EPOCH + Duration::from_secs(fake.now());
    let clock = VirtualClock::new(start, fake.clock_driver());

    // Steady state: every host holds a token (a login lasts 30 days; not part of a wave).
    runtime.block_on(async {
        let _running = clock.enter();
        let secret = psi::provider::infisical::mapping("p", "/w00", "KEY_0");
        for host in &fleet {
            host.client(clock.clone()).lookup(&secret).await.unwrap();
        }
    });

    // The change, then the wave under the recorded limit.
    for w in 0..WORKLOADS {
        set(&fake, w, 0, "-changed");
    }
    fake.clear_requests();
    fake.set_rate_limit(Some(LIMIT));
    let since = clock.elapsed();
    // Every host is counted before any sleeps, so the clock cannot move on without one.
    let entered: Vec<_> = fleet.iter().map(|_| clock.enter()).collect();
    let runs: Vec<_> = fleet
        .iter()
        .zip(entered)
        .enumerate()
        .map(|(i, (host, running))| {
            let (host, clock) = (host.clone(), clock.clone());
            let offset = fixed_offset(i, delay);
            runtime.spawn(async move {
                let _running = running;
                psi::provider::infisical::Clock::sleep(&*clock, offset).await;
                let failed = host.discover(clock.clone()).await;
                (failed.len(), clock.elapsed())
            })
        })
        .collect();
    let results: Vec<(usize, Duration)> = runtime.block_on(async { futures_collect(runs).await });
    Wave {
        calls: fake.requests().len(),
        throttled: fake.throttled(),
        failed: results.iter().filter(|(failed, _)| *failed > 0).count(),
        converged: results
            .iter()
            .map(|(_, done)| done.saturating_sub(since))
            .max()
            .unwrap_or_default(),
    }
}

async fn futures_collect<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// Host `i`'s `FixedRandomDelay=yes` offset: a hash of its machine ID and the timer's name,
/// modulo the delay (in microseconds, systemd's unit).
fn fixed_offset(i: usize, delay: Duration) -> Duration {
    let machine_id = openssl::sha::sha256(format!("machine-{i}").as_bytes());
    let mut input = machine_id[..16].to_vec();
    input.extend_from_slice(UNIT.as_bytes());
    let hash = openssl::sha::sha256(&input);
    let value = u64::from_le_bytes(hash[..8].try_into().unwrap());
    let micros = delay.as_micros() as u64;
    Duration::from_micros(if micros == 0 { 0 } else { value % micros })
}

fn set(fake: &FakeInfisical, w: usize, k: usize, suffix: &str) {
    fake.set_secret(
        PROJECT,
        "prod",
        &format!("/w{w:02}"),
        &format!("KEY_{k}"),
        &format!("value-{w}-{k}{suffix}"),
    );
}

fn minutes(d: Duration) -> String {
    format!("{:.1} min", d.as_secs_f64() / 60.0)
}
