//! Which program Podman's driver commands run to reach psi serve, shared by `psi install`
//! (psi.conf) and `psi setup` (the options of the secrets it creates), so both write the
//! same commands.
//!
//! psi's own client is the default: it saves the start-up of a curl process on every secret
//! of every container start. curl stays the choice inside a container (the path of psi in
//! its image means nothing to the host's Podman) and when psi cannot tell its own path.
//!
//! psi's client is the small `psi-client` binary when it sits in the same directory as the
//! psi binary the commands name (`driver.psi_path`, else this binary's own path), and
//! `<psi> client` otherwise, with a warning: the same client inside the whole of psi, which
//! works but costs more per secret (README, "Point Podman at psi"). Falling back rather
//! than failing keeps an install that has only `psi` (as before `psi-client` existed)
//! working, including its boot-time `psi setup`; the warning says what to install.
//!
//! With the psi client, the socket token goes in a 0600 file in the state directory, named
//! by `--token-file`, rather than on the command line, where every local user could read it
//! in `/proc/<pid>/cmdline`. A token change then needs no re-created secrets either: their
//! commands name the file, not the token.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::config::{DriverClient, Settings};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::state::StateDir;
use crate::unitgen::driver_conf::{commands, Client, DriverConf, DriverOpts};

/// Files that mark a container: Podman's and Docker's.
const CONTAINER_MARKERS: [&str; 2] = ["/run/.containerenv", "/.dockerenv"];

/// The file name of the small client binary, looked for beside psi.
pub const LEAN_CLIENT: &str = "psi-client";

/// The resolved choice, owning what [`DriverConf`] borrows.
#[derive(Debug)]
pub struct Driver<'a> {
    settings: &'a Settings,
    /// psi's client and its token file, or `None` for curl.
    psi: Option<(Program, Option<PathBuf>)>,
}

/// Which binary runs psi's client.
#[derive(Debug)]
enum Program {
    /// `psi-client OP`.
    Lean(PathBuf),
    /// `psi client OP`.
    Psi(PathBuf),
}

impl Program {
    /// `psi-client` beside the psi binary `psi`, else `psi` itself, with a warning.
    fn beside(psi: PathBuf) -> Program {
        let lean = psi.with_file_name(LEAN_CLIENT);
        if lean.is_file() {
            return Program::Lean(lean);
        }
        tracing::warn!(
            missing = %lean.display(),
            "no psi-client beside psi: the driver commands run `psi client`, which works but \
             costs more on every container start; install psi-client in that directory \
             (README, \"Build\") and run this again"
        );
        Program::Psi(psi)
    }
}

impl<'a> Driver<'a> {
    /// Resolves the client: `requested` (`psi install --client`), else the config's
    /// `driver.client`, else psi when its path is known (`driver.psi_path`, or this binary's
    /// own outside a container) and curl otherwise.
    pub fn resolve(settings: &'a Settings, requested: Option<DriverClient>) -> Result<Driver<'a>> {
        // `driver.psi_path` is absolute: checked at load.
        let config = &settings.driver;
        let use_psi = match requested.or(config.client) {
            Some(DriverClient::Curl) => false,
            Some(DriverClient::Psi) => true,
            None => {
                config.psi_path.is_some() || (!in_container() && std::env::current_exe().is_ok())
            }
        };
        let psi = if use_psi {
            // Without psi_path, this binary's own path: inside a container that is the
            // image's, which is why the default there is curl, but an explicit choice is
            // the operator's (a psi at the same path on the host).
            let binary = match &config.psi_path {
                Some(path) => path.clone(),
                None => std::env::current_exe().map_err(|err| Error::Io {
                    context: "cannot tell the path of the psi binary for --client psi".into(),
                    source: err,
                })?,
            };
            let token_file = settings
                .socket_token
                .as_ref()
                .map(|_| StateDir::new(&settings.state_dir).socket_token_path());
            Some((Program::beside(binary), token_file))
        } else {
            None
        };
        Ok(Driver { settings, psi })
    }

    /// The driver options setup gives the secrets it creates, and which stored ones it
    /// takes as current.
    pub fn opts(&self, exact: bool) -> DriverOpts {
        let token_file = self
            .psi
            .as_ref()
            .and_then(|(_, file)| file.clone())
            .or_else(|| {
                self.settings
                    .socket_token
                    .as_ref()
                    .map(|_| StateDir::new(&self.settings.state_dir).socket_token_path())
            });
        DriverOpts::new(
            commands(&self.conf()),
            self.settings
                .socket_token
                .as_ref()
                .map(|(t, _)| t.expose().to_owned()),
            token_file,
            exact,
        )
    }

    pub fn conf(&self) -> DriverConf<'_> {
        let client = match &self.psi {
            Some((Program::Lean(binary), token_file)) => Client::Lean {
                binary,
                token_file: token_file.as_deref(),
            },
            Some((Program::Psi(binary), token_file)) => Client::Psi {
                binary,
                token_file: token_file.as_deref(),
            },
            None => Client::Curl {
                token: self.settings.socket_token.as_ref().map(|(t, _)| t.expose()),
            },
        };
        DriverConf {
            socket: &self.settings.socket_path,
            client,
        }
    }

    /// Writes the token file the psi client's commands name (0600, only when it changed).
    /// Nothing to do for curl or without a token.
    pub fn write_token_file(&self) -> Result<()> {
        let (Some((_, Some(path))), Some((token, _))) = (&self.psi, &self.settings.socket_token)
        else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            fsutil::ensure_dir(dir, 0o700)?;
        }
        if fsutil::write_if_changed(path, token.expose().as_bytes(), fsutil::PRIVATE)? {
            tracing::info!(path = %path.display(), "wrote the socket token file for psi client");
        }
        Ok(())
    }
}

/// The token a psi command presents to `psi serve` (`psi setup`'s cache reload, `psi status`):
/// the configured one, else the one in the psi client's token file, for a serve that has
/// its token only as a credential.
pub fn socket_token(settings: &Settings) -> Option<Zeroizing<String>> {
    settings
        .socket_token
        .as_ref()
        .map(|(t, _)| Zeroizing::new(t.expose().to_owned()))
        .or_else(|| {
            let path = StateDir::new(&settings.state_dir).socket_token_path();
            fsutil::read_capped_text(&path, fsutil::CONFIG)
                .ok()
                .map(|t| Zeroizing::new(t.trim().to_owned()))
                .filter(|t| crate::client::validate_socket_token(t).is_ok())
        })
}

/// Whether psi runs inside a container (Podman's or Docker's marker file exists).
pub fn in_container() -> bool {
    CONTAINER_MARKERS.iter().any(|m| Path::new(m).exists())
}
