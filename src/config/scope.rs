//! The scope table: system scope for root, user scope otherwise, and where each of psi's
//! files lives by default in each.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// System scope when running as root, user scope otherwise (as the original).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

/// The scope path table: where each file lives by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePaths {
    pub config: PathBuf,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub systemd_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub containers_conf_d: PathBuf,
    /// Where `psi systemd install` puts its tmpfiles.d file (the user manager reads
    /// `~/.config/user-tmpfiles.d`).
    pub tmpfiles_dir: PathBuf,
}

impl ScopePaths {
    /// `home` and `runtime_dir` matter only for the user scope; `runtime_dir` falls back to
    /// `/run/user/<uid>` as the original does.
    pub fn new(
        scope: Scope,
        uid: u32,
        home: Option<&Path>,
        runtime_dir: Option<&Path>,
    ) -> Result<ScopePaths> {
        match scope {
            Scope::System => Ok(ScopePaths {
                config: "/etc/psi/config.yaml".into(),
                config_dir: "/etc/psi".into(),
                state_dir: "/var/lib/psi".into(),
                socket: "/run/psi/psi.sock".into(),
                systemd_dir: "/etc/containers/systemd".into(),
                unit_dir: "/etc/systemd/system".into(),
                containers_conf_d: "/etc/containers/containers.conf.d".into(),
                tmpfiles_dir: "/etc/tmpfiles.d".into(),
            }),
            Scope::User => {
                let home = home.ok_or_else(|| {
                    Error::Usage("HOME is not set; the user scope keeps its files under it".into())
                })?;
                let runtime = runtime_dir
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
                Ok(ScopePaths {
                    config: home.join(".config/psi/config.yaml"),
                    config_dir: home.join(".config/psi"),
                    state_dir: home.join(".local/share/psi"),
                    socket: runtime.join("psi/psi.sock"),
                    systemd_dir: home.join(".config/containers/systemd"),
                    unit_dir: home.join(".config/systemd/user"),
                    containers_conf_d: home.join(".config/containers/containers.conf.d"),
                    tmpfiles_dir: home.join(".config/user-tmpfiles.d"),
                })
            }
        }
    }
}
