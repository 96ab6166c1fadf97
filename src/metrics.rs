//! psi's Prometheus metrics: the counters serve keeps (lookups, cache, providers), the
//! families the one-shots leave behind for it (setup's record, the certificates), and the
//! text exposition ([`text`]) that `GET /metrics` and `--metrics-textfile` write.
//!
//! Written by hand rather than with `prometheus-client`: that crate's histogram takes a lock
//! on every observation and its label families hash their labels under a lock, while a
//! lookup answered from the cache in the accept loop must cost no more than a few atomic
//! additions. Here every series is an atomic in a static ([`METRICS`]), made before the
//! first request: per provider a fixed array by source and outcome, so counting a lookup is
//! an index, two `fetch_add`s for the counter and the histogram bucket, one for the sum; no
//! label hashing, no allocation, no lock. The exposition itself (~100 lines) is simple
//! enough that a crate would buy little.
//!
//! The one-shots (setup, TLS renewal) are separate processes: serve reads what they leave
//! (`state_dir/.setup-status.json`, the TLS state files) when scraped, and they can write
//! their families to a node_exporter textfile themselves ([`write_textfile`]). No family
//! carries a secret value: labels are provider, workload and certificate names.

mod scrape;
pub mod text;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::provider::{creds, infisical, nitrokeyhsm};
pub use scrape::{exposition, write_certificates, write_textfile, Scrape};
pub use text::{Kind, Text, Value};

/// Upper bounds of the lookup-duration buckets, in nanoseconds: from a cache hit (tens of
/// microseconds) to a provider at the lookup deadline (30 s).
const BUCKETS: [u64; 15] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// The provider label of lookups that failed before a provider was known (no mapping, an
/// unreadable one, an unconfigured provider).
pub const NO_PROVIDER: &str = "none";

/// Every counter serve keeps; [`METRICS`] is the process's.
pub struct Metrics {
    /// The three providers, then [`NO_PROVIDER`].
    providers: [ProviderMetrics; 4],
    cache_load_errors: AtomicU64,
    /// When the cache file was last loaded, in milliseconds since the epoch; 0: never.
    cache_loaded_ms: AtomicU64,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics::new();

/// Where a lookup's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache = 0,
    Provider = 1,
}

const SOURCES: [(Source, &str); 2] = [(Source::Cache, "cache"), (Source::Provider, "provider")];

/// How a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success = 0,
    Error = 1,
}

const OUTCOMES: [(Outcome, &str); 2] = [(Outcome::Success, "success"), (Outcome::Error, "error")];

/// One provider's series, made once: what the hot path counts into.
pub struct ProviderMetrics {
    name: &'static str,
    /// By source, then outcome.
    lookups: [[AtomicU64; 2]; 2],
    /// By source.
    durations: [Histogram; 2],
    errors: AtomicU64,
    retries: AtomicU64,
    rate_limit_waits: AtomicU64,
    rate_limit_wait_ns: AtomicU64,
}

/// A latency histogram: a count per bucket (not cumulative: one addition per observation;
/// the exposition sums them) and the sum in nanoseconds.
struct Histogram {
    /// [`BUCKETS`], then the overflow (`+Inf`).
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn write(&self, out: &mut Text, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        let bounds = BUCKETS.iter().map(|&ns| ns as f64 / 1e9);
        for (count, bound) in self.counts.iter().zip(bounds.chain([f64::INFINITY])) {
            cumulative += count.load(Relaxed);
            let le = text::Float(bound).to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            out.sample(
                &format!("{name}_bucket"),
                &with_le,
                Value::Count(cumulative),
            );
        }
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        out.sample(&format!("{name}_sum"), labels, Value::Float(sum));
        out.sample(&format!("{name}_count"), labels, Value::Count(cumulative));
    }
}

impl ProviderMetrics {
    const fn new(name: &'static str) -> ProviderMetrics {
        ProviderMetrics {
            name,
            lookups: [const { [const { AtomicU64::new(0) }; 2] }; 2],
            durations: [const { Histogram::new() }; 2],
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rate_limit_waits: AtomicU64::new(0),
            rate_limit_wait_ns: AtomicU64::new(0),
        }
    }

    /// The provider's name, as its label says.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Counts a lookup that began at `started`.
    pub fn lookup(&self, source: Source, outcome: Outcome, started: Instant) {
        self.lookups[source as usize][outcome as usize].fetch_add(1, Relaxed);
        self.durations[source as usize].observe(started.elapsed());
    }

    /// Counts a failed call to the provider.
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Counts a retry; `rate_limited` when the server asked for the wait (HTTP 429).
    pub fn retry(&self, wait: Duration, rate_limited: bool) {
        self.retries.fetch_add(1, Relaxed);
        if rate_limited {
            self.rate_limit_wait(wait);
        }
    }

    /// A wait the server's rate limit imposed: a 429's `Retry-After` before a retry, or a
    /// spent budget (`x-ratelimit-remaining: 0`) before a request is sent at all.
    pub fn rate_limit_wait(&self, wait: Duration) {
        self.rate_limit_waits.fetch_add(1, Relaxed);
        let ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.rate_limit_wait_ns.fetch_add(ns, Relaxed);
    }

