//! `psi status [--json]`: one screen that tells an operator whether this host is healthy.
//! This file gathers the facts (serve's `/healthz` and `/healthz/cache` on the socket,
//! `cache.enc`'s age, setup's record, the timers through systemctl, the certificate files,
//! psi.conf against what `psi install` writes now); [`report`] judges them. Exit 0 when
//! healthy, 1 when something needs attention (each reason printed), 2 for a configuration
//! error as elsewhere. Nothing here fails on what it finds: a missing piece is a fact.

mod psi_conf;
pub mod report;
mod screen;

use std::time::{SystemTime, UNIX_EPOCH};

use self::psi_conf::DriverFacts;
use self::report::{CacheFacts, Facts, Report, Serve, ServeCache, Timer, Timers};
use crate::cli::StatusArgs;
use crate::config::{CertConfig, Settings};
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::setup::record::SetupRecord;
use crate::state::StateDir;
use crate::unitgen::{driver_conf, units};

pub async fn run(settings: &Settings, args: &StatusArgs) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let facts = Facts {
        now,
        serve: serve(settings),
        cache: cache(settings),
        workloads: settings.workloads.keys().cloned().collect(),
        setup: SetupRecord::load(&StateDir::new(&settings.state_dir).setup_status_path()),
        timers: timers(settings).await,
        certificates: certificates(settings, now),
        driver: driver(settings, args)?,
    };
    let report = Report::of(facts);
    super::print_report(&report, args.json, Report::human)?;
    match report.problems.len() {
        0 => Ok(()),
        n => Err(Error::Incomplete(format!("{n} problem(s) need attention"))),
    }
}

/// `GET /healthz`, then `GET /healthz/cache` with the socket token.
fn serve(settings: &Settings) -> Serve {
    let socket = &settings.socket_path;
    let token = crate::driver::socket_token(settings);
    let token = token.as_deref().map(String::as_str);
    let healthy = crate::client::healthcheck(socket, false, None);
    let cache =
        healthy.is_ok().then(
            || match crate::client::get(socket, "/healthz/cache", token) {
                Ok(answer) => ServeCache::from_answer(answer.status, &answer.body),
                Err(err) => ServeCache {
                    state: "unknown".into(),
                    entries: None,
                    error: Some(err.to_string()),
                },
            },
        );
    Serve {
        socket: socket.clone(),
        reachable: healthy.is_ok(),
        error: healthy.err().map(|err| err.to_string()),
        cache,
    }
}

fn cache(settings: &Settings) -> CacheFacts {
    let cache = &settings.cache;
    let modified = std::fs::metadata(&cache.path)
        .and_then(|m| m.modified())
        .map(|t| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        })
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".to_owned(),
            _ => err.to_string(),
        });
    CacheFacts {
        configured: cache.enabled && cache.backend.is_some(),
        path: cache.path.clone(),
        modified,
        refresh_interval: (
            cache.refresh_interval.as_str().to_owned(),
            cache.refresh_interval.duration(),
        ),
        randomized_delay: (
            cache.refresh_randomized_delay.as_str().to_owned(),
            cache.refresh_randomized_delay.duration(),
        ),
    }
}

/// The timers `psi systemd install` writes for this configuration: the refresh timer of
/// each discovering provider (Infisical) when the cache is on, the TLS renewal timer when
/// certificates are configured.
async fn timers(settings: &Settings) -> Timers {
    let infisical = settings.providers.infisical.as_ref();
    let cache_on = settings.cache.enabled && settings.cache.backend.is_some();
    let mut names = Vec::new();
    if infisical.is_some() && cache_on {
        names.push(units::refresh_timer_unit(crate::provider::infisical::NAME));
    }
    if infisical.is_some_and(|i| !i.tls.certificates.is_empty()) {
        names.push(units::TLS_RENEW_TIMER.to_owned());
    }
    let mut error = None;
    let mut timers = Vec::new();
    for name in names {
        // Once systemd did not answer, the other timers are not asked either.
        let properties = match error {
            Some(_) => None,
            None => crate::systemd::show(settings.scope, &name, &report::TIMER_PROPERTIES)
                .await
                .map_err(|err| error = Some(err.to_string()))
                .ok(),
        };
        timers.push(Timer::of(&name, properties.as_deref()));
    }
    Timers {
        reachable: error.is_none(),
        error,
        units: timers,
    }
}

fn certificates(settings: &Settings, now: f64) -> Vec<crate::commands::infisical_tls::StatusRow> {
    let certs: Vec<(&String, &CertConfig)> = settings
        .providers
        .infisical
        .iter()
        .flat_map(|i| i.tls.certificates.iter())
        .collect();
    super::infisical_tls::certificate_rows(settings, &certs, now)
}

/// psi.conf (`--driver-conf`, else where `psi install` writes it) and what `psi install`
/// would write now.
fn driver(settings: &Settings, args: &StatusArgs) -> Result<DriverFacts> {
    let path = args
        .driver_conf
        .clone()
        .unwrap_or_else(|| settings.paths.containers_conf_d.join("psi.conf"));
    let text = match crate::fsutil::read_capped_text(&path, crate::fsutil::CONFIG) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.to_string()),
    };
    let expected = zeroize::Zeroizing::new(driver_conf::render(
        &Driver::resolve(settings, None)?.conf(),
    ));
    Ok(DriverFacts {
        path,
        text,
        expected,
    })
}
