//! `psi setup` at scale: 1,000 Infisical secrets across 20 workloads, registered with real
//! Podman through its libpod API socket, against the fake Infisical of the test suite.
//!
//! Reproduce the README figures with `cargo bench --bench setup` (needs podman, runc, curl,
//! systemd-creds, busybox: `scripts/test` installs them). It prints the wall time of the
//! first run (everything created) and of an unchanged re-run (everything kept: listings
//! only, no Podman create or delete).

#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::time::{Duration, Instant};

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
            fake.set_secret(
                PROJECT,
                "prod",
                &format!("/w{w:02}"),
                &format!("KEY_{k:03}"),
                &format!("value-{w}-{k}"),
            );
        }
        workloads.push_str(&format!(
            "  app{w:02}:\n    secrets:\n      - project: bench\n        path: /w{w:02}\n"
        ));
    }
    let config = format!(
        "providers:\n  infisical:\n    api_url: {}\n    auth: {{method: universal-auth, client_id: bench, client_secret: bench-secret}}\n    projects:\n      bench: {{id: {PROJECT}, environment: prod}}\n{workloads}",
        fake.url()
    );
    let mut env =
        PodmanEnv::new(&config).expect("podman, runc, curl, systemd-creds and busybox are needed");
    env.for_setup();

    let total = WORKLOADS * PER_WORKLOAD;
    println!("psi setup: {total} secrets in {WORKLOADS} workloads (fake Infisical, Podman 4 API)");
    println!("{:<28} {:>10} {:>14}", "run", "wall", "per secret");
    for run in ["first (all created)", "unchanged re-run (all kept)"] {
        let started = Instant::now();
        let out = env
            .psi(&["--log-level", "warn", "setup", "--json"])
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "{run:<28} {:>9.2}s {:>12.2}ms",
            took.as_secs_f64(),
            per(took, total)
        );
    }
}

fn per(took: Duration, n: usize) -> f64 {
    took.as_secs_f64() * 1000.0 / n as f64
}
