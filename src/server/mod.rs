//! `psi serve`'s server: the listening socket (bound race-free, or adopted from systemd),
//! the accept loop, request handling, systemd notification and graceful shutdown. The
//! request logic itself is pure and lives in [`routes`]; a connection's life is in
//! `connection`, psi's own HTTP/1.1 for plain requests in `fast`, and hyper serves the rest.
//!
//! Concurrency: serve runs on one thread. The accept loop answers what is ready at once
//! (`/healthz`, refusals, cache hits for mapping files read before) before accepting the
//! next connection; every connection with more to do gets a task of its own, and provider
//! calls are async, so a slow provider delays only the lookups waiting on it, never
//! `/healthz` or other lookups. File access runs on the blocking pool (see
//! [`crate::resolver`]), apart from the cache hit's `stat`, which cannot block.
//!
//! Exhaustion: at most [`Limits::max_connections`] connections are served at once. One that
//! has sent nothing yet is closed after [`Limits::first_byte`], and gives its slot up at
//! once when a newcomer finds none free (oldest first), so a flood of idle connections
//! cannot keep `/healthz` out. Request bodies are buffered against a shared byte budget, so
//! many uploads at once cannot grow the heap beyond it.

mod connection;
mod fast;
pub mod routes;

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdListener, UnixStream as StdStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use hyper::{Request, Response};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::body::{collect_capped, Collect};
use crate::config::EnvLookup;
use crate::error::{Error, Result, ResultExt};
use crate::fsutil;
use crate::resolver::{CacheState, Resolver};
use crate::secret::SecretString;
use routes::Route;

/// Limits that keep a stalled client, a flood of connections or a stuck request from
/// holding psi.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a new connection has to send its first byte. Clients connect and write at once
    /// (curl, `psi client`); a connection that stays silent is a leak or an attack.
    pub first_byte: Duration,
    /// Time a client has to send its request headers (also the keep-alive idle limit).
    pub header: Duration,
    /// Time a client has to send its request body once the headers are in.
    pub body: Duration,
    /// Time in-flight requests get to finish after a stop signal.
    pub shutdown_grace: Duration,
    /// Connections served at once; more wait in the listen backlog (or take the slot of a
    /// connection that has not sent anything yet).
    pub max_connections: usize,
    /// Bytes of request bodies held at once over all connections (each body counts as its
    /// declared length, or [`routes::MAX_BODY`] when chunked).
    pub body_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            first_byte: Duration::from_secs(5),
            header: Duration::from_secs(10),
            body: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            // Podman starts containers with a handful of secrets each; hundreds of lookups
            // at once is already a storm. Well under any sane LimitNOFILE.
            max_connections: 512,
            // 16 bodies of the largest size: stores are rare (podman secret create).
            body_budget: 16 * routes::MAX_BODY,
        }
    }
}

/// Everything a request handler needs, shared by all connections (read-only: no lock).
pub struct App {
    pub resolver: Resolver,
    /// The bearer token; `None` disables auth.
    pub token: Option<SecretString>,
    pub limits: Limits,
    /// The files `/metrics` reads besides serve's own counters (none by default).
    pub scrape: crate::metrics::Scrape,
    /// What is left of [`Limits::body_budget`], in bytes.
    bodies: Semaphore,
}

impl App {
    pub fn new(resolver: Resolver, token: Option<SecretString>, limits: Limits) -> App {
        App {
            resolver,
            token,
            scrape: crate::metrics::Scrape::default(),
            bodies: Semaphore::new(limits.body_budget),
            limits,
        }
    }
}

/// The connection slots ([`Limits::max_connections`]) and the eviction of silent ones.
struct Slots {
    free: Arc<Semaphore>,
    /// Wakes the connection that has waited longest for its first byte (`Notify` wakes in
    /// FIFO order), which then closes and frees its slot for a newcomer.
    evict: Notify,
    /// Connections waiting for their first byte: eviction is asked for only when one is,
    /// so that a stored wake-up rarely hits a connection that arrives later.
    silent: AtomicUsize,
}

impl Slots {
    /// A slot for a connection just accepted: a free one, else the slot of the oldest silent
    /// connection, else the first one a finished connection frees.
    async fn take(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = Arc::clone(&self.free).try_acquire_owned() {
            return permit;
        }
        if self.silent.load(Ordering::Acquire) > 0 {
            self.evict.notify_one();
        }
        Arc::clone(&self.free)
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed")
    }

