//! A fake Infisical server for the integration tests (the real one cannot run here).
//!
//! It answers like the real exchanges recorded in `fixtures/infisical/` (the 2024 API
//! generation, [`Generation::Legacy2024`]) or like the newest server described in
//! `reference/infisical-api.md` ([`Generation::Current`]: v4 routes, 401/404/422 statuses).
//! `tests/it/infisical_fake.rs` replays the recorded exchanges against it.
//!
//! The server runs on its own thread with its own tokio runtime, so it serves plain `#[test]`
//! functions and `psi` subprocesses alike; all state sits behind one mutex. Time is virtual
//! ([`FakeInfisical::advance`]) so token TTLs and rate-limit windows need no sleeping.

mod auth;
mod client;
mod pki;
mod projects;
mod routes;
mod secrets;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslAcceptor, SslMethod};
use tokio::net::TcpListener;

pub use auth::{jwt, AwsLogin};
pub use client::{send, Reply};
use state::State;

/// Which server the fake imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// The recorded 2024-07 server: v3 routes only, 403 for auth failures and validation,
    /// 400 for not-found, 500 for bad JWTs.
    Legacy2024,
    /// The newest server: adds `/api/v4/secrets`, 401 for auth failures, 404 for a missing
    /// secret, 422 for validation, 403 for permission and token errors.
    Current,
}

/// What an injected fault does to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and JSON body (and `retry-after` when given) instead.
    Status {
        status: u16,
        body: serde_json::Value,
        retry_after: Option<String>,
    },
    /// Answer normally, but only after this (real) delay.
    Delay(Duration),
    /// Drop the connection without answering.
    Close,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Percent-decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The JSON body; a body that is not JSON is kept as a JSON string.
    pub body: Option<serde_json::Value>,
    /// The fake's virtual time (unix seconds) when it arrived.
    pub at: u64,
}

/// A running fake Infisical; stops listening when dropped.
pub struct FakeInfisical {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    tls: Option<Tls>,
    server: Option<Server>,
    /// The network namespace it listens in (a `/proc/PID/ns/net` file), `None` for the test
    /// process's own; [`FakeInfisical::restart`] binds there again.
    netns: Option<PathBuf>,
}

struct Tls {
    // Keeps the CA file alive as long as the fake.
    _dir: tempfile::TempDir,
    ca_pem: PathBuf,
    acceptor: Arc<SslAcceptor>,
}

