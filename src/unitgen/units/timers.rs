//! The timers, which quadlet does not read, so they are plain units in both modes: the
//! cache refresh of each discovering provider (a timer and the service it starts) and the
//! daily TLS renewal (its service is the mode's own, in `native` or `container`).

use super::fragments::UnitText;
use super::{setup_unit, ApplianceSpec, CacheSpec, GeneratedFile, Target};

/// `psi-<p>-refresh.service`: restarts the setup unit. A timer cannot target the setup unit
/// itself: `RemainAfterExit=yes` keeps it active, so `OnUnitActiveSec=` would fire once.
pub(super) fn refresh_service(spec: &ApplianceSpec, provider: &str) -> GeneratedFile {
    UnitText::new(
        spec,
        &format!("Periodic refresh of psi's {provider} secret cache"),
    )
    .section(
        "Unit",
        vec![
            format!("Description=PSI {provider} secret cache refresh"),
            format!("After={}", setup_unit(provider)),
        ],
    )
    .section(
        "Service",
        vec![
            "Type=oneshot".into(),
            format!(
                "ExecStart={} restart {}",
                spec.systemctl(),
                setup_unit(provider)
            ),
        ],
    )
    .file(Target::Unit, format!("psi-{provider}-refresh.service"))
}

/// `FixedRandomDelay=yes`: the randomized delay is derived from the machine ID and the unit
/// name instead of drawn anew at every elapse. Each host keeps one offset in the window, so a
/// fleet stays spread evenly across it run after run; re-rolled delays let hosts collide
/// again by chance, and after a fleet-wide reboot all fire in one burst. systemd 247 and
/// later read it (Debian 12 has 252, Fedora CoreOS newer).
const FIXED_DELAY: &str = "FixedRandomDelay=yes";

/// `psi-<p>-refresh.timer`: starts the refresh service every `cache.refresh_interval`, the
/// first time that long after boot, each host at its own fixed offset within
/// `cache.refresh_randomized_delay` so a fleet does not ask Infisical all at once.
pub(super) fn refresh_timer(
    spec: &ApplianceSpec,
    cache: &CacheSpec,
    provider: &str,
) -> GeneratedFile {
    UnitText::new(
        spec,
        &format!("Timer of psi's {provider} secret cache refresh"),
    )
    .section(
        "Unit",
        vec![format!(
            "Description=Periodic PSI {provider} secret cache refresh"
        )],
    )
    .section(
        "Timer",
        vec![
            format!("Unit=psi-{provider}-refresh.service"),
            format!("OnBootSec={}", cache.refresh_interval),
            format!("OnUnitActiveSec={}", cache.refresh_interval),
            format!("RandomizedDelaySec={}", cache.refresh_delay),
            FIXED_DELAY.into(),
        ],
    )
    .section("Install", vec!["WantedBy=timers.target".into()])
    .file(Target::Unit, super::refresh_timer_unit(provider))
}

/// `psi-tls-renew.timer`: once a day, catching up a run missed while the host was off, each
/// host at its own fixed offset within `providers.infisical.tls.renew_randomized_delay`.
pub(super) fn tls_timer(spec: &ApplianceSpec) -> GeneratedFile {
    UnitText::new(spec, "Timer of psi's TLS certificate renewal")
        .section(
            "Unit",
            vec!["Description=Daily PSI TLS certificate renewal".into()],
        )
        .section(
            "Timer",
            vec![
                "OnCalendar=daily".into(),
                format!("RandomizedDelaySec={}", spec.tls_renew_delay),
                FIXED_DELAY.into(),
                "Persistent=true".into(),
            ],
        )
        .section("Install", vec!["WantedBy=timers.target".into()])
        .file(Target::Unit, super::TLS_RENEW_TIMER.into())
}
