//! A small client for Podman's libpod REST API on its Unix socket: list, create, replace and
//! remove secrets. `psi setup` registers secrets through it instead of running the podman
//! CLI, so it works from a container that has only the socket mounted.
//!
//! Facts this client depends on (checked against Podman 4.3.1 and the 5.x sources):
//! - Paths carry the version `v4.0.0`: the oldest libpod API that 5.x still accepts, and one
//!   that 4.x serves.
//! - `POST /libpod/secrets/create` takes `name`, `driver` and `driveropts` as query
//!   parameters; `driveropts` is a JSON object (Podman's query decoder unmarshals maps from
//!   JSON and silently drops text it cannot parse). The body is the secret data. It must not
//!   be sent as a form (`application/x-www-form-urlencoded`): Podman parses forms before the
//!   handler runs and the handler then sees an empty body.
//! - Non-empty `driveropts` replace the whole option map from containers.conf; empty or
//!   absent ones take containers.conf's. The shell driver needs all four commands.
//! - Creating a shell-driver secret runs the driver's `store` command inside the Podman
//!   service. When it fails, Podman answers 500 with only `exit status N`; the command's own
//!   output goes to the service's stderr, not into the reply.
//! - Errors come back as JSON `{"cause", "message", "response"}`; a missing secret is 404.
//! - Creating a name that exists answers 500 with cause `secret name in use`, without
//!   running the driver. `replace=true` (Podman 5; 4.3.1 ignores unknown parameters and
//!   answers that same 500) replaces the secret under one lock that lookups also take, so
//!   the name resolves throughout: the driver's `delete` runs for the old ID, then `store`
//!   under a new ID, both with the new driver options. On a name that does not exist, 5.4.2
//!   calls `delete` with an empty ID and then removes whichever secret an empty ID prefix
//!   matches when only one exists: psi sends it only for a secret it has just listed (and
//!   psi's driver refuses the empty ID, which stops Podman before its database changes).
//!
//! One connection per call: `psi setup` makes a few calls per workload, and a fresh
//! connection cannot be left half-read by an earlier failure. Every call has a deadline so a
//! hung Podman service cannot hang setup. The secret data only ever goes into a request body:
//! errors name the secret, never its data or the query (driver options can hold psi's token).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

use zeroize::Zeroizing;

use crate::body::{collect_capped, Collect};
use crate::config::Scope;
use crate::encoding::uri_component;
use crate::error::{Error, Result, ResultExt};

/// The API version in every path (see the module doc).
const API_PREFIX: &str = "/v4.0.0/libpod";

/// How long one call may take, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest reply psi reads; a secret list of thousands of entries stays far below it.
const MAX_REPLY: usize = 16 << 20;

/// A libpod API client for one socket.
#[derive(Debug, Clone)]
pub struct Podman {
    socket: PathBuf,
    timeout: Duration,
}

/// One Podman secret as `list_secrets` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// Podman's 25-hex ID (what the shell driver sees as `SECRET_ID`).
    pub id: String,
    pub name: String,
    pub driver: String,
    pub driver_options: BTreeMap<String, String>,
}

/// The default Podman socket: `CONTAINER_HOST` when set (only `unix://` addresses: psi talks
/// to a local Podman), else the scope's socket.
pub fn default_socket(scope: Scope, env: &dyn Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    if let Some(host) = env("CONTAINER_HOST").filter(|v| !v.is_empty()) {
        let host = host.to_string_lossy();
        return match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(Error::Usage(format!(
                "CONTAINER_HOST={host} is not a unix:// socket address; psi needs the local Podman API socket (for example unix:///run/podman/podman.sock)"
            ))),
        };
    }
    match scope {
        Scope::System => Ok(PathBuf::from("/run/podman/podman.sock")),
        Scope::User => match env("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => Ok(PathBuf::from(dir).join("podman/podman.sock")),
            None => Err(Error::Usage(
                "XDG_RUNTIME_DIR is not set, so the user's Podman API socket cannot be found; set it (it is normally /run/user/<uid>) or set CONTAINER_HOST=unix://<socket>".into(),
            )),
        },
    }
}

/// The socket psi talks to: `podman_socket` from the config file, else [`default_socket`]
/// (resolved by `config`).
pub fn configured_socket(settings: &crate::config::Settings) -> Result<PathBuf> {
    settings.podman_socket.path()
}

