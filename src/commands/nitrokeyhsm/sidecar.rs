//! `psi nitrokeyhsm setup-pcscd`: the pcscd sidecar, a generation flow (DESIGN.md, flow 3):
//! settings and flags -> a spec -> pure renderers (`unitgen::pcscd`) -> files written
//! atomically and only when they change. Between the Containerfile and the quadlets it builds
//! `localhost/pcscd:latest` with `podman build`. The image is rebuilt on every run (the
//! Containerfile may be unchanged while the image was removed); Podman's layer cache makes
//! an unchanged rebuild cheap.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use super::{say, Check, Status};
use crate::cli::SetupPcscdArgs;
use crate::config::{NitrokeyConfig, Scope, Settings};
use crate::error::{Error, Result};
use crate::unitgen::pcscd::{self, Pcscd};
use crate::{fsutil, process, systemd};

pub(super) async fn setup_pcscd(settings: &Settings, args: &SetupPcscdArgs) -> Result<()> {
    // Without a nitrokeyhsm block the sidecar still gets the provider's default volume, so the
    // provider finds it when it is configured later with defaults.
    let defaults = NitrokeyConfig::default();
    let nitrokey = settings.providers.nitrokeyhsm.as_ref().unwrap_or(&defaults);
    let spec = Pcscd {
        volume: &nitrokey.pcscd_volume,
        scope: settings.scope,
    };

    say(&selinux_check().await.render())?;

    let build_dir = args
        .build_dir
        .clone()
        .unwrap_or_else(|| default_build_dir(settings));
    fsutil::ensure_dir(&build_dir, 0o755)?;
    let containerfile = build_dir.join("Containerfile");
    report_write(&containerfile, &pcscd::containerfile())?;

    build_image(&build_dir, args.base_image.as_deref()).await?;
    say(&format!("Built {}\n", pcscd::IMAGE))?;

    if args.build_only {
        return say("Quadlets not installed (--build-only).\n");
    }
    let systemd_dir = args
        .systemd_dir
        .clone()
        .unwrap_or_else(|| settings.systemd_dir.clone());
    fsutil::ensure_dir(&systemd_dir, 0o755)?;
    // Both files first, then one reload for whatever changed.
    let volume_changed = report_write(
        &systemd_dir.join(spec.volume_file()),
        &pcscd::volume_unit(&spec),
    )?;
    let container_changed = report_write(
        &systemd_dir.join(pcscd::CONTAINER_FILE),
        &pcscd::container_unit(&spec),
    )?;
    let user = match settings.scope {
        Scope::System => "",
        Scope::User => "--user ",
    };
    if volume_changed || container_changed {
        if let Err(err) = systemd::daemon_reload(settings.scope).await {
            tracing::warn!(error = %err, "the quadlets changed, but systemd could not be reloaded; run 'systemctl {user}daemon-reload' before starting pcscd");
        }
    }
    say(&format!(
        "pcscd sidecar ready.\n  Start with: systemctl {user}start pcscd.service\n  Socket volume: {}\n",
        spec.volume
    ))
}

/// `/opt/psi/pcscd` for the system; for a user, under the scope's default state directory
/// (`~/.local/share/psi/pcscd`), which is theirs to write. A directory there is never taken
/// for a mapping: the state directory's listing keeps to files.
fn default_build_dir(settings: &Settings) -> PathBuf {
    match settings.scope {
        Scope::System => PathBuf::from("/opt/psi/pcscd"),
        Scope::User => crate::state::StateDir::new(&settings.paths.state_dir).pcscd_dir(),
    }
}

/// `getsebool container_use_devices`: pcscd needs the USB device nodes, which SELinux
/// denies containers unless that boolean is on. No getsebool, no SELinux to ask.
async fn selinux_check() -> Check {
    match process::run(OsStr::new("getsebool"), ["container_use_devices"], b"").await {
        Ok(output) => selinux_verdict(
            output.success,
            &String::from_utf8_lossy(&output.stdout),
            &output.stderr,
        ),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Check::new(Status::Skip, "SELinux check (getsebool not installed)")
        }
        Err(err) => Check::new(Status::Skip, format!("SELinux check: {err}")),
    }
}

/// Reads getsebool's answer (`container_use_devices --> on|off`). A failing getsebool
/// (SELinux disabled, an unknown boolean) says why on its own, so that is the SKIP text.
fn selinux_verdict(success: bool, stdout: &str, stderr: &str) -> Check {
    let answer = stdout.trim();
    if success && answer.ends_with("--> on") {
        Check::new(Status::Pass, "SELinux container_use_devices is on")
    } else if success && answer.ends_with("--> off") {
        Check {
            status: Status::Warn,
            text: "SELinux container_use_devices is off".into(),
            hint: Some("Run: sudo setsebool -P container_use_devices=true".into()),
        }
    } else {
        let why = [stderr.trim(), answer]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("no answer");
        Check::new(Status::Skip, format!("SELinux check ({why})"))
    }
}

/// Writes a generated file if it changed and says which; returns whether it wrote.
fn report_write(path: &Path, text: &str) -> Result<bool> {
    let changed = fsutil::write_if_changed(path, text.as_bytes(), 0o644)?;
    let verb = if changed { "Wrote" } else { "Unchanged" };
    say(&format!("{verb} {}\n", path.display()))?;
    Ok(changed)
}

/// `podman build -t localhost/pcscd:latest [--build-arg BASE_IMAGE=...] DIR`, no shell. On
/// failure the error carries Podman's stderr and the end of its stdout, where the output of
/// a failing `RUN` step (apt's own message) lands.
async fn build_image(build_dir: &Path, base_image: Option<&str>) -> Result<()> {
    let mut args: Vec<OsString> = vec!["build".into(), "-t".into(), pcscd::IMAGE.into()];
    if let Some(image) = base_image {
        args.push("--build-arg".into());
        args.push(format!("BASE_IMAGE={image}").into());
    }
    args.push(build_dir.into());
    tracing::info!(image = pcscd::IMAGE, dir = %build_dir.display(), base = base_image.unwrap_or(pcscd::DEFAULT_BASE_IMAGE), "building the pcscd image");
    let output = process::run(OsStr::new("podman"), args, b"").await?;
    if output.success {
        return Ok(());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    let how = output
        .code
        .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
    Err(Error::Podman(format!(
        "podman build of {} failed ({how}):\n{tail}\n{}",
        pcscd::IMAGE,
        output.stderr
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getsebool_answers() {
        let on = selinux_verdict(true, "container_use_devices --> on\n", "");
        assert_eq!(on.status, Status::Pass);
        let off = selinux_verdict(true, "container_use_devices --> off\n", "");
        assert_eq!(off.status, Status::Warn);
        assert_eq!(
            off.render(),
            "  WARN SELinux container_use_devices is off\n       Run: sudo setsebool -P container_use_devices=true\n"
        );
        let disabled = selinux_verdict(false, "", "getsebool:  SELinux is disabled\n");
        assert_eq!(
            disabled.render(),
            "  SKIP SELinux check (getsebool:  SELinux is disabled)\n"
        );
    }
}
