//! `psi status`'s screen (pure): one aligned line per part, like `systemctl status`, the
//! details of a part indented below it, the problems last.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::report::Report;

impl Report {
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
            line(out, "Cache", "not configured");
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

/// A duration in seconds as its two largest units: `45s`, `5m 3s`, `2h 5m`, `3d 4h`.
pub(super) fn span(secs: f64) -> String {
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
pub(super) fn date_time(secs: f64) -> String {
    let utc = crate::timefmt::Utc::of(UNIX_EPOCH + Duration::from_secs(secs.max(0.0) as u64));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        for (secs, text) in [
            (0.0, "0s"),
            (45.0, "45s"),
            (303.0, "5m 3s"),
            (7500.0, "2h 5m"),
            (3600.0, "1h"),
            (273_600.0, "3d 4h"),
        ] {
            assert_eq!(span(secs), text);
        }
    }
}