// The parts of Podman's replies psi reads; other fields (5.x adds some) are ignored.

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireSecret {
    #[serde(rename = "ID")]
    id: String,
    spec: WireSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireSpec {
    #[serde(default)]
    name: String,
    driver: WireDriver,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireDriver {
    #[serde(default)]
    name: String,
    /// `null` when a secret has no options.
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct WireCreated {
    #[serde(rename = "ID")]
    id: String,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    cause: String,
}

impl Podman {
    pub fn new(socket: PathBuf) -> Podman {
        Podman {
            socket,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another per-call deadline.
    pub fn with_timeout(self, timeout: Duration) -> Podman {
        Podman { timeout, ..self }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every secret Podman knows, in Podman's order.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>> {
        let what = "list Podman secrets";
        let path = format!("{API_PREFIX}/secrets/json");
        let (status, body) = self.call(Method::GET, &path, Bytes::new(), what).await?;
        if status != StatusCode::OK {
            return Err(api_error(status, &body).context(what));
        }
        let secrets: Vec<WireSecret> = serde_json::from_slice(&body)
            .context("Podman's secret list is not the expected JSON")
            .context(what)?;
        Ok(secrets
            .into_iter()
            .map(|s| SecretInfo {
                id: s.id,
                name: s.spec.name,
                driver: s.spec.driver.name,
                driver_options: s.spec.driver.options.unwrap_or_default(),
            })
            .collect())
    }

    /// Creates secret `name` holding `data` and returns Podman's ID for it. `driver_opts`
    /// become the secret's whole option map; when empty, Podman takes containers.conf's.
    /// For the shell driver Podman runs its `store` command now, so `psi serve` must be up.
    pub async fn create_secret(
        &self,
        name: &str,
        driver: &str,
        driver_opts: &BTreeMap<String, String>,
        data: &[u8],
    ) -> Result<String> {
        let what = format!("create Podman secret '{name}'");
        let (status, body) = self
            .post_create(name, driver, driver_opts, data, false, &what)
            .await?;
        created(status, &body, driver).context(what)
    }

    /// Gives existing secret `name` (Podman ID `old_id`) new `data` and driver options, and
    /// returns its new ID and how it was done. In place where Podman can (`replace=true`,
    /// Podman 5), so the name never stops resolving; where Podman answers that the name is
    /// in use (Podman 4 has no replace) by removing `old_id` and creating `name` again, so
    /// the name does not exist in between. `name` must exist (see the module doc).
    pub async fn replace_secret(
        &self,
        name: &str,
        old_id: &str,
        driver: &str,
        driver_opts: &BTreeMap<String, String>,
        data: &[u8],
    ) -> Result<(String, Replaced)> {
        let what = format!("replace Podman secret '{name}'");
        let (status, body) = self
            .post_create(name, driver, driver_opts, data, true, &what)
            .await?;
        if !name_in_use(status, &body) {
            let id = created(status, &body, driver).context(what)?;
            return Ok((id, Replaced::InPlace));
        }
        // Podman 4: the name is in use because it was not replaced.
        let recreate = async {
            self.remove_secret(old_id).await?;
            self.create_secret(name, driver, driver_opts, data).await
        };
        let id = recreate.await.map_err(|err| err.context(what))?;
        Ok((id, Replaced::Recreated))
    }

    /// `POST /secrets/create` for `name`, with `replace=true` when `replace`.
    async fn post_create(
        &self,
        name: &str,
        driver: &str,
        driver_opts: &BTreeMap<String, String>,
        data: &[u8],
        replace: bool,
        what: &str,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>)> {
        let mut path = format!(
            "{API_PREFIX}/secrets/create?name={}&driver={}",
            uri_component(name),
            uri_component(driver)
        );
        if replace {
            path.push_str("&replace=true");
        }
        if !driver_opts.is_empty() {
            let json =
                serde_json::to_string(driver_opts).context("cannot encode the driver options")?;
            path.push_str("&driveropts=");
            path.extend(uri_component(&json));
        }
        self.call(Method::POST, &path, Bytes::copy_from_slice(data), what)
            .await
    }

    /// Removes a secret by name or ID; `false` when there was none. For the shell driver
    /// Podman runs its `delete` command, and a failing one leaves the secret in place.
    pub async fn remove_secret(&self, name_or_id: &str) -> Result<bool> {
        let what = format!("remove Podman secret '{name_or_id}'");
        let path = format!("{API_PREFIX}/secrets/{}", uri_component(name_or_id));
        let (status, body) = self
            .call(Method::DELETE, &path, Bytes::new(), &what)
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(api_error(status, &body).context(what)),
        }
    }

    /// The value of secret `name` as Podman reveals it (`showsecret=true`, Podman 5 and
    /// later); `None` when Podman does not reveal values (Podman 4 ignores the parameter).
    /// A missing secret is an error. The reply body is a zeroizing buffer and the value is
    /// parsed into a zeroizing string; serde_json's scratch buffer, used only when the JSON
    /// string has escapes, is not wiped.
    pub async fn secret_data(&self, name: &str) -> Result<Option<crate::secret::SecretValue>> {
        let what = format!("read Podman secret '{name}'");
        let path = format!(
            "{API_PREFIX}/secrets/{}/json?showsecret=true",
            uri_component(name)
        );
        let (status, body) = self.call(Method::GET, &path, Bytes::new(), &what).await?;
        if status != StatusCode::OK {
            return Err(api_error(status, &body).context(what));
        }
        #[derive(Deserialize)]
        struct Inspect {
            #[serde(rename = "SecretData", default)]
            data: Option<crate::secret::SecretString>,
        }
        let inspect: Inspect = serde_json::from_slice(&body)
            .context("Podman's secret inspect reply is not the expected JSON")
            .context(what)?;
        Ok(inspect
            .data
            .filter(|d| !d.expose().is_empty())
            .map(crate::secret::SecretValue::from))
    }

    /// One request within the deadline; any status comes back, transport failures as errors.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        what: &str,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>)> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(result) => result.map_err(|err| err.context(what)),
            Err(_) => Err(Error::Podman(format!(
                "the Podman API at {} did not answer within {:?}",
                self.socket.display(),
                self.timeout
            ))
            .context(what)),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>)> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|err| self.unreachable(err))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| self.broken(err))?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "podman")
            // Anything but a form type: Podman would consume a form body itself (module doc).
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(body))
            .context("cannot build a Podman API request")?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| self.broken(err))?;
            let status = response.status();
            // Revealed values arrive in replies: collected into a zeroizing buffer.
            let body = collect_capped(response.into_body(), 0, MAX_REPLY)
                .await
                .map_err(|err| match err {
                    Collect::TooLarge => Error::Podman(format!(
                        "the Podman API at {} sent a reply larger than {}",
                        self.socket.display(),
                        crate::fsutil::human(MAX_REPLY)
                    )),
                    Collect::Failed(err) => self.broken(err),
                })?;
            Ok((status, body))
        };
        // Drive the connection in this task rather than a spawned one, so a deadline that
        // drops this future drops the connection with it.
        let mut exchange = std::pin::pin!(exchange);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            biased;
            result = &mut exchange => result,
            closed = &mut conn => {
                closed.map_err(|err| self.broken(err))?;
                // The connection ended cleanly: the reply, if any, is already buffered.
                exchange.await
            }
        }
    }

    fn unreachable(&self, err: std::io::Error) -> Error {
        use std::io::ErrorKind;
        let hint = match err.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                let start = if nix::unistd::getuid().is_root() {
                    "systemctl enable --now podman.socket"
                } else {
                    "systemctl --user enable --now podman.socket"
                };
                format!("; start the Podman API socket: {start} (or set CONTAINER_HOST=unix://<socket> to use another)")
            }
            ErrorKind::PermissionDenied => {
                "; run psi as the user that owns this Podman (root for the system socket)".into()
            }
            _ => String::new(),
        };
        Error::Podman(format!(
            "cannot connect to the Podman API socket {}: {err}{hint}",
            self.socket.display()
        ))
    }

    /// A failure after connecting; `err` is hyper's, or the reply size limit's.
    fn broken(&self, err: impl std::fmt::Display) -> Error {
        Error::Podman(format!(
            "the Podman API at {} broke off the exchange: {err}",
            self.socket.display()
        ))
    }
}