    /// Whether anything was counted.
    fn touched(&self) -> bool {
        let lookups = self.lookups.iter().flatten();
        lookups
            .chain([&self.errors, &self.retries])
            .any(|n| n.load(Relaxed) > 0)
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            providers: [
                ProviderMetrics::new(creds::NAME),
                ProviderMetrics::new(infisical::NAME),
                ProviderMetrics::new(nitrokeyhsm::NAME),
                ProviderMetrics::new(NO_PROVIDER),
            ],
            cache_load_errors: AtomicU64::new(0),
            cache_loaded_ms: AtomicU64::new(0),
        }
    }

    /// The series of provider `name` ([`NO_PROVIDER`]'s for a name psi does not know).
    /// Callers on the hot path look it up once and keep the reference.
    pub fn provider(&self, name: &str) -> &ProviderMetrics {
        let [.., none] = &self.providers;
        self.providers
            .iter()
            .find(|p| p.name == name)
            .unwrap_or(none)
    }

    /// The cache file was loaded at `at`.
    pub fn cache_loaded(&self, at: SystemTime) {
        let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.cache_loaded_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }

    /// A load of the cache file failed.
    pub fn cache_load_failed(&self) {
        self.cache_load_errors.fetch_add(1, Relaxed);
    }

    /// The providers to show: those `configured`, and any other that counted something.
    fn shown<'a>(&'a self, configured: &'a [&str]) -> impl Iterator<Item = &'a ProviderMetrics> {
        self.providers
            .iter()
            .filter(|p| configured.contains(&p.name) || p.touched())
    }

    /// The lookup families: count by provider, outcome and source, and the latency histogram.
    pub fn write_lookups(&self, out: &mut Text, configured: &[&str]) {
        out.family(
            "psi_lookups_total",
            Kind::Counter,
            "Secret lookups, by provider, outcome (success, error) and source (cache, provider).",
        );
        for p in self.shown(configured) {
            for (source, source_name) in SOURCES {
                for (outcome, outcome_name) in OUTCOMES {
                    let n = count(&p.lookups[source as usize][outcome as usize]);
                    let labels = [
                        ("provider", p.name),
                        ("outcome", outcome_name),
                        ("source", source_name),
                    ];
                    out.sample("psi_lookups_total", &labels, n);
                }
            }
        }
        out.family(
            "psi_lookup_duration_seconds",
            Kind::Histogram,
            "Time to answer a secret lookup, by provider and source.",
        );
        for p in self.shown(configured) {
            for (source, source_name) in SOURCES {
                let labels = [("provider", p.name), ("source", source_name)];
                p.durations[source as usize].write(out, "psi_lookup_duration_seconds", &labels);
            }
        }
    }

    /// The cache families; `entries` is `None` when no cache is in use.
    pub fn write_cache(&self, out: &mut Text, entries: Option<usize>) {
        out.family(
            "psi_cache_entries",
            Kind::Gauge,
            "Values in the encrypted cache snapshot in use (absent: no cache configured).",
        );
        if let Some(entries) = entries {
            out.sample("psi_cache_entries", &[], Value::Count(entries as u64));
        }
        out.family(
            "psi_cache_last_load_timestamp_seconds",
            Kind::Gauge,
            "When the cache file was last loaded, in seconds since the epoch (absent: never).",
        );
        let ms = self.cache_loaded_ms.load(Relaxed);
        if ms > 0 {
            let at = Value::Float(ms as f64 / 1e3);
            out.sample("psi_cache_last_load_timestamp_seconds", &[], at);
        }
        out.family(
            "psi_cache_load_errors_total",
            Kind::Counter,
            "Loads of the cache file that failed.",
        );
        let errors = count(&self.cache_load_errors);
        out.sample("psi_cache_load_errors_total", &[], errors);
    }

    /// The provider families: errors, retries and the waits a rate limit imposed.
    pub fn write_providers(&self, out: &mut Text, configured: &[&str]) {
        type Series = fn(&ProviderMetrics) -> Value;
        let families: [(&str, &str, Series); 4] = [
            (
                "psi_provider_errors_total",
                "Provider calls for a lookup that failed.",
                |p| Value::Count(p.errors.load(Relaxed)),
            ),
            (
                "psi_provider_retries_total",
                "Provider requests retried after a transient failure.",
                |p| Value::Count(p.retries.load(Relaxed)),
            ),
            (
                "psi_provider_rate_limit_waits_total",
                "Waits a provider's rate limit imposed: a 429's Retry-After, or a spent budget before sending.",
                |p| Value::Count(p.rate_limit_waits.load(Relaxed)),
            ),
            (
                "psi_provider_rate_limit_wait_seconds_total",
                "Time spent waiting for a provider's rate limit.",
                |p| Value::Float(p.rate_limit_wait_ns.load(Relaxed) as f64 / 1e9),
            ),
        ];
        for (name, help, value) in families {
            out.family(name, Kind::Counter, help);
            for p in self.shown(configured).filter(|p| p.name != NO_PROVIDER) {
                out.sample(name, &[("provider", p.name)], value(p));
            }
        }
    }
}

