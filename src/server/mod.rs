//! `psi serve`'s server: the listening socket (bound race-free, or adopted from systemd),
//! the accept loop with one task per connection, request handling, systemd notification and
//! graceful shutdown. The request logic itself is pure and lives in [`routes`].
//!
//! Concurrency: every connection runs on its own task and provider calls are async, so a
//! slow provider delays only the lookups waiting on it, never `/healthz` or other lookups.

pub mod routes;

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;

use crate::body::{collect_capped, Collect};
use crate::config::EnvLookup;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::secret::SecretString;
use crate::service::{CacheState, Service};
use routes::Route;

/// Time limits that keep a stalled client or a stuck request from holding psi.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send its request headers.
    pub header: Duration,
    /// Time a client has to send its request body once the headers are in.
    pub body: Duration,
    /// Time in-flight requests get to finish after a stop signal.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header: Duration::from_secs(10),
            body: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Everything a request handler needs, shared by all connections (read-only: no lock).
pub struct App {
    pub service: Service,
    /// The bearer token; `None` disables auth.
    pub token: Option<SecretString>,
    pub limits: Limits,
}

/// A listening socket and, when psi bound it itself, the file to remove on shutdown.
pub struct Bound {
    pub listener: StdListener,
    pub file: SocketFile,
}

/// The socket file psi created (path and device/inode identity), or none when systemd
/// owns the socket.
pub struct SocketFile(Option<(PathBuf, u64, u64)>);

impl SocketFile {
    /// Removes the socket file, if psi created it and it is still the same file (a newer
    /// psi may have replaced it).
    pub fn remove(&self) {
        if let Some((path, dev, ino)) = &self.0 {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.dev() == *dev && meta.ino() == *ino {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

    /// Whether the socket came from systemd.
    pub fn activated(&self) -> bool {
        self.0.is_none()
    }
}

/// Binds `path` with mode 0600 from the moment it is reachable: the socket is bound inside a
/// fresh 0700 directory next to `path`, chmod-ed, then renamed into place. An existing socket
/// is replaced only when nothing answers on it; anything else at `path` is left alone.
pub fn bind(path: &Path) -> Result<Bound> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fsutil::ensure_dir(&parent, 0o700)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::Failed(format!(
                    "{} is in use: another psi serve is answering on it; stop it first or use another --socket",
                    path.display()
                )));
            }
            tracing::info!(socket = %path.display(), "replacing stale socket");
        }
        Ok(_) => {
            return Err(Error::Failed(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )))
        }
        Err(_) => {}
    }
    let staging = tempfile::Builder::new()
        .prefix(".psi-socket.")
        .tempdir_in(&parent)
        .map_err(|err| Error::io("cannot create a staging directory in", &parent, err))?;
    // tempdir creates 0700; the socket inside is unreachable to others whatever the umask.
    let staged = staging.path().join("sock");
    let listener =
        StdListener::bind(&staged).map_err(|err| Error::io("cannot bind", &staged, err))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| Error::io("cannot set the mode of", &staged, err))?;
    std::fs::rename(&staged, path)
        .map_err(|err| Error::io("cannot move the socket to", path, err))?;
    let meta =
        std::fs::symlink_metadata(path).map_err(|err| Error::io("cannot stat", path, err))?;
    Ok(Bound {
        listener,
        file: SocketFile(Some((path.to_path_buf(), meta.dev(), meta.ino()))),
    })
}

/// The listening socket systemd passed (socket activation), if `LISTEN_FDS`/`LISTEN_PID`
/// say it is meant for this process.
pub fn from_systemd(env: EnvLookup<'_>) -> Result<Option<Bound>> {
    let var = |name| env(name).and_then(|v| v.into_string().ok());
    let (Some(pid), Some(fds)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.trim() != std::process::id().to_string() {
        return Ok(None);
    }
    let count: u32 = fds
        .trim()
        .parse()
        .map_err(|_| Error::Usage(format!("LISTEN_FDS={fds:?} is not a number")))?;
    if count == 0 {
        return Ok(None);
    }
    if count > 1 {
        tracing::warn!(
            count,
            "systemd passed several sockets; using the first (fd 3)"
        );
    }
    let listener = adopt_fd3()?;
    Ok(Some(Bound {
        listener,
        file: SocketFile(None),
    }))
}

#[allow(unsafe_code)]
fn adopt_fd3() -> Result<StdListener> {
    use std::os::fd::FromRawFd;
    const SD_LISTEN_FDS_START: i32 = 3;
    let stat = nix::sys::stat::fstat(SD_LISTEN_FDS_START)
        .map_err(|e| Error::Failed(format!("LISTEN_FDS: fd 3 is not usable: {e}")))?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(Error::Usage("LISTEN_FDS: fd 3 is not a socket".into()));
    }
    // SAFETY: systemd hands fd 3 to this process alone (LISTEN_PID matched); nothing else
    // in psi owns it, so taking ownership once is sound.
    Ok(unsafe { StdListener::from_raw_fd(SD_LISTEN_FDS_START) })
}

