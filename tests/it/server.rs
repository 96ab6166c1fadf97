//! The server in-process on a temp socket (library API), and `psi serve` as a process for
//! what belongs to the process: signals, socket activation, systemd notification.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use psi::config::{RawPolicy, SealWith};
use psi::provider::{Provider, Registry};
use psi::resolver::Resolver;
use psi::secret::{SecretId, SecretString};
use psi::server::{self, App, Limits};
use psi::state::StateDir;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::http::{self, get, request};
use crate::support::{require, run_with_stdin, Sandbox, ServeProcess};

struct Running {
    sandbox: Sandbox,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    /// Fires when the server has taken the stop signal (its shutdown future completed).
    stopping: Option<oneshot::Receiver<()>>,
    task: JoinHandle<psi::error::Result<server::Stopped>>,
}

impl Running {
    /// Tells the server to stop and returns once it has taken the signal.
    async fn begin_shutdown(&mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.stopping.take().unwrap().await.unwrap();
    }

    async fn shutdown(mut self) -> Sandbox {
        if self.stop.is_some() {
            self.begin_shutdown().await;
        }
        assert_eq!(self.task.await.unwrap().unwrap(), server::Stopped::Drained);
        self.sandbox
    }
}

fn limits() -> Limits {
    Limits {
        first_byte: Duration::from_millis(500),
        header: Duration::from_millis(500),
        body: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(10),
        ..Limits::default()
    }
}

/// Starts the server on the sandbox socket with the systemd-creds provider (the credential
/// named `slow` waits at the sandbox's [`SlowGate`](crate::support::SlowGate)) and the given
/// token and raw-value policy.
async fn start(token: Option<&str>, policy: RawPolicy) -> Option<Running> {
    start_with(token, policy, limits()).await
}

async fn start_with(token: Option<&str>, policy: RawPolicy, limits: Limits) -> Option<Running> {
    if !require("systemd-creds") {
        return None;
    }
    let sandbox = Sandbox::new();
    let registry = Registry::new(vec![Provider::SystemdCreds(sandbox.creds_provider())]);
    let resolver = Resolver::new(StateDir::new(sandbox.state_dir()), registry, policy);
    let app = Arc::new(App::new(
        resolver,
        token.map(|t| SecretString::new(t.into())),
        limits,
    ));
    let socket = sandbox.socket();
    let bound = server::bind(&socket).unwrap();
    let (stop, stopped) = oneshot::channel();
    let (took_it, stopping) = oneshot::channel();
    let task = tokio::spawn(server::run(bound.listener, app, async {
        let _ = stopped.await;
        let _ = took_it.send(());
    }));
    Some(Running {
        sandbox,
        socket,
        stop: Some(stop),
        stopping: Some(stopping),
        task,
    })
}

