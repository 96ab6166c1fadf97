//! `psi infisical tls status` (pure): one row per certificate from what its file holds
//! (valid / needs renewal / expired / not issued), as JSON or as a table under the state of
//! the renewal timer. The command reads the files, the state and systemd.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::config::CertConfig;
use crate::provider::infisical::cert::CertInfo;

/// The timer properties the table shows, with their labels.
pub const TIMER_PROPERTIES: [(&str, &str); 3] = [
    ("ActiveState", "State"),
    ("LastTriggerUSec", "Last check"),
    ("NextElapseUSecRealtime", "Next check"),
];

/// One row of `status`.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    pub name: String,
    pub common_name: String,
    pub serial_number: Option<String>,
    pub issued: Option<String>,
    pub expires: Option<String>,
    pub days_left: Option<i64>,
    /// `valid`, `needs_renewal`, `expired` or `not_issued`.
    pub status: &'static str,
}

impl StatusRow {
    /// The row of certificate `name` at `now`: `info` from its file (`None`: no usable
    /// certificate), `saved_serial` from its state file, which wins over the certificate's
    /// own unless empty.
    pub fn new(
        name: &str,
        cert: &CertConfig,
        info: Option<CertInfo>,
        saved_serial: Option<String>,
        now: f64,
    ) -> StatusRow {
        let Some(info) = info else {
            return StatusRow {
                name: name.to_owned(),
                common_name: cert.common_name.clone(),
                serial_number: None,
                issued: None,
                expires: None,
                days_left: None,
                status: "not_issued",
            };
        };
        let serial = saved_serial
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| info.serial.clone());
        StatusRow {
            name: name.to_owned(),
            common_name: cert.common_name.clone(),
            serial_number: Some(serial),
            issued: Some(date(info.not_before)),
            expires: Some(date(info.not_after)),
            days_left: Some(info.days_left(now)),
            status: info.standing(now, cert.renew_before).as_str(),
        }
    }
}

/// A time (seconds since the epoch) as the table's UTC date.
fn date(secs: i64) -> String {
    let utc = crate::timefmt::Utc::of(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64));
    format!("{:04}-{:02}-{:02}", utc.year, utc.month, utc.day)
}

/// The terminal text: the renewal timer, from `properties` as `systemctl show` reported
/// them (`None`: systemctl could not tell), then the table.
pub fn human(timer: &str, properties: Option<&[(String, String)]>, rows: &[StatusRow]) -> String {
    let mut out_text = String::new();
    let _ = writeln!(out_text, "Timer: {timer}");
    match properties {
        Some(properties) => {
            for (key, value) in properties {
                let Some((_, label)) = TIMER_PROPERTIES.iter().find(|(k, _)| k == key) else {
                    continue;
                };
                if !value.is_empty() && value != "n/a" {
                    let _ = writeln!(out_text, "  {label}: {value}");
                }
            }
        }
        None => {
            let _ = writeln!(out_text, "  State: unknown (systemctl unavailable)");
        }
    }
    out_text.push('\n');
    table(&mut out_text, rows);
    out_text
}

/// The certificates as a table of aligned columns under a title.
fn table(out_text: &mut String, rows: &[StatusRow]) {
    let header = [
        "Name",
        "Common Name",
        "Serial",
        "Issued",
        "Expires",
        "Days Left",
        "Status",
    ];
    let dash = "—".to_owned();
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let serial = r.serial_number.as_ref().map_or(dash.clone(), |s| {
                if s.chars().count() > 16 {
                    format!("{}...", s.chars().take(16).collect::<String>())
                } else {
                    s.clone()
                }
            });
            [
                r.name.clone(),
                r.common_name.clone(),
                serial,
                r.issued.clone().unwrap_or_else(|| dash.clone()),
                r.expires.clone().unwrap_or_else(|| dash.clone()),
                r.days_left.map_or(dash.clone(), |d| d.to_string()),
                r.status.replace('_', " "),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    out_text.push_str("TLS Certificates\n");
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        let _ = writeln!(out_text, "{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in table {
        line(row.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &'static str) -> StatusRow {
        StatusRow {
            name: "web".into(),
            common_name: "web.example".into(),
            serial_number: Some("0123456789abcdef0123".into()),
            issued: Some("2026-01-01".into()),
            expires: Some("2026-04-01".into()),
            days_left: Some(30),
            status,
        }
    }

    #[test]
    fn the_timer_then_the_table() {
        let properties = [
            ("ActiveState", "active"),
            ("LastTriggerUSec", "n/a"),
            ("Unrelated", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let text = human("t.timer", Some(&properties), &[row("needs_renewal")]);
        assert_eq!(
            text,
            "Timer: t.timer\n  State: active\n\nTLS Certificates\n\
             Name  Common Name  Serial               Issued      Expires     Days Left  Status\n\
             web   web.example  0123456789abcdef...  2026-01-01  2026-04-01  30         needs renewal\n"
        );
        let text = human("t.timer", None, &[]);
        assert!(text.starts_with("Timer: t.timer\n  State: unknown (systemctl unavailable)\n\n"));
    }
}
