//! `psi setup` at scale: 1,000 Infisical secrets across 20 workloads, registered with real
//! Podman through its libpod API socket, against the fake Infisical of the test suite, with
//! the encrypted cache on (so changed values upstream have something to change) and the
//! driver commands of `driver.client: psi`, as on a host (the default inside a container,
//! where these benches often run, would be curl).
//!
//! Reproduce the README figures with `cargo bench --bench setup` (needs podman, runc, curl,
//! systemd-creds, busybox: `scripts/test` installs them). It prints the wall time of:
//! - the first run (everything created), with the CPU time it cost Podman's service, the
//!   driver's store commands Podman ran, `psi serve` and `psi setup` itself;
//! - an unchanged re-run (everything kept: listings only, no Podman create or delete);
//! - the listings alone (`psi check`: every folder listed, Podman not asked), then a run
//!   after 10% of the values changed upstream (still no Podman write; the cache is
//!   rewritten), and how much longer than the listings it took.
//!
//! The re-runs must leave Podman's secrets database untouched: the bench checks its mtime.

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use support::infisical::{FakeInfisical, Generation};
use support::podman::PodmanEnv;

const WORKLOADS: usize = 20;
const PER_WORKLOAD: usize = 50;
const PROJECT: &str = "7d1c2a4e-0f3b-4c6d-9e8f-1a2b3c4d5e6f";

fn main() {
    let fake = FakeInfisical::start(Generation::Current);
    fake.add_universal_auth("bench", "bench-secret", 3600, 86400);
    fake.add_project(PROJECT, "bench");
    let mut workloads = String::from("workloads:\n");
    for w in 0..WORKLOADS {
        for k in 0..PER_WORKLOAD {
            set_value(&fake, w, k, "");
        }
        workloads.push_str(&format!(
            "  app{w:02}:\n    secrets:\n      - project: bench\n        path: /w{w:02}\n"
        ));
    }
    let config = format!(
        "providers:\n  infisical:\n    api_url: {}\n    auth: {{method: universal-auth, client_id: bench, client_secret: bench-secret}}\n    projects:\n      bench: {{id: {PROJECT}, environment: prod}}\ncache:\n  enabled: true\n  backend: tpm\ndriver:\n  client: psi\n{workloads}",
        fake.url()
    );
    // The cache key in a credentials directory, as the appliance passes it.
    let creds = tempfile::Builder::new()
        .prefix("psi-creds.")
        .tempdir()
        .unwrap();
    std::fs::write(creds.path().join("psi-cache-key"), [7u8; 32]).unwrap();
    let mut env = PodmanEnv::with_env(
        &config,
        &[("CREDENTIALS_DIRECTORY", creds.path().as_os_str())],
    )
    .expect("podman, runc, curl, systemd-creds and busybox are needed");
    let socket = env.api_socket();
    env.for_setup();
    let podman = api_service(&socket);
    let serve = env.serve.child.id();
    let database = env.sandbox.path().join("root/secrets/secrets.json");

    let total = WORKLOADS * PER_WORKLOAD;
    println!(
        "psi setup: {total} secrets in {WORKLOADS} workloads (fake Infisical, Podman {} API, cache on)",
        podman_version(&env)
    );
    println!(
        "{:<40} {:>10} {:>14} {:>10}",
        "run", "wall", "per secret", "psi CPU"
    );
    // psi's CPU time beside the wall time: the machines are shared, so wall times are noisy.
    let row = |run: &str, took: Duration, cpu: f64| {
        println!(
            "{run:<40} {:>9.3}s {:>12.3}ms {cpu:>9.3}s",
            took.as_secs_f64(),
            per(took, total)
        )
    };

    let before = (cpu(podman), cpu(serve));
    let (took, first, own) = timed(|| setup(&env));
    let after = (cpu(podman), cpu(serve));
    row("first (all created)", took, own);
    assert_eq!(changes(&first), (total, 0, 0, WORKLOADS), "{first}");
    let written = mtime(&database);

    let (took, rerun, cpu) = timed(|| setup(&env));
    row("unchanged re-run (all kept)", took, cpu);
    assert_eq!(changes(&rerun), (0, 0, 0, 0), "{rerun}");
    assert_eq!(mtime(&database), written, "the re-run wrote to Podman");

    // 10% of the values, spread over every folder, change upstream.
    for w in 0..WORKLOADS {
        for k in (0..PER_WORKLOAD).step_by(10) {
            set_value(&fake, w, k, "-changed");
        }
    }
    let (listings, _, cpu) = timed(|| check(&env));
    row("listings alone (psi check)", listings, cpu);
    let (took, changed, cpu) = timed(|| setup(&env));
    row("10% of the values changed", took, cpu);
    assert_eq!(changes(&changed), (0, 0, 0, 0), "{changed}");
    assert_eq!(mtime(&database), written, "the 10% run wrote to Podman");
    println!(
        "{:<40} {:>9.3}s",
        "  of which beyond the listings",
        took.saturating_sub(listings).as_secs_f64()
    );

    println!("\nCPU time of the first run (per secret):");
    let podman_own = after.0 .0 - before.0 .0;
    let stores = after.0 .1 - before.0 .1;
    for (what, secs) in [
        ("Podman service (its own)", podman_own),
        ("store commands Podman ran (sh -c ...)", stores),
        (
            "psi serve",
            (after.1 .0 + after.1 .1) - (before.1 .0 + before.1 .1),
        ),
        ("psi setup", own),
    ] {
        println!(
            "{what:<40} {secs:>9.3}s {:>12.3}ms",
            secs * 1000.0 / total as f64
        );
    }
}

