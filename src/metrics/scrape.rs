//! What a scrape or a textfile puts together beyond serve's counters: the files the
//! one-shots leave behind (setup's record, the TLS state files), read when asked, and the
//! textfile written for node_exporter.

use std::path::{Path, PathBuf};

use super::{Kind, Text, Value, METRICS};
use crate::commands::infisical_tls::read_state;
use crate::config::Settings;
use crate::error::Result;
use crate::setup::record::{self, SetupRecord};
use crate::state::StateDir;

/// What a scrape reads besides the counters: the files the one-shots leave behind.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Setup's record ([`crate::setup::record`]).
    pub setup_record: Option<PathBuf>,
    /// Each configured certificate and its `psi infisical tls` state file.
    pub certificates: Vec<(String, PathBuf)>,
}

impl Scrape {
    pub fn from_settings(settings: &Settings) -> Scrape {
        let state = StateDir::new(&settings.state_dir);
        let certificates = settings
            .providers
            .infisical
            .as_ref()
            .map_or_else(Vec::new, |c| {
                let names = c.tls.certificates.keys();
                names
                    .map(|name| (name.clone(), state.tls_state_path(name)))
                    .collect()
            });
        Scrape {
            setup_record: Some(state.setup_status_path()),
            certificates,
        }
    }

    /// Each certificate's notAfter, from its state file (`None`: not issued).
    pub fn not_after(&self) -> Vec<(String, Option<f64>)> {
        let read = |path: &PathBuf| read_state(path).map(|state| state.expires_at);
        let certificates = self.certificates.iter();
        certificates
            .map(|(name, path)| (name.clone(), read(path)))
            .collect()
    }
}

/// Everything `/metrics` answers: serve's counters (`configured` names the providers whose
/// series show from the start; `cache_entries` is `None` without a cache in use), then the
/// setup and certificate families from the files `scrape` names. Reads files: call it on
/// the blocking pool.
pub fn exposition(configured: &[&str], cache_entries: Option<usize>, scrape: &Scrape) -> String {
    let mut out = Text::new();
    METRICS.write_lookups(&mut out, configured);
    METRICS.write_cache(&mut out, cache_entries);
    METRICS.write_providers(&mut out, configured);
    let record = scrape.setup_record.as_deref().and_then(SetupRecord::load);
    record::write_families(&mut out, record.as_ref());
    write_certificates(&mut out, &scrape.not_after());
    out.into_string()
}

/// The certificate family: each configured certificate's notAfter, when it was issued.
pub fn write_certificates(out: &mut Text, certificates: &[(String, Option<f64>)]) {
    out.family(
        "psi_certificate_not_after_timestamp_seconds",
        Kind::Gauge,
        "The notAfter of each TLS certificate psi keeps, in seconds since the epoch (absent: not issued).",
    );
    for (name, not_after) in certificates {
        if let Some(at) = not_after {
            let labels = [("certificate", name.as_str())];
            out.sample(
                "psi_certificate_not_after_timestamp_seconds",
                &labels,
                Value::Float(*at),
            );
        }
    }
}

/// Writes `text` to the node_exporter textfile `path` atomically (a temporary file in the
/// same directory, renamed), mode 0644: node_exporter runs as another user, and the
/// families carry no secrets.
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o644)
}