fn count(n: &AtomicU64) -> Value {
    Value::Count(n.load(Relaxed))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_registry_renders_exactly() {
        let metrics = Metrics::new();
        let started = Instant::now() - Duration::from_millis(3);
        metrics
            .provider("infisical")
            .lookup(Source::Provider, Outcome::Success, started);
        metrics.provider("infisical").error();
        metrics
            .provider("infisical")
            .retry(Duration::from_millis(1500), true);
        metrics.cache_loaded(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250));
        let mut out = Text::new();
        metrics.write_cache(&mut out, Some(2));
        metrics.write_providers(&mut out, &["systemd-creds"]);
        write_certificates(
            &mut out,
            &[("web".into(), Some(1_800_000_000.0)), ("new".into(), None)],
        );
        assert_eq!(
            out.into_string(),
            "# HELP psi_cache_entries Values in the encrypted cache snapshot in use (absent: no cache configured).\n\
             # TYPE psi_cache_entries gauge\n\
             psi_cache_entries 2\n\
             # HELP psi_cache_last_load_timestamp_seconds When the cache file was last loaded, in seconds since the epoch (absent: never).\n\
             # TYPE psi_cache_last_load_timestamp_seconds gauge\n\
             psi_cache_last_load_timestamp_seconds 1700000000.25\n\
             # HELP psi_cache_load_errors_total Loads of the cache file that failed.\n\
             # TYPE psi_cache_load_errors_total counter\n\
             psi_cache_load_errors_total 0\n\
             # HELP psi_provider_errors_total Provider calls for a lookup that failed.\n\
             # TYPE psi_provider_errors_total counter\n\
             psi_provider_errors_total{provider=\"systemd-creds\"} 0\n\
             psi_provider_errors_total{provider=\"infisical\"} 1\n\
             # HELP psi_provider_retries_total Provider requests retried after a transient failure.\n\
             # TYPE psi_provider_retries_total counter\n\
             psi_provider_retries_total{provider=\"systemd-creds\"} 0\n\
             psi_provider_retries_total{provider=\"infisical\"} 1\n\
             # HELP psi_provider_rate_limit_waits_total Waits a provider's rate limit imposed: a 429's Retry-After, or a spent budget before sending.\n\
             # TYPE psi_provider_rate_limit_waits_total counter\n\
             psi_provider_rate_limit_waits_total{provider=\"systemd-creds\"} 0\n\
             psi_provider_rate_limit_waits_total{provider=\"infisical\"} 1\n\
             # HELP psi_provider_rate_limit_wait_seconds_total Time spent waiting for a provider's rate limit.\n\
             # TYPE psi_provider_rate_limit_wait_seconds_total counter\n\
             psi_provider_rate_limit_wait_seconds_total{provider=\"systemd-creds\"} 0\n\
             psi_provider_rate_limit_wait_seconds_total{provider=\"infisical\"} 1.5\n\
             # HELP psi_certificate_not_after_timestamp_seconds The notAfter of each TLS certificate psi keeps, in seconds since the epoch (absent: not issued).\n\
             # TYPE psi_certificate_not_after_timestamp_seconds gauge\n\
             psi_certificate_not_after_timestamp_seconds{certificate=\"web\"} 1800000000\n"
        );
    }

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_lookup() {
        let metrics = Metrics::new();
        let p = metrics.provider("nitrokeyhsm");
        p.durations[0].observe(Duration::from_micros(40));
        p.durations[0].observe(Duration::from_millis(2));
        p.durations[0].observe(Duration::from_secs(60));
        let mut out = Text::new();
        p.durations[0].write(&mut out, "h", &[("source", "cache")]);
        let text = out.into_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "h_bucket{source=\"cache\",le=\"0.00005\"} 1");
        assert_eq!(lines[5], "h_bucket{source=\"cache\",le=\"0.0025\"} 2");
        assert_eq!(lines[14], "h_bucket{source=\"cache\",le=\"30\"} 2");
        assert_eq!(lines[15], "h_bucket{source=\"cache\",le=\"+Inf\"} 3");
        assert_eq!(lines[16], "h_sum{source=\"cache\"} 60.00204");
        assert_eq!(lines[17], "h_count{source=\"cache\"} 3");
    }

    #[test]
    fn unknown_providers_count_as_none_and_show_once_touched() {
        let metrics = Metrics::new();
        assert_eq!(metrics.provider("nope").name, NO_PROVIDER);
        let mut quiet = Text::new();
        metrics.write_lookups(&mut quiet, &[]);
        assert!(!quiet.into_string().contains("provider="));
        metrics
            .provider("nope")
            .lookup(Source::Provider, Outcome::Error, Instant::now());
        let mut out = Text::new();
        metrics.write_lookups(&mut out, &[]);
        let text = out.into_string();
        assert!(text.contains(
            "psi_lookups_total{provider=\"none\",outcome=\"error\",source=\"provider\"} 1\n"
        ));
        assert!(text.contains(
            "psi_lookup_duration_seconds_count{provider=\"none\",source=\"provider\"} 1\n"
        ));
    }
}