/// How [`Podman::replace_secret`] replaced a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// In one step (Podman 5): the name resolved throughout.
    InPlace,
    /// Removed, then created again (Podman 4): the name did not exist in between.
    Recreated,
}

/// The ID in a create's reply, or the reply as an error.
fn created(status: StatusCode, body: &[u8], driver: &str) -> Result<String> {
    if status != StatusCode::OK {
        let mut message = api_message(status, body);
        if driver == "shell" && message.contains("exit status") {
            // Podman keeps the command's output to itself (module doc): say where it is.
            message.push_str("; the shell driver's store command failed: check that psi serve is running and see its log (or the Podman service's) for the reason");
        }
        return Err(Error::Podman(message));
    }
    let created: WireCreated =
        serde_json::from_slice(body).context("Podman's reply has no secret ID")?;
    Ok(created.id)
}

/// Whether a create was refused because the name exists: what a Podman without replace
/// answers to `replace=true` (module doc).
fn name_in_use(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::INTERNAL_SERVER_ERROR
        && serde_json::from_slice::<WireError>(body).is_ok_and(|e| e.cause == "secret name in use")
}

/// A non-2xx reply as an error: the status and Podman's own message.
fn api_error(status: StatusCode, body: &[u8]) -> Error {
    Error::Podman(api_message(status, body))
}

