//! `psi status` (pure): the facts the command gathered about this host (serve and the cache
//! it holds, `cache.enc`, setup's record, the timers, the certificates, psi.conf) turned into
//! one report and its verdict, every reason the host needs attention on a line of its own.
//! No file system, no systemd, no clock: the command passes what it found and `now`.
//!
//! Nothing here holds a secret: psi.conf's text is compared, never copied into the report
//! (curl's form carries the socket token).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::commands::infisical_tls::StatusRow;
use crate::setup::record::SetupRecord;

/// What the command found, before any judgement.
pub struct Facts {
    /// Seconds since the epoch.
    pub now: f64,
    pub serve: Serve,
    pub cache: CacheFacts,
    /// The configured workloads' names.
    pub workloads: Vec<String>,
    /// Setup's record (`None`: setup never ran, or its record cannot be read).
    pub setup: Option<SetupRecord>,
    pub timers: Timers,
    pub certificates: Vec<StatusRow>,
    pub driver: DriverFacts,
}

/// psi serve as its socket answers.
#[derive(Debug, Serialize)]
pub struct Serve {
    pub socket: PathBuf,
    /// `GET /healthz` answered 200.
    pub reachable: bool,
    /// Why serve is not reachable.
    pub error: Option<String>,
    /// `GET /healthz/cache`; `None` when serve is not reachable.
    pub cache: Option<ServeCache>,
}

/// The cache as serve sees it (the `/healthz/cache` JSON).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ServeCache {
    /// `disabled`, `loaded`, `loading` or `unavailable`; `unknown` when serve's answer says
    /// nothing about the cache (a refused token).
    #[serde(rename = "cache")]
    pub state: String,
    #[serde(default)]
    pub entries: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

impl ServeCache {
    /// Serve's answer to `GET /healthz/cache`: its JSON (200 or 503), or for anything else
    /// `unknown` with the HTTP status and serve's reason.
    pub fn from_answer(status: u16, body: &[u8]) -> ServeCache {
        serde_json::from_slice(body).unwrap_or_else(|_| ServeCache {
            state: "unknown".into(),
            entries: None,
            error: Some(format!(
                "HTTP {status}: {}",
                crate::client::lean::error_detail(body)
            )),
        })
    }
}

/// The cache's configuration and its file.
pub struct CacheFacts {
    /// Enabled with a backend: setup writes `cache.enc` and serve loads it.
    pub configured: bool,
    pub path: PathBuf,
    /// `cache.enc`'s modification time in seconds since the epoch, or why it cannot be read.
    pub modified: Result<f64, String>,
    /// `cache.refresh_interval` as written, and as a duration.
    pub refresh_interval: (String, Duration),
    /// `cache.refresh_randomized_delay` as written, and as a duration.
    pub randomized_delay: (String, Duration),
}

/// The appliance's timers, as systemd reports them.
#[derive(Debug, Serialize)]
pub struct Timers {
    /// systemd answered (this host's manager, or the host's from psi's container).
    pub reachable: bool,
    /// Why systemd could not be asked.
    pub error: Option<String>,
    pub units: Vec<Timer>,
}

/// One timer. Without systemd only its name is known.
#[derive(Debug, Serialize, PartialEq)]
pub struct Timer {
    pub unit: String,
    /// systemd has the unit file (`LoadState=loaded`).
    pub installed: Option<bool>,
    /// `ActiveState`: `active` while it waits for its next run.
    pub active_state: Option<String>,
    /// `NextElapseUSecRealtime` and `LastTriggerUSec`, as systemd prints them.
    pub next: Option<String>,
    pub last: Option<String>,
}

/// The properties [`Timer::of`] reads, for `systemctl show`.
pub const TIMER_PROPERTIES: [&str; 4] = [
    "LoadState",
    "ActiveState",
    "NextElapseUSecRealtime",
    "LastTriggerUSec",
];

impl Timer {
    /// The timer `unit` from `systemctl show`'s `properties` (`None`: systemd not reachable).
    pub fn of(unit: &str, properties: Option<&[(String, String)]>) -> Timer {
        let property = |name: &str| {
            properties?
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .filter(|value| !value.is_empty() && value != "n/a")
        };
        let installed = properties.map(|_| property("LoadState").as_deref() == Some("loaded"));
        Timer {
            unit: unit.to_owned(),
            installed,
            active_state: installed.filter(|&i| i).and(property("ActiveState")),
            next: property("NextElapseUSecRealtime"),
            last: property("LastTriggerUSec"),
        }
    }
}

