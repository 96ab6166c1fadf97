//! A mutation fuzzer on stable Rust for psi's parsers (cargo-fuzz needs nightly).
//!
//! ```text
//! cargo run --release --example fuzz -- <target|all> (--inputs N | --seconds S) [--seed X]
//! cargo run --release --example fuzz -- <target> --replay FILE
//! ```
//!
//! Each target (`targets.rs`) starts from its corpus, `fuzz/corpus/<target>/` (inputs taken
//! from the tests and fixtures) plus seeds it builds itself, and feeds mutated inputs to the
//! parser under test: bit flips, interesting bytes, inserted and deleted ranges, duplicated
//! chunks, splices of two inputs, truncation and dictionary tokens, up to [`MAX_INPUT`]
//! bytes. There is no coverage feedback; the corpus and the dictionaries give the mutations
//! their structure. The run is deterministic for a seed (`--seed`, default 1).
//!
//! A panic (a crash, or a broken invariant: the targets assert more than "no panic") saves
//! the input to `fuzz/crashes/` and exits 1. An input that runs longer than [`SLOW`] is
//! saved there too and reported, without failing the run; one still running after [`HANG`]
//! is saved by a watchdog thread, which then exits 2.

mod targets;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use targets::Target;

/// Largest input handed to a target: parsers are line or token based, and bigger inputs
/// only slow the run down.
const MAX_INPUT: usize = 64 * 1024;
/// An input slower than this is reported (and saved) as slow.
const SLOW: Duration = Duration::from_millis(100);
/// An input still running after this is a hang: saved, and the run stops.
const HANG: Duration = Duration::from_secs(10);

/// Bytes that tend to sit on parser boundaries.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, 0xc3, 0xe2, b'\n', b'\r', b'\t', b' ', b'"', b'\'', b'\\', b'/',
    b'%', b'.', b'=', b'#', b':', b'-', b'{', b'}', b'[', b']', b',', b'0', b'9', b'a',
];

/// splitmix64: tiny, fast and good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n > 0`); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Applies one to four random mutations to `input`, in place.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                let count = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..count).map(|_| rng.byte()).collect();
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = at + 1 + rng.below((len - at).min(32));
                input.drain(at..end);
            }
            4 if len > 0 => {
                // A duplicated chunk: repeated fields, nested brackets, doubled separators.
                let at = rng.below(len);
                let end = at + 1 + rng.below((len - at).min(64));
                let chunk = input[at..end].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, chunk);
            }
            5 => {
                // Splice: the head of this input and the tail of another.
                let other = &corpus[rng.below(corpus.len())];
                let keep = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(keep);
                input.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            7 | 8 if !dictionary.is_empty() => {
                let token = dictionary[rng.below(dictionary.len())];
                let at = rng.below(len + 1);
                if rng.below(2) == 0 || at == len {
                    input.splice(at..at, token.iter().copied());
                } else {
                    // Overwrite instead of insert, so lengths and offsets can stay put.
                    let end = (at + token.len()).min(len);
                    input.splice(at..end, token.iter().copied());
                }
            }
            _ => {
                let at = rng.below(len + 1);
                input.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
            }
        }
    }
    input.truncate(MAX_INPUT);
}

/// How long a target runs, or the one saved input to run again (with the panic's backtrace
/// and the time it takes).
#[derive(Clone)]
enum Budget {
    Inputs(u64),
    Seconds(f64),
    Replay(PathBuf),
}

struct Options {
    targets: Vec<Target>,
    budget: Budget,
    seed: u64,
}

fn usage() -> ! {
    let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    eprintln!(
        "usage: fuzz <target|all> (--inputs N | --seconds S | --replay FILE) [--seed X]\n\
         targets: {}\n\
         --seconds applies to each target.",
        names.join(", ")
    );
    std::process::exit(64);
}