struct Server {
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl FakeInfisical {
    /// Starts a plain-HTTP fake on 127.0.0.1 and a random port.
    pub fn start(generation: Generation) -> FakeInfisical {
        FakeInfisical::launch(generation, None, None, 0)
    }

    /// Starts a plain-HTTP fake listening on 127.0.0.1:`port` inside the network namespace
    /// `netns` (e.g. a booted test machine's, `support::machine::Machine::netns`), so that
    /// programs in that namespace reach it at [`FakeInfisical::url`]. The test process itself
    /// cannot: [`FakeInfisical::send`] would go to its own 127.0.0.1. The namespace must stay
    /// the same across [`FakeInfisical::restart`] (a machine that reboots gets a new one).
    pub fn start_in_netns(generation: Generation, netns: &Path, port: u16) -> FakeInfisical {
        FakeInfisical::launch(generation, None, Some(netns.to_owned()), port)
    }

    /// Starts an HTTPS fake whose certificate (for IP 127.0.0.1 and `localhost`) is signed by
    /// a CA made for this instance; see [`FakeInfisical::ca_pem`].
    pub fn start_tls(generation: Generation) -> FakeInfisical {
        let dir = tempfile::Builder::new()
            .prefix("psi-fake-infisical.")
            .tempdir()
            .unwrap();
        let (ca_pem, acceptor) = make_tls(dir.path());
        FakeInfisical::launch(
            generation,
            Some(Tls {
                _dir: dir,
                ca_pem,
                acceptor: Arc::new(acceptor),
            }),
            None,
            0,
        )
    }

    fn launch(
        generation: Generation,
        tls: Option<Tls>,
        netns: Option<PathBuf>,
        port: u16,
    ) -> FakeInfisical {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], port)), netns.as_deref());
        let addr = listener.local_addr().unwrap();
        let mut fake = FakeInfisical {
            state: Arc::new(Mutex::new(State::new(generation))),
            addr,
            tls,
            server: None,
            netns,
        };
        fake.serve(listener);
        fake
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let state = self.state.clone();
        let acceptor = self.tls.as_ref().map(|t| t.acceptor.clone());
        let (shutdown, stop) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = stop => {}
                    _ = accept_loop(listener, state, acceptor) => {}
                }
            });
            // Dropping the runtime aborts the open connections too: a stopped server is gone.
            rt.shutdown_background();
        });
        self.server = Some(Server { shutdown, thread });
    }

    /// The CA certificate (PEM file) that signed the server certificate. TLS mode only.
    pub fn ca_pem(&self) -> PathBuf {
        self.tls
            .as_ref()
            .expect("ca_pem() needs a fake started with start_tls()")
            .ca_pem
            .clone()
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`, without a trailing slash; for a
    /// fake from [`FakeInfisical::start_in_netns`], the URL inside that namespace.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops listening and drops open connections (an outage); later connections are refused.
    /// The state stays readable.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.shutdown.send(());
            server.thread.join().unwrap();
        }
    }

    /// Listens again on the same port (in the same network namespace) with the same state,
    /// after [`FakeInfisical::stop`].
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "restart() needs a stopped fake");
        let listener = bind(self.addr, self.netns.as_deref());
        self.serve(listener);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an identity with universal auth and the given token TTLs; returns its id.
    pub fn add_universal_auth(
        &self,
        client_id: &str,
        client_secret: &str,
        ttl: u64,
        max_ttl: u64,
    ) -> String {
        self.lock()
            .add_universal_auth(client_id, client_secret, ttl, max_ttl)
    }

    /// Lets `identity_id` log in with AWS IAM auth.
    pub fn add_aws_identity(&self, identity_id: &str, ttl: u64, max_ttl: u64) {
        self.lock().add_aws_identity(identity_id, ttl, max_ttl);
    }

    /// Lets `identity_id` log in with GCP auth when it presents exactly `jwt`.
    pub fn add_gcp_identity(&self, identity_id: &str, jwt: &str, ttl: u64, max_ttl: u64) {
        self.lock()
            .add_jwt_identity("gcp", identity_id, jwt, ttl, max_ttl);
    }

    /// Lets `identity_id` log in with Azure auth when it presents exactly `jwt`.
    pub fn add_azure_identity(&self, identity_id: &str, jwt: &str, ttl: u64, max_ttl: u64) {
        self.lock()
            .add_jwt_identity("azure", identity_id, jwt, ttl, max_ttl);
    }

    /// Gives `identity_id` a role in a project: `"viewer"` may only read. Identities without
    /// a membership act as organization admins and may do everything.
    pub fn set_project_role(&self, identity_id: &str, project_id: &str, role: &str) {
        self.lock().set_role(identity_id, project_id, role);
    }

    /// Moves the virtual clock forward (token TTLs, JWT expiry, rate-limit windows).
    pub fn advance(&self, secs: u64) {
        self.lock().now += secs;
    }

    /// Successful logins so far, all methods (renewals are not logins).
    pub fn logins(&self) -> usize {
        self.lock().logins
    }

    /// Accepted and rejected AWS logins whose request headers could be decoded.
    pub fn aws_logins(&self) -> Vec<AwsLogin> {
        self.lock().aws_logins.clone()
    }

    /// Adds a project with the environments dev, staging and prod.
    /// Creates an internal root CA (EC P-256) with id `ca_id`.
    pub fn add_ca(&self, ca_id: &str) {
        let mut state = self.lock();
        let ca = pki::make_ca(state.now, &format!("Fake CA {ca_id}"));
        state.pki.cas.insert(ca_id.to_owned(), ca);
    }

    /// A certificate profile (cert-manager API) issuing from CA `ca_id`.
    pub fn add_cert_profile(&self, profile_id: &str, ca_id: &str) {
        self.lock()
            .pki
            .profiles
            .insert(profile_id.to_owned(), ca_id.to_owned());
    }

    /// New cert-manager requests answer `pending` for `polls` polls before they are issued.
    pub fn set_pki_pending(&self, polls: u32) {
        self.lock().pki.pending = polls;
    }

    /// Issues later certificates as if `secs` ago, so one whose ttl is shorter has expired.
    pub fn backdate_certificates(&self, secs: u64) {
        self.lock().pki.backdate = secs;
    }

    /// (certificates issued, certificates renewed) so far.
    pub fn pki_counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.pki.issued, state.pki.renewed)
    }

    pub fn add_project(&self, project_id: &str, slug: &str) {
        self.lock().add_project(project_id, slug, slug);
    }

    /// Creates or updates a secret (creating folders as needed). A new secret gets version 1,
    /// an update adds one, like the single-secret write route.
    pub fn set_secret(&self, project_id: &str, env: &str, path: &str, key: &str, value: &str) {
        self.lock().set_secret(project_id, env, path, key, value);
    }

    /// The current value and version of a secret, if it exists.
    pub fn secret(
        &self,
        project_id: &str,
        env: &str,
        path: &str,
        key: &str,
    ) -> Option<(String, u64)> {
        let state = self.lock();
        let project = state.project_index(Some(project_id), None)?;
        let secret = state.folder(project, env, path)?.secret(key)?;
        Some((secret.current().value.clone(), secret.current().version))
    }

    /// The keys in a folder, sorted.
    pub fn keys(&self, project_id: &str, env: &str, path: &str) -> Vec<String> {
        let state = self.lock();
        let Some(project) = state.project_index(Some(project_id), None) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = state
            .folder(project, env, path)
            .map(|f| f.secrets.iter().map(|s| s.key.clone()).collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Deletes a secret; panics when it does not exist (a mistake in the test).
    pub fn delete_secret(&self, project_id: &str, env: &str, path: &str, key: &str) {
        self.lock().delete_secret(project_id, env, path, key);
    }

    /// Makes `env:path` import `from_env:from_path`, after its existing imports.
    pub fn add_import(
        &self,
        project_id: &str,
        env: &str,
        path: &str,
        from_env: &str,
        from_path: &str,
    ) {
        self.lock()
            .add_import(project_id, env, path, from_env, from_path);
    }

    /// `None` (the default): unlimited. `Some(n)`: n requests per route per 60 s window.
    pub fn set_rate_limit(&self, per_window: Option<u32>) {
        let mut state = self.lock();
        state.rate_limit = per_window;
        state.buckets.clear();
    }

    /// The next `times` requests whose method is `method` (or any, for `"*"`) and whose path
    /// starts with `path_prefix` get `fault` instead of the normal handling.
    pub fn inject(&self, method: &str, path_prefix: &str, fault: Fault, times: usize) {
        self.lock().faults.push(state::FaultRule {
            method: method.to_owned(),
            path_prefix: path_prefix.to_owned(),
            fault,
            times,
        });
    }

    /// Every request received so far, in order (faulted ones included).
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests answered 429 by the rate limiter so far (injected faults not counted).
    pub fn throttled(&self) -> usize {
        self.lock().throttled
    }

    /// The virtual clock (unix seconds).
    pub fn now(&self) -> u64 {
        self.lock().now
    }

    /// A function that moves the virtual clock forward to a unix time (never back), for a
    /// client's clock to drive ([`super::virtual_clock::VirtualClock`]).
    pub fn clock_driver(&self) -> impl Fn(std::time::SystemTime) + Send + Sync + 'static {
        let state = self.state.clone();
        move |time| {
            let secs = time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.now = state.now.max(secs);
        }
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Sends one request to this fake (trusting its CA in TLS mode) and reads the reply.
    pub fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Reply {
        let ca = self.tls.as_ref().map(|t| t.ca_pem.as_path());
        send(&self.url(), ca, method, target, headers, body).expect("request to the fake")
    }
}

impl Drop for FakeInfisical {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` in the network namespace `netns` (a `/proc/PID/ns/net` file), or in the test
/// process's own for `None`.
fn bind(addr: SocketAddr, netns: Option<&Path>) -> std::net::TcpListener {
    let Some(netns) = netns else {
        return std::net::TcpListener::bind(addr).unwrap();
    };
    let netns = netns.to_owned();
    // setns(CLONE_NEWNET) moves only the calling thread, and for the rest of its life: a
    // short-lived thread of its own does it, so the test's threads stay in the host's
    // namespace. A socket stays in the namespace it was made in, whichever thread serves it.
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file =
            std::fs::File::open(&netns).map_err(|e| format!("open {}: {e}", netns.display()))?;
        // SAFETY: a plain system call on an open descriptor; it changes only this thread.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(format!("setns {}: {err}", netns.display()));
        }
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("bind {addr} in {}: {e}", netns.display()))
    })
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    acceptor: Option<Arc<SslAcceptor>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let http = hyper::server::conn::http1::Builder::new();
            match acceptor {
                None => {
                    let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                }
                Some(acceptor) => {
                    let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                    // A client that rejects the certificate just goes away.
                    if std::pin::Pin::new(&mut tls).accept().await.is_ok() {
                        let _ = http.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
            }
        });
    }
}