/// psi.conf and what `psi install` would write now.
pub struct DriverFacts {
    pub path: PathBuf,
    /// The file's text (`None`: it does not exist), or why it cannot be read. Zeroized: curl's
    /// form holds the socket token.
    pub text: Result<Option<Zeroizing<String>>, String>,
    /// What `psi install` writes now with this configuration.
    pub expected: Zeroizing<String>,
}

/// Setup, as its record tells it.
#[derive(Debug, Serialize)]
pub struct SetupReport {
    pub workloads_configured: Vec<String>,
    /// The last run (not a dry run); `null` when setup never ran.
    pub last_run: Option<SetupRecord>,
}

/// `cache.enc` against the refresh interval.
#[derive(Debug, Serialize)]
pub struct CacheReport {
    pub configured: bool,
    pub path: PathBuf,
    /// Since `cache.enc` was last written.
    pub age_seconds: Option<f64>,
    /// Why `cache.enc` cannot be read.
    pub error: Option<String>,
    pub refresh_interval: String,
    pub randomized_delay: String,
    /// Older than this (twice the interval plus the randomized delay) is stale: at least one
    /// refresh that should have run did not write it.
    pub stale_after_seconds: f64,
    pub stale: bool,
}

/// psi.conf as Podman reads it.
#[derive(Debug, Serialize)]
pub struct DriverReport {
    pub path: PathBuf,
    pub present: bool,
    /// Why the file cannot be read.
    pub error: Option<String>,
    /// `curl`, `psi-client` or `psi client`, as its lookup command names it.
    pub client: Option<String>,
    pub socket: Option<String>,
    /// The file is what `psi install` writes now (`null`: no file).
    pub current: Option<bool>,
}

/// `psi status`'s report: the verdict first, then each part.
#[derive(Debug, Serialize)]
pub struct Report {
    pub healthy: bool,
    /// Every reason the host needs attention, with what to do.
    pub problems: Vec<String>,
    /// When the status was taken, in seconds since the epoch.
    pub checked_at: f64,
    pub serve: Serve,
    pub cache: CacheReport,
    pub setup: SetupReport,
    pub timers: Timers,
    pub certificates: Vec<StatusRow>,
    pub driver: DriverReport,
}

impl Report {
    /// The report of `facts` and its verdict.
    pub fn of(facts: Facts) -> Report {
        let now = facts.now;
        let cache = cache_report(facts.cache, now);
        let driver = driver_report(&facts.driver);
        let mut problems = Vec::new();
        serve_problems(&facts.serve, &cache, &mut problems);
        cache_problems(&cache, &mut problems);
        setup_problems(facts.setup.as_ref(), &facts.workloads, &mut problems);
        for timer in &facts.timers.units {
            if timer.installed == Some(true) && timer.active_state.as_deref() != Some("active") {
                let state = timer.active_state.as_deref().unwrap_or("inactive");
                problems.push(format!(
                    "timer {0} is installed but {state}: systemctl enable --now {0}",
                    timer.unit
                ));
            }
        }
        for cert in &facts.certificates {
            if let Some(problem) = certificate_problem(cert) {
                problems.push(problem);
            }
        }
        driver_problems(&driver, &facts.driver, &mut problems);
        Report {
            healthy: problems.is_empty(),
            problems,
            checked_at: now,
            serve: facts.serve,
            cache,
            setup: SetupReport {
                workloads_configured: facts.workloads,
                last_run: facts.setup,
            },
            timers: facts.timers,
            certificates: facts.certificates,
            driver,
        }
    }

    /// The screen: one aligned line per part, its details indented below, then the problems.
    pub fn human(&self) -> String {
        let mut out = String::new();
        match self.problems.len() {
            0 => out.push_str("psi status: healthy\n\n"),
            n => {
                let _ = writeln!(out, "psi status: {n} problem(s) need attention\n");
            }
        }
        self.human_serve(&mut out);
        self.human_cache(&mut out);
        self.human_setup(&mut out);
        self.human_timers(&mut out);
        self.human_certificates(&mut out);
        self.human_driver(&mut out);
        if !self.problems.is_empty() {
            out.push_str("\nNeeds attention:\n");
            for problem in &self.problems {
                let _ = writeln!(out, "  - {problem}");
            }
        }
        out
    }