/// A raw connection to `socket` that has sent `bytes`: for requests no client would send.
async fn sent(socket: &std::path::Path, bytes: &[u8]) -> tokio::net::UnixStream {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

const SEAL: RawPolicy = RawPolicy::Seal(SealWith::SystemdCreds);

/// Seals `value` as credential `name` and stores its mapping under `id`.
async fn seal(running: &Running, name: &str, id: &str, value: &[u8]) {
    let provider = running.sandbox.creds_provider();
    let mapping = provider
        .seal(&SecretId::parse(name).unwrap(), value)
        .await
        .unwrap();
    StateDir::new(running.sandbox.state_dir())
        .write_mapping(&SecretId::parse(id).unwrap(), &mapping.to_bytes())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_returns_the_exact_bytes_with_no_content_type() {
    let Some(running) = start(None, SEAL).await else {
        return;
    };
    let value: Vec<u8> = (0..=255u8).chain(*b"\n\r\0end").collect();
    seal(&running, "binary", "0123456789abcdef012345678", &value).await;
    let reply = get(&running.socket, "/lookup/0123456789abcdef012345678?x=1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, value);
    assert_eq!(
        reply.header("content-length"),
        Some(value.len().to_string().as_str())
    );
    assert_eq!(reply.header("content-type"), None);

    let reply = get(&running.socket, "/lookup/missing").await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.text(),
        r#"{"error": "not_found", "detail": "no mapping for secret: missing"}"#
    );
    let reply = get(&running.socket, "/healthz").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_0600_and_no_staging_is_left() {
    let Some(running) = start(None, SEAL).await else {
        return;
    };
    let meta = std::fs::symlink_metadata(&running.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let names: Vec<String> = std::fs::read_dir(running.sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".psi-socket")),
        "{names:?}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_lookup_delays_neither_healthz_nor_other_lookups() {
    let Some(running) = start(None, SEAL).await else {
        return;
    };
    seal(&running, "slow", "slowid", b"slow value").await;
    seal(&running, "fast", "fastid", b"fast value").await;
    let socket = running.socket.clone();
    let slow = tokio::spawn(async move { get(&socket, "/lookup/slowid").await });
    // The slow lookup is inside the provider and stays there until released.
    let gate = running.sandbox.slow_gate();
    tokio::task::block_in_place(|| gate.started());
    let health = get(&running.socket, "/healthz").await;
    let fast = get(&running.socket, "/lookup/fastid").await;
    assert_eq!((health.status, fast.status), (200, 200));
    assert_eq!(fast.body, b"fast value");
    assert!(!slow.is_finished());
    tokio::task::block_in_place(|| gate.release());
    let slow = slow.await.unwrap();
    assert_eq!(slow.body, b"slow value");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_in_flight_requests_finish() {
    let Some(mut running) = start(None, SEAL).await else {
        return;
    };
    seal(&running, "slow", "slowid", b"still delivered").await;
    let socket = running.socket.clone();
    let slow = tokio::spawn(async move { get(&socket, "/lookup/slowid").await });
    let gate = running.sandbox.slow_gate();
    tokio::task::block_in_place(|| gate.started());
    // The server stops while the lookup is still inside the provider.
    running.begin_shutdown().await;
    tokio::task::block_in_place(|| gate.release());
    let socket = running.socket.clone();
    running.shutdown().await;
    let reply = slow.await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"still delivered"[..])
    );
    assert!(
        tokio::net::UnixStream::connect(&socket).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn store_keeps_mappings_verbatim_and_seals_raw_values() {
    let Some(running) = start(None, SEAL).await else {
        return;
    };
    let mapping =
        br#"{"provider": "infisical", "project": "myproject", "path": "/app", "key": "DB_HOST"}"#;
    let reply = request(&running.socket, "POST", "/store/mapped", &[], mapping).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, ""));
    let path = running.sandbox.state_dir().join("mapped");
    assert_eq!(std::fs::read(&path).unwrap(), mapping);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(running.sandbox.state_dir())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    // JSON with a `provider` key is still a raw value unless it has a mapping's exact shape.
    let json_secret = br#"{"provider": "x", "password": "correct horse"}"#;
    assert_eq!(
        request(&running.socket, "POST", "/store/jsonish", &[], json_secret)
            .await
            .status,
        200
    );
    crate::support::assert_not_on_disk(running.sandbox.path(), b"correct horse");
    assert_eq!(
        get(&running.socket, "/lookup/jsonish").await.body,
        json_secret
    );
    StateDir::new(running.sandbox.state_dir())
        .delete_mapping(&SecretId::parse("jsonish").unwrap())
        .unwrap();

    let raw = b"not json\nhunter2";
    assert_eq!(
        request(&running.socket, "POST", "/store/raw", &[], raw)
            .await
            .status,
        200
    );
    crate::support::assert_not_on_disk(running.sandbox.path(), b"hunter2");
    assert_eq!(get(&running.socket, "/lookup/raw").await.body, raw);

    // A mapping for a provider this psi does not run: 500 with the reason.
    let reply = get(&running.socket, "/lookup/mapped").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .text()
            .contains("provider 'infisical' is not running in this psi"),
        "{}",
        reply.text()
    );

    // The list holds mappings only: not the cache, key files, temp or dot files.
    for (name, bytes) in [
        ("cache.enc", &b"PSIC\x01\x01junk"[..]),
        ("nitrokeyhsm-pubkey.der", b"\x30\x82"),
        (".token.abc.json", b"{}"),
    ] {
        std::fs::write(running.sandbox.state_dir().join(name), bytes).unwrap();
    }
    assert_eq!(get(&running.socket, "/list").await.text(), "mapped\nraw");

    let reply = request(&running.socket, "DELETE", "/delete/raw", &[], b"").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, ""));
    assert!(!running.sandbox.state_dir().join("raw").exists());
    assert_eq!(
        request(&running.socket, "DELETE", "/delete/raw", &[], b"")
            .await
            .status,
        200
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_stores_are_refused_and_write_nothing() {
    let Some(running) = start(None, RawPolicy::Reject).await else {
        return;
    };
    let reply = request(&running.socket, "POST", "/store/raw", &[], b"plaintext").await;
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("store.raw_values is 'reject'"));
    assert!(!reply.text().contains("plaintext"));
    assert_eq!(
        request(&running.socket, "POST", "/store/empty", &[], b"")
            .await
            .status,
        400
    );
    let big = vec![b'x'; 1024 * 1024 + 1];
    assert_eq!(
        request(&running.socket, "POST", "/store/big", &[], &big)
            .await
            .status,
        413
    );
    assert_eq!(
        request(&running.socket, "POST", "/store/..", &[], b"{}")
            .await
            .status,
        400
    );
    assert!(crate::support::files_under(&running.sandbox.state_dir()).is_empty());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_body_over_the_limit_is_413() {
    let Some(running) = start(None, SEAL).await else {
        return;
    };
    let mut stream = sent(&running.socket, b"POST /store/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    let chunk = vec![b'y'; 64 * 1024];
    for _ in 0..17 {
        let _ = stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = stream.write_all(&chunk).await;
        let _ = stream.write_all(b"\r\n").await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await;
    assert_eq!(http::parse(&raw).status, 413);
    assert!(!running.sandbox.state_dir().join("big").exists());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_guards_everything_but_healthz() {
    let Some(running) = start(Some("test-token-123"), SEAL).await else {
        return;
    };
    seal(&running, "guarded", "guarded", b"v").await;
    for (method, target) in [
        ("GET", "/lookup/guarded"),
        ("POST", "/store/x"),
        ("DELETE", "/delete/guarded"),
        ("GET", "/list"),
        ("GET", "/nope"),
        ("GET", "/healthz/cache"),
    ] {
        let reply = request(&running.socket, method, target, &[], b"{}").await;
        assert_eq!(reply.status, 401, "{method} {target}");
        assert_eq!(
            reply.text(),
            r#"{"error": "unauthorized", "detail": "invalid or missing token"}"#
        );
        let wrong = request(
            &running.socket,
            method,
            target,
            &[("Authorization", "Bearer test-token-1234")],
            b"{}",
        )
        .await;
        assert_eq!(wrong.status, 401);
    }
    assert_eq!(get(&running.socket, "/healthz").await.status, 200);
    let ok = request(
        &running.socket,
        "GET",
        "/lookup/guarded",
        &[("authorization", "Bearer test-token-123")],
        b"",
    )
    .await;
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"v"[..]));
    // The scheme is case-insensitive.
    for scheme in ["bearer", "BEARER"] {
        let header = format!("{scheme} test-token-123");
        let reply = request(
            &running.socket,
            "GET",
            "/healthz/cache",
            &[("Authorization", &header)],
            b"",
        )
        .await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.text());
    }
    assert!(
        running.sandbox.state_dir().join("guarded").exists(),
        "an unauthorized delete removed the mapping"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_clients_are_cut_off() {
    let Some(running) = start(None, SEAL).await else {
        return;
    };
    // Headers never finished: the connection is closed after the header timeout.
    let mut stalled = sent(&running.socket, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut buf),
    )
    .await;
    assert!(
        read.is_ok(),
        "connection with unfinished headers was kept open"
    );
    // Body promised but not sent: 408.
    let mut stalled = sent(
        &running.socket,
        b"POST /store/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    let mut raw = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut raw),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(http::parse(&raw).status, 408);
    running.shutdown().await;
}

/// Reads `stream` to its end, failing after `limit`.
async fn read_all_within(stream: &mut tokio::net::UnixStream, limit: Duration) -> Vec<u8> {
    let mut raw = Vec::new();
    tokio::time::timeout(
        limit,
        tokio::io::AsyncReadExt::read_to_end(stream, &mut raw),
    )
    .await
    .expect("the connection stayed open")
    .unwrap();
    raw
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connection_is_closed_after_the_first_byte_limit() {
    let limits = Limits {
        first_byte: Duration::from_millis(200),
        header: Duration::from_secs(30),
        ..limits()
    };
    let Some(running) = start_with(None, SEAL, limits).await else {
        return;
    };
    let mut silent = tokio::net::UnixStream::connect(&running.socket)
        .await
        .unwrap();
    let started = Instant::now();
    assert!(read_all_within(&mut silent, Duration::from_secs(5))
        .await
        .is_empty());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(get(&running.socket, "/healthz").await.status, 200);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_half_closes_gets_its_answer() {
    let Some(running) = start(None, SEAL).await else {
        return;
    };
    let mut stream = sent(&running.socket, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    stream.shutdown().await.unwrap();
    let reply = http::parse(&read_all_within(&mut stream, Duration::from_secs(5)).await);
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    running.shutdown().await;
}

#[test]
fn stale_socket_is_replaced_live_one_and_other_files_are_not() {
    let sandbox = Sandbox::new();
    let path = sandbox.socket();
    // Stale: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let bound = server::bind(&path).expect("stale socket replaced");
    // Live: psi refuses to steal it.
    let err = server::bind(&path).err().expect("live socket refused");
    assert!(err.to_string().contains("in use"), "{err}");
    bound.file.remove();
    assert!(!path.exists());
    // A regular file is never replaced.
    std::fs::write(&path, b"keep me").unwrap();
    let err = server::bind(&path).err().expect("regular file refused");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

/// `psi serve` as a process: SIGTERM finishes the in-flight lookup, exits 0, removes the
/// socket; systemd hears READY=1 then STOPPING=1.
#[test]
fn serve_process_notifies_systemd_and_stops_gracefully() {
    if !require("systemd-creds") {
        return;
    }
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    // A slow systemd-creds first on PATH for the serve process.
    let wrapper = sandbox.creds_wrapper();
    let path = format!(
        "{}:{}",
        wrapper.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    let sealed = run_with_stdin(
        sandbox
            .psi()
            .args(["-c", config.to_str().unwrap(), "creds", "store", "slow"]),
        b"late but whole",
    );
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );

    let mut cmd = sandbox.psi();
    cmd.args(["-c", config.to_str().unwrap(), "serve"])
        .env("PATH", &path);
    // Returns after READY=1 on its notify socket.
    let mut serve = ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"));

    let socket = sandbox.socket();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lookup = runtime.spawn(async move { get(&socket, "/lookup/slow").await });
    let gate = sandbox.slow_gate();
    gate.started();
    // SIGTERM while the lookup is inside the provider; it goes on once serve is stopping.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        serve.notification(Duration::from_secs(10)).as_deref(),
        Some("STOPPING=1")
    );
    gate.release();
    let status = serve.child.wait().unwrap();
    let reply = runtime.block_on(lookup).unwrap();
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"late but whole"[..]),
        "{}",
        serve.log()
    );
    assert!(status.success(), "exit {status}: {}", serve.log());
    assert!(!sandbox.socket().exists(), "socket left behind");
    let log = serve.log();
    assert!(log.contains(r#""event":"secret.lookup","secret_id":"slow","provider":"systemd-creds","outcome":"success","source":"provider""#), "{log}");
    assert!(!log.contains("late but whole"), "value in the log");
}

/// Socket activation: systemd's listening socket on fd 3, `LISTEN_PID` = psi's PID.
#[test]
fn serve_process_adopts_a_systemd_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let path = sandbox.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    // `sh` sets LISTEN_PID to its own PID, which `exec` hands to psi.
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#,
        crate::support::psi_bin(),
    ])
    .args(["-c", config.to_str().unwrap(), "serve"])
    .env("SYSTEMD_CREDENTIAL_SECRET", sandbox.credential_secret())
    .stderr(std::process::Stdio::piped());
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::fcntl(3, libc::F_GETFD);
            libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The socket listens already: the request waits in its backlog until psi accepts it.
    let reply = runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), get(&path, "/healthz")).await
        })
        .expect("psi never answered on the socket it was given");
    assert_eq!(reply.status, 200);
    // psi did not bind its configured socket, and leaves systemd's socket file in place.
    assert!(!sandbox.socket().exists());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(child.wait().unwrap().success());
    assert!(path.exists(), "psi removed a socket systemd owns");
}

