//! The readers of `psi infisical import` at scale: an env file and a quadlet of 1,000,000
//! lines each, plain and in the shapes that were quadratic before (an unclosed quote at the
//! top of an env file; a quadlet value continued over every line).
//!
//! Reproduce the README figures with `cargo bench --bench import`. The parsers take text
//! already in memory; the command itself refuses files over 16 MiB before they get here.

use std::fmt::Write;
use std::time::{Duration, Instant};

use psi::import::{parse_env, parse_quadlet};

const LINES: usize = 1_000_000;
const RUNS: usize = 5;

fn main() {
    let inputs = [
        ("env, plain assignments", "env", env(false)),
        ("env, unclosed quote on line 1", "env", env(true)),
        ("quadlet, Environment= lines", "quadlet", quadlet(false)),
        ("quadlet, one continued value", "quadlet", quadlet(true)),
    ];
    println!("| input ({LINES} lines) | size | best of {RUNS} | median |");
    println!("|---|---:|---:|---:|");
    for (what, kind, text) in &inputs {
        let mut times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let began = Instant::now();
                let found = match *kind {
                    "env" => parse_env(text, "bench.env").0.len(),
                    _ => parse_quadlet(text, "bench.container").0.len(),
                };
                let took = began.elapsed();
                std::hint::black_box(found);
                took
            })
            .collect();
        times.sort();
        println!(
            "| {what} | {:.1} MB | {:.0} ms | {:.0} ms |",
            text.len() as f64 / 1e6,
            times[0].as_secs_f64() * 1e3,
            times[RUNS / 2].as_secs_f64() * 1e3
        );
    }
}

fn env(unclosed: bool) -> String {
    let mut text = String::new();
    if unclosed {
        text.push_str("OPEN=\"never closed\n");
    }
    for i in 0..LINES {
        let _ = writeln!(text, "export KEY_{i}=\"value {i}\"  # comment");
    }
    text
}

fn quadlet(continued: bool) -> String {
    let mut text = String::from("[Container]\n");
    for i in 0..LINES {
        if continued {
            let _ = writeln!(text, "  K{i}=v{i} \\");
        } else {
            let _ = writeln!(text, "Environment=KEY_{i}=value{i}");
        }
    }
    if continued {
        text.push_str("  END=1\n");
        text.replace_range(..12, "[Container]\nEnvironment=");
    }
    text
}