/// Sends `state` (`READY=1`, `STOPPING=1`) to systemd when `NOTIFY_SOCKET` is set.
pub fn notify(env: EnvLookup<'_>, state: &str) {
    let Some(target) = env("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = target.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), Path::new(&target))?;
        }
        Ok(())
    })();
    if let Err(err) = result {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting and gives in-flight
/// requests `app.limits.shutdown_grace` to finish.
pub async fn run(
    listener: StdListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    listener.set_nonblocking(true).map_err(|err| Error::Io {
        context: "socket".into(),
        source: err,
    })?;
    let listener = UnixListener::from_std(listener).map_err(|err| Error::Io {
        context: "socket".into(),
        source: err,
    })?;
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let app = Arc::clone(&app);
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(app.limits.header)
                    .serve_connection(TokioIo::new(stream), service_fn(move |req| {
                        let app = Arc::clone(&app);
                        async move { Ok::<_, std::convert::Infallible>(handle(&app, req).await) }
                    }));
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(app.limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period; stopping anyway");
    }
    Ok(())
}

/// Handles one request: route, auth, then the service call. Writes exactly one audit line
/// for secret operations (the service does) or for refusals (here).
pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let route = routes::route(req.method(), req.uri().path());
    let auth = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(err) = routes::authorize(route.as_ref(), app.token.as_ref(), auth) {
        tracing::warn!(
            event = "socket.auth",
            path = req.uri().path(),
            outcome = "error",
            "unauthorized request"
        );
        return routes::error_response(&err);
    }
    let route = match route {
        Ok(route) => route,
        Err(err) => {
            tracing::info!(event = "http.request", method = %req.method(), path = req.uri().path(), outcome = "error", error = %err);
            return routes::error_response(&err);
        }
    };
    let result = match route {
        Route::Healthz => {
            tracing::debug!(event = "healthz", outcome = "success");
            Ok(Bytes::from_static(b"ok"))
        }
        Route::HealthzCache => {
            return match app.service.cache() {
                CacheState::Disabled => routes::cache_health(None, None),
                CacheState::Unavailable(why) => routes::cache_health(None, Some(why)),
                CacheState::Live(live) => routes::cache_health(Some(&live.health()), None),
            };
        }
        Route::Lookup(id) => app
            .service
            .lookup(&id)
            .await
            .map(|value| Bytes::from_owner(Outgoing(value))),
        // Store and delete answer 200 with no body (the original said `ok`): Podman copies
        // the driver command's stdout into its own, so a body would precede the ID that
        // `podman secret create` and `podman secret rm` print.
        Route::Store(id) => match read_body(req, app.limits.body).await {
            Ok(body) => app.service.store(&id, &body).await.map(|()| Bytes::new()),
            Err(err) => {
                tracing::warn!(event = "secret.store", secret_id = %id, outcome = "error", error = %err);
                Err(err)
            }
        },
        Route::Delete(id) => app.service.delete(&id).map(|()| Bytes::new()),
        Route::List => app.service.list().map(|ids| Bytes::from(ids.join("\n"))),
    };
    match result {
        Ok(body) => routes::ok(body),
        Err(err) => routes::error_response(&err),
    }
}

/// Reads a request body of at most [`routes::MAX_BODY`] bytes within `limit`. psi's
/// copy (possibly a raw value to seal) zeroizes on drop; hyper's read buffers are its own.
async fn read_body(req: Request<Incoming>, limit: Duration) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let too_large = Error::BodyTooLarge {
        limit: routes::MAX_BODY,
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > routes::MAX_BODY as u64) {
        return Err(too_large);
    }
    let body = collect_capped(
        req.into_body(),
        declared.unwrap_or(0) as usize,
        routes::MAX_BODY,
    );
    match tokio::time::timeout(limit, body).await {
        Err(_) => Err(Error::Timeout(format!(
            "request body not received within {} ms",
            limit.as_millis()
        ))),
        Ok(Err(Collect::TooLarge)) => Err(too_large),
        Ok(Err(Collect::Failed(err))) => Err(Error::InvalidBody(format!(
            "cannot read the request body: {err}"
        ))),
        Ok(Ok(body)) => Ok(body),
    }
}

/// A looked-up value as the response body: hyper writes it from this buffer (vectored
/// writes on the socket, no copy) and dropping the response zeroizes it.
struct Outgoing(crate::secret::SecretValue);

impl AsRef<[u8]> for Outgoing {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}