/// `/proc/<pid>/limits`' "Max open files" line as (soft, hard).
fn open_file_limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

/// A flood of connections that never send anything: psi serve, started with the common
/// soft limit of 1,024 open files, raises it, keeps at most its connection bound, and
/// closes the oldest silent ones for newcomers, so `/healthz` still answers at once.
#[test]
fn serve_answers_healthz_while_1100_silent_connections_are_held() {
    use std::os::unix::process::CommandExt;
    const HELD: usize = 1100;
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= HELD as u64 + 200,
        "this test holds {HELD} connections: raise the test's open-file limit (ulimit -n)"
    );
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let mut cmd = sandbox.psi();
    cmd.args(["-c", config.to_str().unwrap(), "serve"]);
    #[allow(unsafe_code)]
    unsafe {
        // serve alone starts at the soft limit of a default systemd service.
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = 1024;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let serve = ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"));
    let socket = sandbox.socket();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut held = Vec::with_capacity(HELD);
        for _ in 0..HELD {
            let stream = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::UnixStream::connect(&socket),
            )
            .await
            .expect("connect hung")
            .expect("connect");
            held.push(stream);
        }
        let started = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(1), get(&socket, "/healthz"))
            .await
            .unwrap_or_else(|_| panic!("/healthz did not answer within 1 s: {}", serve.log()));
        assert_eq!(reply.status, 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    });
    let (soft, hard) = open_file_limits(serve.child.id());
    assert_eq!(soft, hard, "serve kept its soft open-file limit");
}

