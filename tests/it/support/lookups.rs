//! Lookups of Podman secrets by name in a loop while something else runs (a `psi setup`
//! that rotates them): what a container starting during the rotation would find. Each lookup
//! is the libpod inspect with `showsecret=true`, which on Podman 5 resolves the name and
//! runs the shell driver's `lookup` under Podman's secrets lock, as a container start does;
//! Podman 4 ignores `showsecret` and only resolves the name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use psi::podman::Podman;

/// One lookup: when it started and ended (since the loop began) and what it found: the value
/// (`None` where Podman does not reveal values), or the error.
#[derive(Debug)]
pub struct Lookup {
    pub start: Duration,
    pub end: Duration,
    pub found: Result<Option<String>, String>,
}

/// Every name's lookups, in order.
pub struct Lookups(pub BTreeMap<String, Vec<Lookup>>);

impl Lookups {
    pub fn total(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    pub fn failed(&self) -> Vec<(&str, &Lookup)> {
        self.0
            .iter()
            .flat_map(|(name, all)| all.iter().map(move |l| (name.as_str(), l)))
            .filter(|(_, l)| l.found.is_err())
            .collect()
    }

    /// The longest stretch around failed lookups of one name: from the end of the last
    /// lookup that found it before them to the start of the first that found it again. The
    /// name was missing for at most this long there.
    pub fn longest_gap(&self) -> Duration {
        let mut longest = Duration::ZERO;
        for all in self.0.values() {
            let mut last_ok: Option<Duration> = None;
            let mut missing_since: Option<Duration> = None;
            for l in all {
                match (&l.found, missing_since) {
                    (Err(_), None) => missing_since = Some(last_ok.unwrap_or(l.start)),
                    (Ok(_), Some(since)) => {
                        longest = longest.max(l.start.saturating_sub(since));
                        missing_since = None;
                    }
                    _ => {}
                }
                if l.found.is_ok() {
                    last_ok = Some(l.end);
                }
            }
        }
        longest
    }
}

/// Looks `names` up on the Podman API at `socket`, one task per name, each in a loop; once
/// every name has been found once, runs `during` on a blocking thread, and stops the loops
/// when it returns, each after one more lookup. Returns what `during` returned and every
/// lookup.
pub async fn lookups_during<T: Send + 'static>(
    socket: PathBuf,
    names: &[&str],
    during: impl FnOnce() -> T + Send + 'static,
) -> (T, Lookups) {
    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(names.len());
    let mut loops = Vec::new();
    for name in names {
        let podman = Podman::new(socket.clone());
        let name = (*name).to_owned();
        let stop = Arc::clone(&stop);
        let first = first_tx.clone();
        loops.push(tokio::spawn(async move {
            let mut all = Vec::new();
            loop {
                // One whole lookup after `during` returned, so every name is seen after it.
                let last = stop.load(Ordering::SeqCst);
                let start = began.elapsed();
                let found = podman
                    .secret_data(&name)
                    .await
                    .map(|v| v.map(|v| String::from_utf8_lossy(v.expose()).into_owned()))
                    .map_err(|e| e.to_string());
                all.push(Lookup {
                    start,
                    end: began.elapsed(),
                    found,
                });
                if all.len() == 1 {
                    assert!(all[0].found.is_ok(), "{name} before the run: {:?}", all[0]);
                    let _ = first.send(()).await;
                }
                if last {
                    break;
                }
            }
            (name, all)
        }));
    }
    drop(first_tx);
    for _ in names {
        first_rx.recv().await.expect("a lookup loop ended early");
    }
    let result = tokio::task::spawn_blocking(during).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut lookups = BTreeMap::new();
    for task in loops {
        let (name, all) = task.await.unwrap();
        lookups.insert(name, all);
    }
    (result, Lookups(lookups))
}
