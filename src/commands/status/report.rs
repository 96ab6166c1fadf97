//! `psi status` (pure): the facts the command gathered about this host (serve and the cache
//! it holds, `cache.enc`, setup's record, the timers, the certificates, psi.conf) turned into
//! one report and its verdict, every reason the host needs attention on a line of its own.
//! No file system, no systemd, no clock: the command passes what it found and `now`. The
//! screen is [`super::screen`]'s, psi.conf's part [`super::psi_conf`]'s.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::psi_conf::{DriverFacts, DriverReport};
use super::screen::{date_time, span};
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
        let driver = DriverReport::of(&facts.driver);
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
        driver.problems(&facts.driver, &mut problems);
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

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;
    use crate::setup::record::WorkloadRecord;

    const NOW: f64 = 1_800_000_000.0;
    const HOUR: Duration = Duration::from_secs(3600);
    const CONF: &str = "[secrets]\ndriver = \"shell\"\n\n[secrets.opts]\nlookup = \"/usr/local/bin/psi-client lookup --socket /run/psi/psi.sock --token-file /var/lib/psi/socket-token\"\n";

    fn workload(name: &str, status: &str) -> WorkloadRecord {
        WorkloadRecord {
            workload: name.into(),
            status: status.into(),
            created: 2,
            replaced: 0,
            removed: 0,
            kept: 1,
        }
    }

    /// A healthy host: serve up with its cache loaded, cache.enc written 10 minutes ago, a
    /// successful setup, an active timer, a valid certificate, a current psi.conf.
    fn healthy() -> Facts {
        Facts {
            now: NOW,
            serve: Serve {
                socket: "/run/psi/psi.sock".into(),
                reachable: true,
                error: None,
                cache: Some(ServeCache::from_answer(
                    200,
                    br#"{"cache": "loaded", "entries": 3, "version": 2, "error": null}"#,
                )),
            },
            cache: CacheFacts {
                configured: true,
                path: "/var/lib/psi/cache.enc".into(),
                modified: Ok(NOW - 600.0),
                refresh_interval: ("1h".into(), HOUR),
                randomized_delay: ("5m".into(), Duration::from_secs(300)),
            },
            workloads: vec!["web".into()],
            setup: Some(SetupRecord {
                started_at: NOW - 601.5,
                duration_seconds: 1.5,
                success: true,
                last_success_at: Some(NOW - 600.0),
                workloads: vec![workload("web", "ok")],
            }),
            timers: Timers {
                reachable: true,
                error: None,
                units: vec![timer("psi-infisical-refresh.timer", "loaded", "active")],
            },
            certificates: vec![certificate("valid", 60)],
            driver: DriverFacts {
                path: "/etc/containers/containers.conf.d/psi.conf".into(),
                text: Ok(Some(Zeroizing::new(CONF.into()))),
                expected: Zeroizing::new(CONF.into()),
            },
        }
    }

    fn timer(unit: &str, load: &str, active: &str) -> Timer {
        let properties = [
            ("LoadState", load),
            ("ActiveState", active),
            ("NextElapseUSecRealtime", "Thu 2027-01-14 09:00:00 UTC"),
            ("LastTriggerUSec", "n/a"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        Timer::of(unit, Some(&properties))
    }

    fn certificate(status: &'static str, days: i64) -> StatusRow {
        StatusRow {
            name: "api".into(),
            common_name: "api.example".into(),
            serial_number: Some("01".into()),
            issued: Some("2026-11-01".into()),
            expires: Some("2027-03-01".into()),
            days_left: Some(days),
            status,
        }
    }

    fn problems(change: impl FnOnce(&mut Facts)) -> Vec<String> {
        let mut facts = healthy();
        change(&mut facts);
        let report = Report::of(facts);
        assert_eq!(report.healthy, report.problems.is_empty());
        report.problems
    }

    #[test]
    fn a_healthy_host_has_no_problems_and_says_so() {
        let report = Report::of(healthy());
        assert!(report.healthy, "{:?}", report.problems);
        assert!(!report.cache.stale);
        assert_eq!(report.cache.age_seconds, Some(600.0));
        assert_eq!(report.cache.stale_after_seconds, 7500.0);
        assert_eq!(report.driver.client.as_deref(), Some("psi-client"));
        assert_eq!(report.driver.socket.as_deref(), Some("/run/psi/psi.sock"));
        assert_eq!(
            report.human(),
            "psi status: healthy\n\n\
             Serve         reachable on /run/psi/psi.sock; cache loaded, 3 entries\n\
             Cache         /var/lib/psi/cache.enc written 10m ago (refresh every 1h + up to 5m; stale after 2h 5m)\n\
             Last setup    succeeded 2027-01-15 07:50:00 UTC (10m ago), took 1.5s\n  \
             web  ok: 2 created, 0 replaced, 0 removed, 1 kept\n\
             Timers\n  \
             psi-infisical-refresh.timer  active; next Thu 2027-01-14 09:00:00 UTC\n\
             Certificates\n  \
             api  valid, 60 day(s) left (expires 2027-03-01)\n\
             Driver        /etc/containers/containers.conf.d/psi.conf: psi-client on /run/psi/psi.sock (as psi install writes it)\n"
        );
    }

    #[test]
    fn serve_down_is_one_problem_and_its_cache_is_not_judged() {
        let found = problems(|f| {
            f.serve.reachable = false;
            f.serve.error = Some("cannot connect to /run/psi/psi.sock: refused".into());
            f.serve.cache = None;
        });
        assert_eq!(found, ["psi serve does not answer on /run/psi/psi.sock: cannot connect to /run/psi/psi.sock: refused; start it (psi-secrets.service)"]);
    }

    #[test]
    fn a_cache_serve_has_not_loaded_or_failed_to_reload() {
        let unavailable =
            br#"{"cache": "unavailable", "entries": 0, "error": "cache.key: cannot unseal"}"#;
        let found = problems(|f| {
            f.serve.cache = Some(ServeCache::from_answer(503, unavailable));
        });
        assert_eq!(found, ["psi serve has not loaded the cache (unavailable: cache.key: cannot unseal): lookups go to the providers"]);
        let reload =
            br#"{"cache": "loaded", "entries": 3, "version": 2, "error": "cache.enc: bad tag"}"#;
        let found = problems(|f| f.serve.cache = Some(ServeCache::from_answer(200, reload)));
        assert_eq!(found, ["psi serve's last cache load failed: cache.enc: bad tag (it serves the entries it loaded before)"]);
        let found = problems(|f| {
            f.serve.cache = Some(ServeCache::from_answer(200, br#"{"cache": "disabled"}"#));
        });
        assert_eq!(found, ["psi serve runs with the cache disabled, but the configuration enables it: restart psi serve"]);
        // A refused token: serve's reason, not a guess.
        let refused = br#"{"error": "unauthorized", "detail": "missing or wrong token"}"#;
        let found = problems(|f| f.serve.cache = Some(ServeCache::from_answer(401, refused)));
        assert_eq!(found, ["psi serve did not say how its cache is: HTTP 401: missing or wrong token; is the socket token the one serve has?"]);
    }

    #[test]
    fn no_cache_configured_judges_neither_file_nor_serve_cache() {
        let found = problems(|f| {
            f.cache.configured = false;
            f.cache.modified = Err("it does not exist".into());
            f.serve.cache = Some(ServeCache::from_answer(200, br#"{"cache": "disabled"}"#));
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_stale_or_missing_cache_file() {
        // Twice the interval plus the delay is 2h 5m: just under is fresh, just over stale.
        assert!(problems(|f| f.cache.modified = Ok(NOW - 7499.0)).is_empty());
        let found = problems(|f| f.cache.modified = Ok(NOW - 7501.0));
        assert_eq!(found, ["cache: /var/lib/psi/cache.enc was written 2h 5m ago, more than twice cache.refresh_interval (1h) plus cache.refresh_randomized_delay (5m): the refresh is not running or fails (see the timers and the last setup)"]);
        let found = problems(|f| f.cache.modified = Err("it does not exist".into()));
        assert_eq!(found, ["cache: /var/lib/psi/cache.enc cannot be read (it does not exist); psi setup writes it"]);
    }

    #[test]
    fn a_failed_or_missing_setup() {
        let found = problems(|f| {
            let run = f.setup.as_mut().unwrap();
            run.success = false;
            run.workloads.push(workload("db", "failed"));
        });
        assert_eq!(found, ["setup: the last run (2027-01-15 07:50:00 UTC) failed for workload(s) db; psi setup shows why"]);
        let found = problems(|f| {
            let run = f.setup.as_mut().unwrap();
            run.success = false;
            run.workloads.clear();
        });
        assert_eq!(found, ["setup: the last run (2027-01-15 07:50:00 UTC) failed before it reached the workloads; psi setup shows why"]);
        let found = problems(|f| f.setup = None);
        assert_eq!(found, ["setup: psi setup has never run (no record), and 1 workload(s) are configured: run psi setup"]);
        // Nothing to set up: no record is no problem.
        assert!(problems(|f| {
            f.setup = None;
            f.workloads.clear();
        })
        .is_empty());
    }

    #[test]
    fn an_inactive_timer_needs_attention_a_missing_one_or_no_systemd_does_not() {
        let found = problems(|f| {
            f.timers.units = vec![timer("psi-tls-renew.timer", "loaded", "inactive")];
        });
        assert_eq!(found, ["timer psi-tls-renew.timer is installed but inactive: systemctl enable --now psi-tls-renew.timer"]);
        let missing = timer("psi-tls-renew.timer", "not-found", "inactive");
        assert_eq!(missing.installed, Some(false));
        assert_eq!(missing.active_state, None);
        assert!(problems(|f| f.timers.units = vec![missing]).is_empty());
        let report = Report::of(Facts {
            timers: Timers {
                reachable: false,
                error: Some("systemctl show failed".into()),
                units: vec![Timer::of("psi-tls-renew.timer", None)],
            },
            ..healthy()
        });
        assert!(report.healthy, "{:?}", report.problems);
        assert!(report
            .human()
            .contains("Timers        systemd not reachable\n  psi-tls-renew.timer  unknown\n"));
    }

    #[test]
    fn certificates_expired_due_or_not_issued() {
        let found = problems(|f| f.certificates = vec![certificate("expired", -3)]);
        assert_eq!(
            found,
            ["certificate api: expired 3 day(s) ago: psi infisical tls renew"]
        );
        let found = problems(|f| f.certificates = vec![certificate("needs_renewal", 12)]);
        assert_eq!(found, ["certificate api: 12 day(s) left, within renew_before, and not renewed: psi infisical tls renew (and see its timer)"]);
        let mut missing = certificate("not_issued", 0);
        missing.days_left = None;
        let found = problems(|f| f.certificates = vec![missing]);
        assert_eq!(
            found,
            ["certificate api: not issued (no usable certificate file): psi infisical tls issue"]
        );
    }

    #[test]
    fn psi_conf_missing_or_stale_never_shows_a_token() {
        let found = problems(|f| f.driver.text = Ok(None));
        assert_eq!(found, ["psi.conf: /etc/containers/containers.conf.d/psi.conf does not exist, so Podman's shell driver does not reach psi: run psi install"]);
        let curl = "[secrets.opts]\nlookup = \"curl -sf -H 'Authorization: Bearer tok-123456' --unix-socket /run/other.sock http://localhost/lookup/$SECRET_ID\"\n";
        let report = Report::of(Facts {
            driver: DriverFacts {
                text: Ok(Some(Zeroizing::new(curl.into()))),
                ..healthy().driver
            },
            ..healthy()
        });
        assert_eq!(report.problems, ["psi.conf: /etc/containers/containers.conf.d/psi.conf differs from what psi install writes now (curl on /run/other.sock; psi install writes psi-client on /run/psi/psi.sock): run psi install"]);
        assert_eq!(report.driver.client.as_deref(), Some("curl"));
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains("tok-123456") && !report.human().contains("tok-123456"));
        // The same client and socket with another token file: still stale, said so.
        let other = CONF.replace("/var/lib/psi/socket-token", "/elsewhere");
        let found = problems(|f| f.driver.text = Ok(Some(Zeroizing::new(other))));
        assert_eq!(found, ["psi.conf: /etc/containers/containers.conf.d/psi.conf differs from what psi install writes now (psi-client on /run/psi/psi.sock, with other options or token): run psi install"]);
    }

    #[test]
    fn every_problem_is_listed_on_its_own_line() {
        let report = Report::of(Facts {
            setup: None,
            driver: DriverFacts {
                text: Ok(None),
                ..healthy().driver
            },
            ..healthy()
        });
        let text = report.human();
        assert!(text.starts_with("psi status: 2 problem(s) need attention\n"));
        assert!(text.ends_with(
            "\nNeeds attention:\n  - setup: psi setup has never run (no record), and 1 workload(s) are configured: run psi setup\n  - psi.conf: /etc/containers/containers.conf.d/psi.conf does not exist, so Podman's shell driver does not reach psi: run psi install\n"
        ));
    }
}