/// Releases whoever is blocked opening a FIFO for reading (opening its write end), so a
/// failing test does not leave threads stuck behind.
struct FifoRelease(PathBuf);

impl Drop for FifoRelease {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
    }
}

/// A mapping that would block on open (a FIFO) is opened without blocking and refused as
/// not a regular file: every lookup of it answers at once, even one per runtime worker,
/// `/healthz` answers, and SIGTERM stops serve at once. (Had the open blocked, the lookups
/// would hold blocking-pool threads only; their 30 s deadline and the grace period bound
/// them.)
#[test]
fn a_fifo_mapping_blocks_neither_healthz_nor_sigterm() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    std::fs::create_dir(sandbox.state_dir()).unwrap();
    let fifo = sandbox.state_dir().join("fifo");
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let mut cmd = sandbox.psi();
    cmd.args(["-c", config.to_str().unwrap(), "serve"]);
    let serve = ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"));
    let _release = FifoRelease(fifo);
    let pid = serve.child.id();

    // One lookup per runtime worker: enough to stall every worker if they did the I/O.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let socket = sandbox.socket();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let statuses = runtime.block_on(async {
        let lookups: Vec<_> = (0..workers)
            .map(|_| {
                let socket = socket.clone();
                tokio::spawn(async move { get(&socket, "/lookup/fifo").await })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut replies = Vec::new();
            for lookup in lookups {
                replies.push(lookup.await.unwrap());
            }
            replies
        })
        .await
    });
    let statuses = statuses.unwrap_or_else(|_| panic!("lookups of a FIFO hung: {}", serve.log()));
    assert!(statuses.iter().all(|r| r.status == 500), "{}", serve.log());
    assert!(
        statuses[0].text().contains("not a regular file"),
        "{}",
        statuses[0].text()
    );
    let reply = runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(1), get(&socket, "/healthz")).await
        })
        .unwrap_or_else(|_| panic!("/healthz did not answer within 1 s: {}", serve.log()));
    assert_eq!(reply.status, 200);

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut serve = serve;
        let status = serve.child.wait().unwrap();
        exited.send((status, serve))
    });
    let (status, serve) = exit
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("serve still running 10 s after SIGTERM"));
    assert!(status.success(), "exit {status}: {}", serve.log());
    assert!(!socket.exists(), "socket left behind");
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`: the peak), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap();
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Request bodies draw on one budget (16 MiB): 200 uploads of 1 MiB at once leave serve's
/// peak memory far below what holding them all would take. Before the budget, 1,000 such
/// uploads took serve from 48 MB to 1 GB.
#[test]
fn concurrent_large_bodies_stay_within_the_body_budget() {
    const UPLOADS: usize = 200;
    const SIZE: usize = 1 << 20;
    let sandbox = Sandbox::new();
    // Raw values are refused, after the body is read (only then is it known not to be a
    // mapping): nothing is sealed or written, so the test measures the bodies alone.
    let config = sandbox.config("store:\n  raw_values: reject\n");
    let mut cmd = sandbox.psi();
    cmd.args(["-c", config.to_str().unwrap(), "serve"]);
    let serve = ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"));
    let pid = serve.child.id();
    let before = status_kib(pid, "VmHWM");
    let socket = sandbox.socket();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let replies = runtime.block_on(async {
        let uploads: Vec<_> = (0..UPLOADS)
            .map(|i| {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let body = vec![b'x'; SIZE];
                    request(&socket, "POST", &format!("/store/big{i}"), &[], &body).await
                })
            })
            .collect();
        let mut replies = Vec::new();
        for upload in uploads {
            replies.push(upload.await.unwrap());
        }
        replies
    });
    for reply in &replies {
        assert_eq!(reply.status, 400, "{}\n{}", reply.text(), serve.log());
    }
    let grew = status_kib(pid, "VmHWM") - before;
    assert!(
        grew < 64 * 1024,
        "serve's peak RSS grew by {grew} KiB for {UPLOADS} uploads of {SIZE} bytes"
    );
}