fn api_message(status: StatusCode, body: &[u8]) -> String {
    let detail = match serde_json::from_slice::<WireError>(body) {
        Ok(WireError { message, cause }) if !message.is_empty() => {
            if cause.is_empty() || message.contains(&cause) {
                message
            } else {
                format!("{message} ({cause})")
            }
        }
        Ok(WireError { cause, .. }) if !cause.is_empty() => cause,
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            match text.char_indices().nth(300) {
                Some((cut, _)) => format!("{}...", &text[..cut]),
                None if text.is_empty() => "(no message)".into(),
                None => text.to_owned(),
            }
        }
    };
    format!("Podman answered {status}: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn default_socket_follows_container_host_then_scope() {
        let none = env_of(&[]);
        assert_eq!(
            default_socket(Scope::System, &none).unwrap(),
            PathBuf::from("/run/podman/podman.sock")
        );
        let xdg = env_of(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            default_socket(Scope::User, &xdg).unwrap(),
            PathBuf::from("/run/user/1000/podman/podman.sock")
        );
        let host = env_of(&[
            ("CONTAINER_HOST", "unix:///tmp/p.sock"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ]);
        for scope in [Scope::System, Scope::User] {
            assert_eq!(
                default_socket(scope, &host).unwrap(),
                PathBuf::from("/tmp/p.sock")
            );
        }
        // An empty CONTAINER_HOST is as good as unset.
        let empty = env_of(&[("CONTAINER_HOST", "")]);
        assert_eq!(
            default_socket(Scope::System, &empty).unwrap(),
            PathBuf::from("/run/podman/podman.sock")
        );
    }

    #[test]
    fn default_socket_errors_say_what_to_set() {
        let err = default_socket(Scope::User, &env_of(&[])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().starts_with("XDG_RUNTIME_DIR is not set"),
            "{err}"
        );
        let ssh = env_of(&[("CONTAINER_HOST", "ssh://core@host/run/podman/podman.sock")]);
        let err = default_socket(Scope::System, &ssh).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            "CONTAINER_HOST=ssh://core@host/run/podman/podman.sock is not a unix:// socket address; psi needs the local Podman API socket (for example unix:///run/podman/podman.sock)"
        );
        let bare = env_of(&[("CONTAINER_HOST", "unix://")]);
        assert!(default_socket(Scope::System, &bare).is_err());
    }

    #[test]
    fn api_errors_carry_the_status_and_podmans_message() {
        let body =
            br#"{"cause":"secret name in use","message":"a1: secret name in use","response":500}"#;
        assert_eq!(
            api_error(StatusCode::INTERNAL_SERVER_ERROR, body).to_string(),
            "Podman answered 500 Internal Server Error: a1: secret name in use"
        );
        let body = br#"{"cause":"exit status 3","message":"creating secret a3","response":500}"#;
        assert_eq!(
            api_error(StatusCode::INTERNAL_SERVER_ERROR, body).to_string(),
            "Podman answered 500 Internal Server Error: creating secret a3 (exit status 3)"
        );
        assert_eq!(
            api_error(StatusCode::NOT_FOUND, b"Not Found\n").to_string(),
            "Podman answered 404 Not Found: Not Found"
        );
        assert_eq!(
            api_error(StatusCode::BAD_GATEWAY, b"").to_string(),
            "Podman answered 502 Bad Gateway: (no message)"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            api_error(StatusCode::BAD_REQUEST, long.as_bytes()).to_string(),
            format!("Podman answered 400 Bad Request: {}...", "x".repeat(300))
        );
    }

    #[test]
    fn only_podmans_name_in_use_answer_means_no_replace() {
        // Podman 4.3.1's answer to `replace=true` on an existing name, byte for byte.
        let in_use =
            br#"{"cause":"secret name in use","message":"a: secret name in use","response":500}"#;
        assert!(name_in_use(StatusCode::INTERNAL_SERVER_ERROR, in_use));
        // Other failures of a replace are errors, never a reason to remove the secret.
        let store_failed = br#"{"cause":"exit status 3","message":"creating secret o: exit status 3","response":500}"#;
        assert!(!name_in_use(
            StatusCode::INTERNAL_SERVER_ERROR,
            store_failed
        ));
        let ambiguous = br#"{"cause":"secret is ambiguous","message":"deleting secret : more than one result secret with prefix : secret is ambiguous","response":500}"#;
        assert!(!name_in_use(StatusCode::INTERNAL_SERVER_ERROR, ambiguous));
        assert!(!name_in_use(StatusCode::CONFLICT, in_use));
        assert!(!name_in_use(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"secret name in use"
        ));
    }

    /// A peer that accepts and never answers stands for a hung Podman service.
    #[tokio::test]
    async fn a_silent_socket_times_out_with_the_socket_named() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("hung.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                open.push(stream);
            }
        });
        let podman = Podman::new(socket.clone()).with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let err = podman.list_secrets().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err.to_string(),
            format!(
                "list Podman secrets: the Podman API at {} did not answer within 200ms",
                socket.display()
            )
        );
        hold.abort();
    }
}