    /// Waits until `stream` has something to read (a request, or its end); false when it
    /// stayed silent for `limit` or its slot was taken for a newcomer.
    async fn first_byte(&self, stream: &UnixStream, limit: Duration) -> bool {
        let evicted = self.evict.notified();
        tokio::pin!(evicted);
        // Registered before it counts as silent, so a notification cannot miss it.
        evicted.as_mut().enable();
        self.silent.fetch_add(1, Ordering::AcqRel);
        let spoke = tokio::select! {
            ready = tokio::time::timeout(limit, readable(stream)) => matches!(ready, Ok(Ok(()))),
            () = &mut evicted => false,
        };
        self.silent.fetch_sub(1, Ordering::AcqRel);
        spoke
    }
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
                return Err(Error::Refused(format!(
                    "{} is in use: another psi serve is answering on it; stop it first or use another --socket",
                    path.display()
                )));
            }
            tracing::info!(socket = %path.display(), "replacing stale socket");
        }
        Ok(_) => {
            return Err(Error::Refused(format!(
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
    let stat =
        nix::sys::stat::fstat(SD_LISTEN_FDS_START).context("LISTEN_FDS: fd 3 is not usable")?;
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

/// Waits until `stream` has a byte to read or its peer closed. Readiness alone can be a
/// false positive (tokio says so), so a one-byte peek confirms it without consuming it.
async fn readable(stream: &UnixStream) -> std::io::Result<()> {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    loop {
        stream.readable().await?;
        let peeked = stream.try_io(Interest::READABLE, || {
            recv(
                stream.as_raw_fd(),
                &mut byte,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)
        });
        match peeked {
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        }
    }
}

/// How [`run`] ended after its shutdown signal.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request finished.
    Drained,
    /// Some requests were still running when the grace period ended. Tasks stuck in a
    /// blocking call may still hold blocking-pool threads: the caller must not wait for them
    /// (`psi serve` drops its runtime without waiting and exits).
    GraceExpired,
}

/// Serves `listener` until `shutdown` completes, then stops accepting and gives in-flight
/// requests `app.limits.shutdown_grace` to finish.
pub async fn run(
    listener: StdListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped> {
    let socket_error = |err| Error::Io {
        context: "socket".into(),
        source: err,
    };
    listener.set_nonblocking(true).map_err(socket_error)?;
    let listener = register(listener).map_err(socket_error)?;
    let slots = Arc::new(Slots {
        free: Arc::new(Semaphore::new(app.limits.max_connections)),
        evict: Notify::new(),
        silent: AtomicUsize::new(0),
    });
    let graceful = GracefulShutdown::new();
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    'accepting: loop {
        let mut ready = tokio::select! {
            ready = listener.readable() => match ready {
                Ok(ready) => ready,
                Err(err) => return Err(socket_error(err)),
            },
            () = &mut shutdown => break,
        };
        // What is queued, a batch at a time so other tasks on this thread get their turn.
        for _ in 0..ACCEPT_BATCH {
            let stream = match ready.try_io(|listener| accept(listener.get_ref())) {
                // Nothing queued: wait for readiness again.
                Err(_would_block) => break,
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) if retry_accept(&err) => continue,
                Ok(Err(err)) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    break;
                }
            };
            let step = connection::attempt(
                &app,
                |buf| (&stream).read(buf),
                |parts| (&stream).write_vectored(parts),
            );
            if let connection::Step::Close = step {
                continue;
            }
            let slot = tokio::select! {
                slot = slots.take() => slot,
                () = &mut shutdown => break 'accepting,
            };
            let shared = connection::Shared {
                slots: Arc::clone(&slots),
                app: Arc::clone(&app),
                graceful: graceful.watcher(),
                stop: stopping.clone(),
            };
            tokio::spawn(connection::serve(stream, step, slot, shared));
        }
    }
    drop(listener);
    let _ = stop.send(true);
    // Connections still waiting for a request close now; those in a request get
    // `shutdown_grace` to finish (hyper closes a connection told to shut down before it
    // read a request).
    if tokio::time::timeout(app.limits.shutdown_grace, graceful.shutdown())
        .await
        .is_ok()
    {
        return Ok(Stopped::Drained);
    }
    tracing::warn!("requests still running after the shutdown grace period; stopping anyway");
    Ok(Stopped::GraceExpired)
}

/// Connections accepted per wake-up of the accept loop before it lets other tasks run.
const ACCEPT_BATCH: usize = 64;

/// How long the accept loop backs off after `accept` fails for want of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener, registered with the reactor for readability.
#[allow(unsafe_code)]
fn register(listener: StdListener) -> std::io::Result<AsyncFd<StdListener>> {
    // SAFETY: the listener owns its descriptor, which stays open and the same for as long
    // as the AsyncFd owns the listener.
    unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }.map_err(Into::into)
}

/// Accepts a connection, non-blocking from the start (`accept4`; std's `accept` would need
/// a second call to make it so).
#[allow(unsafe_code)]
fn accept(listener: &StdListener) -> std::io::Result<StdStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: accept4 with null address pointers writes nothing back; the listener's
    // descriptor is valid for the call.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { StdStream::from_raw_fd(fd) })
}

/// Accept errors that concern one connection (or none), not the listener.
fn retry_accept(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::Interrupted || err.raw_os_error() == Some(libc::ECONNABORTED)
}

