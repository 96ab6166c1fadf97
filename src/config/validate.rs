//! Checks serde cannot make: what needs more than one key (references between blocks, a
//! provider's auth per project, one writer per output file) and rules on a single value that
//! depend on how psi uses it (names that become unit or volume names, absolute paths).
//! Messages start with the key path.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use super::schema::{
    AuthConfig, AuthMethod, ConfigFile, InfisicalConfig, ProvidersConfig, SecretKind,
    WorkloadConfig,
};
use super::values::TimerSpan;
use crate::error::Result;

impl InfisicalConfig {
    /// Checks what serde cannot: each auth block has what its method needs, every project is
    /// covered by its own or the global auth, and every TLS output path is absolute and
    /// written by one key only. Messages name the key path.
    /// A String error: the caller makes it an `Error::Config` naming the file.
    fn validate(&self) -> Result<(), String> {
        const AT: &str = "providers.infisical";
        if let Some(auth) = &self.auth {
            auth.validate(&format!("{AT}.auth"))?;
        }
        let mut uncovered = Vec::new();
        for (alias, project) in &self.projects {
            match &project.auth {
                Some(auth) => auth.validate(&format!("{AT}.projects.{alias}.auth"))?,
                None if self.auth.is_none() => uncovered.push(alias.as_str()),
                None => {}
            }
        }
        if !uncovered.is_empty() {
            return Err(format!(
                "no global auth and no per-project auth for projects: {}; set {AT}.auth or add auth to each project",
                uncovered.join(", ")
            ));
        }
        check_delay(
            &format!("{AT}.tls.renew_randomized_delay"),
            &self.tls.renew_randomized_delay,
            "the renewal timer's interval",
            "1d",
            RENEW_INTERVAL,
        )?;
        // Which key writes each output file, so two never write the same one.
        let mut written: BTreeMap<&Path, String> = BTreeMap::new();
        for (name, cert) in &self.tls.certificates {
            let at = format!("{AT}.tls.certificates.{name}");
            if cert.profile_id.is_empty() && cert.ca_id.is_none() {
                return Err(format!(
                    "{at}: set profile_id (a certificate profile) or ca_id (a CA, for Infisical without certificate profiles)"
                ));
            }
            if !self.projects.contains_key(&cert.project) {
                return Err(format!(
                    "{at}.project: '{}' is not a project under {AT}.projects",
                    cert.project
                ));
            }
            // `ttl` is Infisical's to judge (it takes forms psi never reads); modes, hooks and
            // durations were checked while parsing.
            for (key, path) in cert.output.files() {
                let key = format!("{at}.output.{key}");
                check_output_path(path).map_err(|err| format!("{key}: {err}"))?;
                if let Some(other) = written.get(path) {
                    return Err(format!("{key}: '{}' is also {other}", path.display()));
                }
                written.insert(path, key);
            }
        }
        Ok(())
    }
}

/// An output path: absolute, because the renewal timer does not run where `psi` was typed
/// and the generated units mount and create its directory; and a file, not a directory.
/// A String error: the caller makes it an `Error::Config` naming the file.
fn check_output_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("'{}' is not an absolute path", path.display()));
    }
    if path.as_os_str().as_bytes().ends_with(b"/") || path.file_name().is_none() {
        return Err(format!(
            "'{}' names a directory, not a file",
            path.display()
        ));
    }
    Ok(())
}

impl AuthConfig {
    /// What the method needs; `at` is the key path for the message.
    /// A String error: the caller makes it an `Error::Config` naming the file.
    fn validate(&self, at: &str) -> Result<(), String> {
        let method = self.method.as_str();
        match self.method {
            AuthMethod::UniversalAuth => {
                if self.client_id.is_none() || self.client_secret.is_none() {
                    return Err(format!(
                        "{at}: {method} requires client_id and client_secret"
                    ));
                }
            }
            AuthMethod::AwsIam | AuthMethod::Gcp | AuthMethod::Azure => {
                if self.identity_id.is_none() {
                    return Err(format!("{at}: {method} requires identity_id"));
                }
            }
        }
        if self.region.is_some() && self.method != AuthMethod::AwsIam {
            return Err(format!(
                "{at}.region: applies to aws-iam only, not {method}"
            ));
        }
        Ok(())
    }
}

/// The TLS renewal timer's period (`OnCalendar=daily`).
const RENEW_INTERVAL: Duration = Duration::from_secs(86_400);

/// A timer's randomized delay may not be longer than its interval. An error, not a warning:
/// with `FixedRandomDelay=yes` each host keeps one offset in [0, delay), added to every
/// period, so a longer delay silently stretches some hosts' period to nearly twice what the
/// interval says (a refresh or a renewal that late is a fault, not a spread), and a warning
/// from a generator run once at provisioning is rarely read.
fn check_delay(
    key: &str,
    delay: &TimerSpan,
    interval_key: &str,
    interval_text: &str,
    interval: Duration,
) -> Result<(), String> {
    if delay.duration() > interval {
        return Err(format!(
            "{key}: {} is longer than {interval_key} ({interval_text}); set it to at most the interval (it spreads a fleet's runs over that window)",
            delay.as_str()
        ));
    }
    Ok(())
}