    fn human_serve(&self, out: &mut String) {
        let serve = &self.serve;
        let socket = serve.socket.display();
        if !serve.reachable {
            let why = serve.error.as_deref().unwrap_or("no answer");
            line(out, "Serve", &format!("NOT reachable on {socket}: {why}"));
            return;
        }
        let cache = match &serve.cache {
            Some(c) => {
                let mut text = c.state.clone();
                if let Some(n) = c.entries.filter(|_| c.state == "loaded") {
                    let _ = write!(text, ", {n} entries");
                }
                if let Some(error) = &c.error {
                    let _ = write!(text, " ({error})");
                }
                text
            }
            None => "unknown".into(),
        };
        line(
            out,
            "Serve",
            &format!("reachable on {socket}; cache {cache}"),
        );
    }

    fn human_cache(&self, out: &mut String) {
        let cache = &self.cache;
        if !cache.configured {
            line(
                out,
                "Cache",
                "not configured (cache.enabled with a backend)",
            );
            return;
        }
        let file = match (cache.age_seconds, &cache.error) {
            (Some(age), _) => format!("written {} ago", span(age)),
            (None, Some(error)) => format!("cannot be read: {error}"),
            (None, None) => "unknown".into(),
        };
        let judgement = if cache.stale { "STALE, " } else { "" };
        line(
            out,
            "Cache",
            &format!(
                "{} {file} ({judgement}refresh every {} + up to {}; stale after {})",
                cache.path.display(),
                cache.refresh_interval,
                cache.randomized_delay,
                span(cache.stale_after_seconds)
            ),
        );
    }

    fn human_setup(&self, out: &mut String) {
        let Some(run) = &self.setup.last_run else {
            let n = self.setup.workloads_configured.len();
            line(
                out,
                "Last setup",
                &format!("never ran ({n} workload(s) configured)"),
            );
            return;
        };
        let outcome = if run.success { "succeeded" } else { "FAILED" };
        let ended = run.started_at + run.duration_seconds;
        line(
            out,
            "Last setup",
            &format!(
                "{outcome} {} ({} ago), took {:.1}s",
                date_time(ended),
                span(self.checked_at - ended),
                run.duration_seconds
            ),
        );
        if !run.success {
            if let Some(at) = run.last_success_at {
                let _ = writeln!(out, "{:INDENT$}last success {}", "", date_time(at));
            }
        }
        let rows: Vec<[String; 2]> = run
            .workloads
            .iter()
            .map(|w| {
                [
                    w.workload.clone(),
                    format!(
                        "{}: {} created, {} replaced, {} removed, {} kept",
                        w.status, w.created, w.replaced, w.removed, w.kept
                    ),
                ]
            })
            .collect();
        table(out, &rows);
    }

    fn human_timers(&self, out: &mut String) {
        let timers = &self.timers;
        let summary = match (timers.reachable, timers.units.is_empty()) {
            (false, _) => "systemd not reachable",
            (true, true) => "none configured",
            (true, false) => "",
        };
        line(out, "Timers", summary);
        let rows: Vec<[String; 2]> = timers
            .units
            .iter()
            .map(|t| {
                let state = match (t.installed, &t.active_state) {
                    (None, _) => "unknown".to_owned(),
                    (Some(false), _) => "not installed".to_owned(),
                    (Some(true), state) => state.clone().unwrap_or_else(|| "inactive".into()),
                };
                let mut text = state;
                if let Some(next) = &t.next {
                    let _ = write!(text, "; next {next}");
                }
                if let Some(last) = &t.last {
                    let _ = write!(text, "; last {last}");
                }
                [t.unit.clone(), text]
            })
            .collect();
        table(out, &rows);
    }

    fn human_certificates(&self, out: &mut String) {
        let summary = if self.certificates.is_empty() {
            "none configured"
        } else {
            ""
        };
        line(out, "Certificates", summary);
        let rows: Vec<[String; 2]> = self
            .certificates
            .iter()
            .map(|c| {
                let mut text = c.status.replace('_', " ");
                if let (Some(days), Some(expires)) = (c.days_left, &c.expires) {
                    let _ = write!(text, ", {days} day(s) left (expires {expires})");
                }
                [c.name.clone(), text]
            })
            .collect();
        table(out, &rows);
    }