/// The error that makes hyper drop a connection without answering ([`Fault::Close`]).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    state: Arc<Mutex<State>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let req = routes::Request::new(&parts, &bytes);
    let fault = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = req.recorded(state.now);
        state.requests.push(recorded);
        state.take_fault(&req.method, &req.path)
    };
    let reply = match fault {
        Some(Fault::Close) => return Err(Dropped),
        Some(Fault::Status {
            status,
            body,
            retry_after,
        }) => {
            let mut reply = routes::Reply::json(status, &body);
            if let Some(secs) = retry_after {
                reply.headers.push(("retry-after".into(), secs));
            }
            reply
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            routes::handle(&mut state.lock().unwrap_or_else(|e| e.into_inner()), &req)
        }
        None => routes::handle(&mut state.lock().unwrap_or_else(|e| e.into_inner()), &req),
    };
    Ok(reply.into_response())
}

/// Makes a CA and a server certificate for 127.0.0.1 and localhost; writes the CA PEM into
/// `dir` and returns its path with an acceptor that presents the server certificate.
fn make_tls(dir: &std::path::Path) -> (PathBuf, SslAcceptor) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    use openssl::x509::{X509NameBuilder, X509};

    fn key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }
    fn builder(cn: &str, key: &PKey<Private>) -> openssl::x509::X509Builder {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut serial = BigNum::new().unwrap();
        serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        // Self-issued until a leaf sets its CA as the issuer.
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
            .unwrap();
        b
    }

    let ca_key = key();
    let mut ca = builder("psi fake Infisical CA", &ca_key);
    ca.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    ca.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    ca.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = ca.build();

    let leaf_key = key();
    let mut leaf = builder("127.0.0.1", &leaf_key);
    leaf.set_issuer_name(ca.subject_name()).unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&leaf.x509v3_context(Some(&ca), None))
        .unwrap();
    leaf.append_extension(san).unwrap();
    leaf.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .build()
            .unwrap(),
    )
    .unwrap();
    leaf.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
        .unwrap();
    leaf.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let leaf = leaf.build();

    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.to_pem().unwrap()).unwrap();
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    acceptor.set_private_key(&leaf_key).unwrap();
    acceptor.set_certificate(&leaf).unwrap();
    acceptor.add_extra_chain_cert(ca).unwrap();
    acceptor.check_private_key().unwrap();
    (ca_pem, acceptor.build())
}
