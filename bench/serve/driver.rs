//! What Podman pays per secret: `sh -c "<lookup command>"` with a shell builtin (the cost of
//! the shell alone), the floor client, `psi-client`, `psi client` and curl, run interleaved
//! (one of each in turn) so that the machine's noise falls on all of them alike, and
//! compared by medians.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Driver invocations measured per client and lookup.
const INVOCATIONS: usize = 200;
/// Secrets of the container in the per-container column.
const CONTAINER_SECRETS: usize = 50;
/// Containers started per client and lookup (their median is reported).
const CONTAINERS: usize = 5;

/// One driver command, as a `sh -c` string run with `SECRET_ID` set.
pub struct Client {
    pub name: String,
    pub command: String,
    pub kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A shell builtin: asks no server and always succeeds.
    Builtin,
    /// The floor client, which the others are compared with.
    Floor,
    /// A real driver command (curl, `psi client`).
    Driver,
}

/// One lookup the clients are measured on.
pub struct Lookup {
    pub name: &'static str,
    pub id: String,
    /// Whether psi answers it with a 200.
    pub found: bool,
    /// The clients, one of them the floor.
    pub clients: Vec<Client>,
}

/// Builds `psi-client` as it is shipped (`cargo build-psi-client`, `.cargo/config.toml`:
/// static, not position-independent) over the one cargo built for the bench, and returns its
/// path. Cargo no longer holds the build directory while the bench runs.
pub fn build_psi_client() -> &'static Path {
    let status = Command::new(env!("CARGO"))
        .arg("build-psi-client")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo");
    assert!(status.success(), "cargo build-psi-client failed");
    Path::new(env!("CARGO_BIN_EXE_psi-client"))
}

/// Prints the table: per lookup, one row per client.
pub fn table(lookups: &[Lookup]) {
    println!("\n## Per secret as Podman pays it (sh -c \"<lookup command>\", interleaved)\n");
    println!(
        "| lookup | client | per secret (median) | mean | p99 | vs floor client \
         | container with {CONTAINER_SECRETS} secrets (median of {CONTAINERS}) | vs floor client |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for lookup in lookups {
        let mut each = vec![Vec::with_capacity(INVOCATIONS); lookup.clients.len()];
        let mut containers = vec![Vec::with_capacity(CONTAINERS); lookup.clients.len()];
        for round in 0..INVOCATIONS {
            // Each round starts with a different client, so none always runs first.
            for i in rotated(lookup.clients.len(), round) {
                each[i].push(run(&lookup.clients[i], lookup));
            }
        }
        for round in 0..CONTAINERS {
            for i in rotated(lookup.clients.len(), round) {
                let started = Instant::now();
                for _ in 0..CONTAINER_SECRETS {
                    run(&lookup.clients[i], lookup);
                }
                containers[i].push(started.elapsed());
            }
        }
        each.iter_mut()
            .chain(&mut containers)
            .for_each(|t| t.sort());
        let floor = lookup.clients.iter().position(|c| c.kind == Kind::Floor);
        let floor = floor.expect("a floor client");
        let median = |times: &[Duration]| super::load::percentile(times, 0.5);
        let (floor_each, floor_container) = (median(&each[floor]), median(&containers[floor]));
        for (i, client) in lookup.clients.iter().enumerate() {
            let mean = each[i].iter().sum::<Duration>() / each[i].len() as u32;
            println!(
                "| {} | {} | {} | {} | {} | {:.2}x | {} | {:.2}x |",
                lookup.name,
                client.name,
                super::ms(median(&each[i])),
                super::ms(mean),
                super::ms(super::load::percentile(&each[i], 0.99)),
                ratio(median(&each[i]), floor_each),
                super::ms(median(&containers[i])),
                ratio(median(&containers[i]), floor_container),
            );
        }
    }
}

/// Runs `sh -c command` once with `SECRET_ID`, as Podman's shell driver does; its wall time.
fn run(client: &Client, lookup: &Lookup) -> Duration {
    let started = Instant::now();
    let status = Command::new("/bin/sh")
        .args(["-c", &client.command])
        .env("SECRET_ID", &lookup.id)
        .stderr(Stdio::null())
        .status()
        .expect("sh");
    let took = started.elapsed();
    let ok = lookup.found || client.kind == Kind::Builtin;
    assert_eq!(status.success(), ok, "{}: {status}", client.command);
    took
}

/// The indices `0..n` starting at `round % n`.
fn rotated(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + round) % n)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