/// Checks that need more than one key: references between blocks.
/// A String error: the caller makes it an `Error::Config` naming the file.
pub(super) fn validate(file: &ConfigFile, providers: &ProvidersConfig) -> Result<(), String> {
    if file.cache.watch_interval.is_zero() {
        return Err("cache.watch_interval: must be more than 0 (default: 2s)".into());
    }
    check_delay(
        "cache.refresh_randomized_delay",
        &file.cache.refresh_randomized_delay,
        "cache.refresh_interval",
        file.cache.refresh_interval.as_str(),
        file.cache.refresh_interval.duration(),
    )?;
    // The host's Podman runs it, from wherever: a relative path means nothing there.
    if let Some(path) = file.driver.psi_path.as_deref().filter(|p| !p.is_absolute()) {
        return Err(format!(
            "driver.psi_path: '{}' is not an absolute path; name the psi binary the host's Podman runs, e.g. /usr/local/bin/psi",
            path.display()
        ));
    }
    if let Some(infisical) = &providers.infisical {
        infisical.validate()?;
    }
    if let Some(nitrokey) = &providers.nitrokeyhsm {
        validate_volume_name(&nitrokey.pcscd_volume)?;
    }
    let configured = providers.names();
    for (name, workload) in &file.workloads {
        if !configured.contains(&workload.provider.as_str()) {
            return Err(format!(
                "workloads.{name}.provider: workload '{name}' uses provider '{}', but it is not configured (configured: {})",
                workload.provider,
                crate::error::list_or_none(&configured)
            ));
        }
        validate_workload(name, workload)?;
        if let (Some(infisical), "infisical") = (&providers.infisical, workload.provider.as_str()) {
            for (index, source) in workload.secrets.iter().enumerate() {
                if !infisical.projects.contains_key(&source.project) {
                    let known: Vec<&str> = infisical.projects.keys().map(String::as_str).collect();
                    return Err(format!(
                        "workloads.{name}.secrets[{index}].project: '{}' is not a project under providers.infisical.projects (configured: {})",
                        source.project,
                        crate::error::list_or_none(&known)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `pcscd_volume` names a Podman volume and the quadlet file `<name>.volume`: Podman's own
/// rule for volume names, which also keeps it a plain file name.
/// A String error: the caller makes it an `Error::Config` naming the file.
fn validate_volume_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(format!(
            "providers.nitrokeyhsm.pcscd_volume: '{name}' is not a Podman volume name; start with a letter or digit, then use letters, digits, '_', '.' and '-'"
        ))
    }
}

/// A workload name becomes part of Podman secret names (`{workload}--{KEY}`) and of a unit
/// name; a source must ask for one coherent thing. Checked at load so `psi setup` never
/// starts on a config it would half apply.
/// A String error: the caller makes it an `Error::Config` naming the file.
fn validate_workload(name: &str, workload: &WorkloadConfig) -> Result<(), String> {
    let stem = name.strip_suffix('@').unwrap_or(name);
    if stem.is_empty()
        || !stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        || stem.starts_with(['.', '-'])
    {
        return Err(format!(
            "workloads.{name}: '{name}' is not a usable workload name; use letters, digits, '_', '.' and '-' (and a final '@' for a template unit)"
        ));
    }
    for (index, unit) in workload.depends_on.iter().enumerate() {
        if unit.is_empty() || unit.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "workloads.{name}.depends_on[{index}]: '{unit}' is not a unit name"
            ));
        }
    }
    for (index, source) in workload.secrets.iter().enumerate() {
        let at = format!("workloads.{name}.secrets[{index}]");
        if !source.path.starts_with('/') {
            return Err(format!("{at}.path: '{}' must start with '/'", source.path));
        }
        for (var, key) in &source.env {
            if !crate::shell::is_var_name(var) {
                return Err(format!(
                    "{at}.env.{var}: '{var}' is not a valid environment variable name (letters, digits and '_', not starting with a digit)"
                ));
            }
            if key.is_empty() {
                return Err(format!("{at}.env.{var}: the key is empty"));
            }
        }
        let mount = source.kind == Some(SecretKind::Mount);
        if mount && !source.env.is_empty() {
            return Err(format!(
                "{at}: 'type: mount' mounts every key of the source as a file, so it cannot have an 'env' map; use 'files' for the keys to mount and 'env' for the variables"
            ));
        }
        if !mount {
            for (field, set) in [
                ("target", source.target.is_some()),
                ("mode", source.mode.is_some()),
                ("uid", source.uid.is_some()),
                ("gid", source.gid.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "{at}.{field}: only applies to file secrets; add 'type: mount' to the source, or use 'files'"
                    ));
                }
            }
        }
        if let Some(target) = &source.target {
            check_target(target).map_err(|e| format!("{at}.target: {e}"))?;
        }
        for (key, file) in &source.files {
            if let Some(target) = &file.target {
                check_target(target).map_err(|e| format!("{at}.files.{key}.target: {e}"))?;
            }
        }
    }
    Ok(())
}

/// A file target goes into a `Secret=` line as one comma-separated field.
/// A String error: the caller makes it an `Error::Config` naming the file.
fn check_target(target: &str) -> Result<(), String> {
    if target.is_empty()
        || target
            .chars()
            .any(|c| c == ',' || c.is_whitespace() || c.is_control())
    {
        Err(format!(
            "'{target}' cannot be a secret file path (empty, or a comma, space or control character)"
        ))
    } else {
        Ok(())
    }
}