fn parse_args() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(which) = args.first() else { usage() };
    let targets = if which == "all" {
        Target::ALL.to_vec()
    } else {
        match Target::ALL.iter().find(|t| t.name() == which) {
            Some(target) => vec![*target],
            None => usage(),
        }
    };
    let (mut budget, mut seed) = (None, 1);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let Some(value) = rest.next() else { usage() };
        match flag.as_str() {
            "--inputs" => budget = value.parse().ok().map(Budget::Inputs),
            "--seconds" => budget = value.parse().ok().map(Budget::Seconds),
            "--replay" => budget = Some(Budget::Replay(PathBuf::from(value))),
            "--seed" => seed = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let Some(budget) = budget else { usage() };
    Options {
        targets,
        budget,
        seed,
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The corpus files of `target`, sorted by name so a seed gives the same run.
fn load_corpus(target: Target) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("corpus").join(target.name());
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .map(|mut bytes| {
            bytes.truncate(MAX_INPUT);
            bytes
        })
        .collect()
}

/// Saves `input` as `fuzz/crashes/<kind>-<target>-<hash>` and returns the path.
fn save(kind: &str, target: Target, input: &[u8]) -> PathBuf {
    let dir = fuzz_dir().join("crashes");
    let _ = std::fs::create_dir_all(&dir);
    let hash = openssl::sha::sha256(input);
    let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{kind}-{}-{name}", target.name()));
    if let Err(err) = std::fs::write(&path, input) {
        eprintln!("cannot save {}: {err}", path.display());
    }
    path
}

/// The input being run and how many have finished, shared with the watchdog.
struct Progress {
    target: Mutex<Option<Target>>,
    input: Mutex<Vec<u8>>,
    done: AtomicU64,
}

/// Saves the current input and exits when no input has finished for [`HANG`].
fn watchdog(progress: Arc<Progress>) {
    std::thread::spawn(move || {
        let mut last = (u64::MAX, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let done = progress.done.load(Ordering::Relaxed);
            if done != last.0 {
                last = (done, Instant::now());
            } else if last.1.elapsed() > HANG {
                let target = progress
                    .target
                    .lock()
                    .unwrap()
                    .expect("a target is running");
                let input = progress.input.lock().unwrap();
                let path = save("hang", target, &input);
                eprintln!(
                    "{}: an input ran for more than {HANG:?}; saved to {}",
                    target.name(),
                    path.display()
                );
                std::process::exit(2);
            }
        }
    });
}

struct Totals {
    inputs: u64,
    elapsed: Duration,
    slow: u64,
}

fn run(target: Target, options: &Options, progress: &Progress) -> Totals {
    let mut state = target.setup();
    let mut corpus = load_corpus(target);
    corpus.extend(state.seeds());
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let dictionary = target.dictionary();
    *progress.target.lock().unwrap() = Some(target);

    let mut rng = Rng(options.seed);
    let start = Instant::now();
    let mut totals = Totals {
        inputs: 0,
        elapsed: Duration::ZERO,
        slow: 0,
    };
    let mut input = Vec::with_capacity(MAX_INPUT);
    loop {
        let done = match &options.budget {
            Budget::Inputs(n) => totals.inputs >= *n,
            // Checking the clock every 256 inputs keeps it off the hot path.
            Budget::Seconds(s) => {
                totals.inputs.is_multiple_of(256) && start.elapsed().as_secs_f64() >= *s
            }
            Budget::Replay(_) => unreachable!("main replays without the loop"),
        };
        if done {
            break;
        }
        input.clear();
        let base = &corpus[rng.below(corpus.len())];
        input.extend_from_slice(base);
        // Every seed also runs unmutated at the start, then most inputs are mutants.
        if totals.inputs >= corpus.len() as u64 {
            mutate(&mut rng, &mut input, &corpus, dictionary);
        }
        progress.input.lock().unwrap().clone_from(&input);

        let began = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| state.run(&input)));
        let took = began.elapsed();
        progress.done.fetch_add(1, Ordering::Relaxed);
        totals.inputs += 1;
        if outcome.is_err() {
            let path = save("crash", target, &input);
            eprintln!(
                "{}: panic on input {} (seed {}); saved to {}",
                target.name(),
                totals.inputs,
                options.seed,
                path.display()
            );
            std::process::exit(1);
        }
        if took > SLOW {
            totals.slow += 1;
            let path = save("slow", target, &input);
            eprintln!(
                "{}: slow input ({took:?}); saved to {}",
                target.name(),
                path.display()
            );
        }
    }
    totals.elapsed = start.elapsed();
    totals
}

/// Runs one saved input, unguarded, so a panic prints its message and backtrace.
fn replay(target: Target, path: &Path) {
    let input = std::fs::read(path).unwrap_or_else(|err| {
        eprintln!("cannot read {}: {err}", path.display());
        std::process::exit(66);
    });
    let mut state = target.setup();
    let began = Instant::now();
    state.run(&input);
    println!("{}: no panic, {:?}", target.name(), began.elapsed());
}

fn main() {
    let options = parse_args();
    if let Budget::Replay(path) = &options.budget {
        for &target in &options.targets {
            replay(target, path);
        }
        return;
    }
    let progress = Arc::new(Progress {
        target: Mutex::new(None),
        input: Mutex::new(Vec::new()),
        done: AtomicU64::new(0),
    });
    watchdog(Arc::clone(&progress));
    let (mut inputs, mut elapsed) = (0, Duration::ZERO);
    for &target in &options.targets {
        let totals = run(target, &options, &progress);
        let secs = totals.elapsed.as_secs_f64();
        println!(
            "{:<9} {:>11} inputs in {:>8.1} s = {:>9.0} inputs/s, {} slow",
            target.name(),
            totals.inputs,
            secs,
            totals.inputs as f64 / secs.max(1e-9),
            totals.slow
        );
        inputs += totals.inputs;
        elapsed += totals.elapsed;
    }
    if options.targets.len() > 1 {
        println!(
            "{:<9} {inputs:>11} inputs in {:>8.1} s",
            "total",
            elapsed.as_secs_f64()
        );
    }
}