/// Handles one request hyper parsed: route, auth, then the resolver call. Writes exactly one
/// audit line for secret operations (the resolver does) or for refusals (here).
pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let auth = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    match admit(app, req.method(), req.uri().path(), auth) {
        Err(refused) => routes::error_response(&refused),
        // Store and delete answer 200 with no body (the original said `ok`): Podman copies
        // the driver command's stdout into its own, so a body would precede the ID that
        // `podman secret create` and `podman secret rm` print.
        Ok(Route::Store(id)) => match read_body(app, req).await {
            Ok(body) => respond(app.resolver.store(&id, &body).await.map(|()| Bytes::new())),
            Err(err) => {
                tracing::warn!(event = "secret.store", secret_id = %id, outcome = "error", error = %err);
                routes::error_response(&err)
            }
        },
        Ok(route) => answer(app, route).await,
    }
}

/// The route of a request, once its token is checked; else why it is refused (logged here,
/// answered with [`routes::error_response`]).
fn admit(app: &App, method: &hyper::Method, path: &str, auth: Option<&[u8]>) -> Result<Route> {
    let route = routes::route(method, path);
    if let Err(err) = routes::authorize(route.as_ref(), app.token.as_ref(), auth) {
        tracing::warn!(
            event = "socket.auth",
            path,
            outcome = "error",
            "unauthorized request"
        );
        return Err(err);
    }
    route.inspect_err(|err| {
        tracing::info!(event = "http.request", %method, path, outcome = "error", error = %err);
    })
}

/// The answer to an admitted request that has no body (every route but store).
async fn answer(app: &App, route: Route) -> Response<Full<Bytes>> {
    respond(match route {
        Route::Healthz => {
            tracing::debug!(event = "healthz", outcome = "success");
            Ok(Bytes::from_static(routes::HEALTHY))
        }
        Route::HealthzCache => {
            return match app.resolver.cache() {
                CacheState::Disabled => routes::cache_health(None, None),
                CacheState::Unavailable(why) => routes::cache_health(None, Some(why)),
                CacheState::Live(live) => routes::cache_health(Some(&live.health()), None),
            };
        }
        Route::CacheReload => {
            return match app.resolver.cache() {
                CacheState::Disabled => routes::cache_health(None, None),
                CacheState::Unavailable(why) => routes::cache_health(None, Some(why)),
                CacheState::Live(live) => routes::cache_reloaded(&live.reload_now().await),
            };
        }
        Route::Lookup(id) => app
            .resolver
            .lookup(&id)
            .await
            .map(|value| Bytes::from_owner(Outgoing(value))),
        Route::Store(id) => Err(Error::InvalidBody(format!(
            "a store of {id} needs its body"
        ))),
        Route::Delete(id) => app.resolver.delete(&id).await.map(|()| Bytes::new()),
        Route::List => app
            .resolver
            .list()
            .await
            .map(|ids| Bytes::from(ids.join("\n"))),
        Route::Metrics => return metrics(app).await,
    })
}

/// The `/metrics` answer; the files it reads are read on the blocking pool.
async fn metrics(app: &App) -> Response<Full<Bytes>> {
    let configured = app.resolver.registry().names();
    let entries = match app.resolver.cache() {
        CacheState::Live(live) => Some(live.health().entries),
        _ => None,
    };
    let scrape = app.scrape.clone();
    let text = tokio::task::spawn_blocking(move || {
        crate::metrics::exposition(&configured, entries, &scrape)
    })
    .await
    .context("metrics task failed");
    match text {
        Ok(text) => routes::metrics(text),
        Err(err) => routes::error_response(&err),
    }
}

fn respond(result: Result<Bytes>) -> Response<Full<Bytes>> {
    match result {
        Ok(body) => routes::ok(body),
        Err(err) => routes::error_response(&err),
    }
}

/// Reads a request body of at most [`routes::MAX_BODY`] bytes within `app.limits.body`,
/// first taking its share of the body budget (waiting for it counts against the same time
/// limit). Frames are copied into one buffer of the declared size as they arrive and
/// dropped, so hyper's read buffer does not grow with the body; psi's copy (possibly a raw
/// value to seal) zeroizes on drop.
async fn read_body(app: &App, req: Request<Incoming>) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let limit = app.limits.body;
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
    // `declared` is at most MAX_BODY here; a chunked body may grow to it.
    let expected = declared.map_or(routes::MAX_BODY, |len| len as usize);
    let read = async {
        let _budget = app
            .bodies
            .acquire_many(expected.min(app.limits.body_budget) as u32)
            .await
            .expect("the body budget is never closed");
        collect_capped(
            req.into_body(),
            declared.unwrap_or(0) as usize,
            routes::MAX_BODY,
        )
        .await
    };
    match tokio::time::timeout(limit, read).await {
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
