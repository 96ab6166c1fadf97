//! The secret ID rules where IDs come in: every HTTP route of a running server, the commands
//! that take a NAME, and `SECRET_ID` for the one-shot driver and `psi client`. The rules
//! themselves are unit-tested beside `SecretId::parse`; these tests prove nothing bypasses it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use psi::config::RawPolicy;
use psi::provider::Registry;
use psi::resolver::Resolver;
use psi::server::{self, App, Limits};
use psi::state::StateDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::http::{get, request};
use crate::support::{files_under, run_with_stdin, Sandbox};

/// A mapping of a known shape: stored as sent, with no provider needed.
const MAPPING: &[u8] = br#"{"provider": "infisical", "project": "p", "path": "/", "key": "K"}"#;

/// psi's own files, as a state directory holds them, with their contents.
const OWN_FILES: &[(&str, &[u8])] = &[
    ("cache.enc", b"PSIC\x02\x01sealed"),
    ("nitrokeyhsm-pubkey.der", b"0\x82public"),
    (".socket-token", b"token"),
    (".setup.lock", b""),
    ("tls/web.json", b"{}"),
];

/// A state directory holding psi's own files.
fn populated(sandbox: &Sandbox) -> Vec<(PathBuf, Vec<u8>)> {
    for (name, bytes) in OWN_FILES {
        let path = sandbox.state_dir().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    sorted(files_under(&sandbox.state_dir()))
}

fn sorted(mut files: Vec<(PathBuf, Vec<u8>)>) -> Vec<(PathBuf, Vec<u8>)> {
    files.sort();
    files
}

struct Running {
    socket: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<psi::error::Result<server::Stopped>>,
}

/// A server on `sandbox`'s state directory with no providers and raw values refused:
/// mappings are stored as sent, which is all these tests need.
fn serve(sandbox: &Sandbox) -> Running {
    let resolver = Resolver::new(
        StateDir::new(sandbox.state_dir()),
        Registry::new(Vec::new()),
        RawPolicy::Reject,
    );
    let app = Arc::new(App::new(resolver, None, Limits::default()));
    let socket = sandbox.socket();
    let bound = server::bind(&socket).unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::run(bound.listener, app, async {
        let _ = stopped.await;
    }));
    Running { socket, stop, task }
}

impl Running {
    async fn shutdown(self) {
        self.stop.send(()).unwrap();
        assert_eq!(self.task.await.unwrap().unwrap(), server::Stopped::Drained);
    }
}

/// Sends `method target` with a mapping body and returns the status and body text.
async fn call(socket: &Path, method: &str, target: &str) -> (u16, String) {
    let reply = request(socket, method, target, &[], MAPPING).await;
    (reply.status, reply.text())
}

#[tokio::test(flavor = "multi_thread")]
async fn psis_own_files_are_refused_on_every_route() {
    let sandbox = Sandbox::new();
    let before = populated(&sandbox);
    let running = serve(&sandbox);
    for name in [
        "cache.enc",
        "cache%2Eenc",
        "nitrokeyhsm-pubkey.der",
        "tls",
        "pcscd",
        ".socket-token",
        ".setup.lock",
    ] {
        for (method, route) in [("POST", "store"), ("GET", "lookup"), ("DELETE", "delete")] {
            let (status, body) = call(&running.socket, method, &format!("/{route}/{name}")).await;
            assert_eq!(status, 400, "{method} /{route}/{name}: {body}");
            assert!(body.contains("invalid_secret_id"), "{body}");
            assert!(
                body.contains("reserved") || body.contains("starts with '.'"),
                "{method} /{route}/{name}: {body}"
            );
        }
    }
    running.shutdown().await;
    assert_eq!(sorted(files_under(&sandbox.state_dir())), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_are_limited_so_the_temporary_name_fits_and_the_longest_works() {
    let sandbox = Sandbox::new();
    let running = serve(&sandbox);
    for len in [242, 250, 255] {
        let (status, body) = call(
            &running.socket,
            "POST",
            &format!("/store/{}", "a".repeat(len)),
        )
        .await;
        assert_eq!(status, 400, "{len}: {body}");
        assert!(
            body.contains(&format!(
                "secret ID is {len} bytes long; the limit is 241 bytes"
            )),
            "{body}"
        );
    }
    assert!(files_under(&sandbox.state_dir()).is_empty());

    let longest = "a".repeat(241);
    let (status, body) = call(&running.socket, "POST", &format!("/store/{longest}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        std::fs::read(sandbox.state_dir().join(&longest)).unwrap(),
        MAPPING
    );
    assert_eq!(get(&running.socket, "/list").await.text(), longest);
    let (status, body) = call(&running.socket, "DELETE", &format!("/delete/{longest}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(files_under(&sandbox.state_dir()).is_empty());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invisible_characters_are_refused() {
    let sandbox = Sandbox::new();
    let running = serve(&sandbox);
    // U+202E right-to-left override, U+2028 line separator, U+FEFF byte order mark.
    for (encoded, code) in [
        ("%E2%80%AE", "U+202E"),
        ("%E2%80%A8", "U+2028"),
        ("%EF%BB%BF", "U+FEFF"),
    ] {
        for (method, route) in [("POST", "store"), ("GET", "lookup"), ("DELETE", "delete")] {
            let target = format!("/{route}/abc{encoded}def");
            let (status, body) = call(&running.socket, method, &target).await;
            assert_eq!(status, 400, "{method} {target}: {body}");
            assert!(body.contains(code), "{body}");
        }
    }
    running.shutdown().await;
    assert!(files_under(&sandbox.state_dir()).is_empty());
}

#[test]
fn commands_that_take_a_name_refuse_psis_own_files() {
    let sandbox = Sandbox::new();
    let before = populated(&sandbox);
    let config = sandbox.config("");
    for name in [
        "cache.enc",
        "nitrokeyhsm-pubkey.der",
        "tls",
        ".socket-token",
    ] {
        for command in ["creds", "nitrokeyhsm"] {
            let out = run_with_stdin(
                sandbox
                    .psi()
                    .arg("-c")
                    .arg(&config)
                    .args([command, "store", name]),
                b"value",
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} store {name}: {stderr}"
            );
            assert!(stderr.contains("NAME: secret ID"), "{stderr}");
            assert!(
                stderr.contains("reserved") || stderr.contains("starts with '.'"),
                "{stderr}"
            );
        }
        for op in ["store", "lookup", "delete"] {
            let out = run_with_stdin(
                sandbox
                    .psi()
                    .arg("-c")
                    .arg(&config)
                    .args(["secret", op])
                    .env("SECRET_ID", name),
                MAPPING,
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "secret {op} {name}");
            assert!(stderr.contains("invalid secret ID"), "{stderr}");
        }
    }
    assert_eq!(sorted(files_under(&sandbox.state_dir())), before);
}

#[test]
fn a_secret_id_that_is_not_utf8_is_named_as_such() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let not_utf8 = OsStr::from_bytes(b"abc\xff");
    let secret = sandbox
        .psi()
        .arg("-c")
        .arg(&config)
        .args(["secret", "lookup"])
        .env("SECRET_ID", not_utf8)
        .output()
        .unwrap();
    let client = sandbox
        .psi()
        .args(["client", "lookup", "--socket"])
        .arg(sandbox.socket())
        .env("SECRET_ID", not_utf8)
        .output()
        .unwrap();
    for (what, out) in [("secret lookup", secret), ("client lookup", client)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains("SECRET_ID is not valid UTF-8"),
            "{what}: {stderr}"
        );
    }
}