/// Sets key `k` of workload `w` to a value of its own, with `suffix`.
fn set_value(fake: &FakeInfisical, w: usize, k: usize, suffix: &str) {
    fake.set_secret(
        PROJECT,
        "prod",
        &format!("/w{w:02}"),
        &format!("KEY_{k:03}"),
        &format!("value-{w}-{k}{suffix}"),
    );
}

fn setup(env: &PodmanEnv) -> Output {
    env.psi(&["--log-level", "warn", "setup", "--json"])
        .output()
        .unwrap()
}

fn check(env: &PodmanEnv) -> Output {
    env.psi(&["--log-level", "warn", "check"]).output().unwrap()
}

/// Runs `run`, checks it succeeded, and returns its wall time, its JSON output (if any)
/// and the CPU time of the children it waited for (the psi process).
fn timed(run: impl FnOnce() -> Output) -> (Duration, serde_json::Value, f64) {
    let children = || {
        let usage =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(usage.user_time()) + secs(usage.system_time())
    };
    let cpu_before = children();
    let started = Instant::now();
    let out = run();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "psi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (took, json, children() - cpu_before)
}

/// Created, replaced, removed and drop-ins written, from a setup report.
fn changes(report: &serde_json::Value) -> (usize, usize, usize, usize) {
    let n = |k: &str| report["changes"][k].as_u64().unwrap() as usize;
    (
        n("created"),
        n("replaced"),
        n("removed"),
        n("dropins_written"),
    )
}

/// CPU seconds of process `pid`: its own (user + system), and those of the children it
/// waited for.
fn cpu(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<f64> = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    // utime, stime, cutime, cstime are fields 14 to 17 of stat(5): 11 to 14 here.
    (
        (fields[11] + fields[12]) / tick,
        (fields[13] + fields[14]) / tick,
    )
}

/// The process ID of the libpod API service serving `socket` (its command line names it).
fn api_service(socket: &Path) -> u32 {
    let wanted = format!("unix://{}", socket.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == wanted.as_bytes())
            })
        })
        .expect("the Podman API service is running")
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn podman_version(env: &PodmanEnv) -> String {
    let out = env.podman().args(["--version"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn per(took: Duration, n: usize) -> f64 {
    took.as_secs_f64() * 1000.0 / n as f64
}