    fn human_driver(&self, out: &mut String) {
        let d = &self.driver;
        let text = match (d.present, &d.error) {
            (_, Some(error)) => format!("cannot be read: {error}"),
            (false, None) => "missing".into(),
            (true, None) => {
                let client = d.client.as_deref().unwrap_or("not psi's commands");
                let socket = d
                    .socket
                    .as_deref()
                    .map(|s| format!(" on {s}"))
                    .unwrap_or_default();
                let current = match d.current {
                    Some(true) => "as psi install writes it",
                    _ => "STALE: psi install would write another",
                };
                format!("{client}{socket} ({current})")
            }
        };
        line(out, "Driver", &format!("{}: {text}", d.path.display()));
    }
}

/// Where the values of the screen's lines start.
const INDENT: usize = 14;

/// `label` and `text` in the screen's columns.
fn line(out: &mut String, label: &str, text: &str) {
    let _ = writeln!(out, "{:<INDENT$}{text}", label);
    trim_line_end(out);
}

/// Indented rows of a part (workloads, timers, certificates), their names aligned.
fn table(out: &mut String, rows: &[[String; 2]]) {
    let width = rows.iter().map(|[name, _]| name.chars().count()).max();
    for [name, text] in rows {
        let pad = width.unwrap_or(0) - name.chars().count();
        let _ = writeln!(out, "  {name}{:pad$}  {text}", "");
    }
}

/// Drops the spaces a line with an empty value leaves before its newline.
fn trim_line_end(out: &mut String) {
    out.pop();
    let kept = out.trim_end_matches(' ').len();
    out.truncate(kept);
    out.push('\n');
}

fn cache_report(facts: CacheFacts, now: f64) -> CacheReport {
    let (interval, delay) = (facts.refresh_interval.1, facts.randomized_delay.1);
    let stale_after = 2.0 * interval.as_secs_f64() + delay.as_secs_f64();
    let age = facts.modified.as_ref().ok().map(|m| (now - m).max(0.0));
    CacheReport {
        configured: facts.configured,
        path: facts.path,
        age_seconds: age,
        error: facts.modified.err(),
        refresh_interval: facts.refresh_interval.0,
        randomized_delay: facts.randomized_delay.0,
        stale_after_seconds: stale_after,
        stale: facts.configured && age.is_some_and(|a| a > stale_after),
    }
}

fn serve_problems(serve: &Serve, cache: &CacheReport, problems: &mut Vec<String>) {
    if !serve.reachable {
        problems.push(format!(
            "psi serve does not answer on {}: {}; start it (psi-secrets.service)",
            serve.socket.display(),
            serve.error.as_deref().unwrap_or("no answer")
        ));
        return;
    }
    let Some(seen) = &serve.cache else {
        return;
    };
    let error = seen.error.as_deref();
    match (seen.state.as_str(), cache.configured) {
        ("unknown", _) => problems.push(format!(
            "psi serve did not say how its cache is: {}; is the socket token the one serve has?",
            error.unwrap_or("no reason given")
        )),
        ("disabled", true) => problems.push(
            "psi serve runs with the cache disabled, but the configuration enables it: restart psi serve".into(),
        ),
        ("loaded", true) => {
            if let Some(error) = error {
                problems.push(format!(
                    "psi serve's last cache load failed: {error} (it serves the entries it loaded before)"
                ));
            }
        }
        ("disabled" | "loaded", false) => {}
        (state, _) => problems.push(format!(
            "psi serve has not loaded the cache ({state}{}): lookups go to the providers",
            error.map(|e| format!(": {e}")).unwrap_or_default()
        )),
    }
}

fn cache_problems(cache: &CacheReport, problems: &mut Vec<String>) {
    if !cache.configured {
        return;
    }
    let path = cache.path.display();
    if let Some(error) = &cache.error {
        problems.push(format!(
            "cache: {path} cannot be read ({error}); psi setup writes it"
        ));
    }
    if let Some(age) = cache.age_seconds.filter(|_| cache.stale) {
        problems.push(format!(
            "cache: {path} was written {} ago, more than twice cache.refresh_interval ({}) plus cache.refresh_randomized_delay ({}): the refresh is not running or fails (see the timers and the last setup)",
            span(age),
            cache.refresh_interval,
            cache.randomized_delay
        ));
    }
}

fn setup_problems(record: Option<&SetupRecord>, workloads: &[String], problems: &mut Vec<String>) {
    let Some(run) = record else {
        if !workloads.is_empty() {
            problems.push(format!(
                "setup: psi setup has never run (no record), and {} workload(s) are configured: run psi setup",
                workloads.len()
            ));
        }
        return;
    };
    if run.success {
        return;
    }
    let when = date_time(run.started_at + run.duration_seconds);
    let failed: Vec<&str> = run
        .workloads
        .iter()
        .filter(|w| w.status == "failed")
        .map(|w| w.workload.as_str())
        .collect();
    problems.push(if failed.is_empty() {
        format!("setup: the last run ({when}) failed before it reached the workloads; psi setup shows why")
    } else {
        format!(
            "setup: the last run ({when}) failed for workload(s) {}; psi setup shows why",
            failed.join(", ")
        )
    });
}

fn certificate_problem(cert: &StatusRow) -> Option<String> {
    let name = &cert.name;
    let days = cert.days_left.unwrap_or(0);
    Some(match cert.status {
        "expired" => format!(
            "certificate {name}: expired {} day(s) ago: psi infisical tls renew",
            -days
        ),
        "needs_renewal" => format!(
            "certificate {name}: {days} day(s) left, within renew_before, and not renewed: psi infisical tls renew (and see its timer)"
        ),
        "not_issued" => format!(
            "certificate {name}: not issued (no usable certificate file): psi infisical tls issue"
        ),
        _ => return None,
    })
}

/// The client and socket psi.conf's lookup command names, when the file holds one.
fn describe(text: &str) -> (Option<String>, Option<String>) {
    let Some(words) = lookup_command(text).and_then(|c| shlex::split(&c)) else {
        return (None, None);
    };
    let after = |flag: &str| {
        let at = words.iter().position(|w| w == flag)?;
        words.get(at + 1).cloned()
    };
    let client = match (words.first(), words.get(1)) {
        (Some(curl), _) if curl == "curl" => "curl",
        (Some(_), Some(client)) if client == "client" => "psi client",
        (Some(program), _) if program.ends_with(crate::driver::LEAN_CLIENT) => "psi-client",
        _ => return (None, None),
    };
    let socket = after("--unix-socket").or_else(|| after("--socket"));
    (Some(client.to_owned()), socket)
}

/// The `lookup` option of psi.conf's `[secrets.opts]`, unescaped from its TOML basic string
/// (the escapes [`crate::unitgen::toml_basic`] writes).
fn lookup_command(text: &str) -> Option<String> {
    let quoted = text.lines().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "lookup").then(|| value.trim())
    })?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            escaped => out.push(escaped),
        }
    }
    Some(out)
}

fn driver_report(facts: &DriverFacts) -> DriverReport {
    let (text, error) = match &facts.text {
        Ok(text) => (text.as_ref().map(|t| t.as_str()), None),
        Err(why) => (None, Some(why.clone())),
    };
    let (client, socket) = text.map_or((None, None), describe);
    DriverReport {
        path: facts.path.clone(),
        present: text.is_some(),
        error,
        client,
        socket,
        current: text.map(|t| t == facts.expected.as_str()),
    }
}

fn driver_problems(report: &DriverReport, facts: &DriverFacts, problems: &mut Vec<String>) {
    let path = report.path.display();
    if let Some(error) = &report.error {
        problems.push(format!("psi.conf: {path} cannot be read: {error}"));
    } else if !report.present {
        problems.push(format!(
            "psi.conf: {path} does not exist, so Podman's shell driver does not reach psi: run psi install"
        ));
    } else if report.current == Some(false) {
        let name = |(client, socket): (Option<String>, Option<String>)| match (client, socket) {
            (Some(client), Some(socket)) => format!("{client} on {socket}"),
            _ => "other commands".into(),
        };
        let now = name((report.client.clone(), report.socket.clone()));
        let wanted = name(describe(&facts.expected));
        let detail = if now == wanted {
            format!("{now}, with other options or token")
        } else {
            format!("{now}; psi install writes {wanted}")
        };
        problems.push(format!(
            "psi.conf: {path} differs from what psi install writes now ({detail}): run psi install"
        ));
    }
}

/// A duration in seconds as its two largest units: `45s`, `5m 3s`, `2h 5m`, `3d 4h`.
fn span(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|(_, size)| secs >= *size) else {
        return "0s".into();
    };
    let mut parts = Vec::new();
    let mut rest = secs;
    for (name, size) in &units[first..(first + 2).min(units.len())] {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n}{name}"));
        }
    }
    parts.join(" ")
}

/// A time (seconds since the epoch) as `2026-12-06 19:40:00 UTC`.
fn date_time(secs: f64) -> String {
    let utc = crate::timefmt::Utc::of(UNIX_EPOCH + Duration::from_secs(secs.max(0.0) as u64));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second
    )
}
