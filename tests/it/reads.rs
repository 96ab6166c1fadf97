//! Hostile files where psi expects small regular ones: a sparse 64 GB `cache.enc`, a FIFO or
//! `/dev/zero` as a mapping, token file or config. Each is refused promptly with an error
//! naming the file (and the limit, where size is the problem); nothing aborts or hangs.
//!
//! Every command runs under `timeout`, so a regression fails the test instead of hanging it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::http;
use crate::support::{require, Sandbox, ServeProcess};

/// Seconds a command may take before `timeout` kills it (exit 137): generous for a loaded
/// machine, short next to a hang.
const BOUND_SECS: &str = "30";

/// Runs `cmd` under `timeout -s KILL`, keeping its environment.
fn bounded(cmd: &Command) -> Output {
    let mut wrapped = Command::new("timeout");
    wrapped
        .args(["-s", "KILL", BOUND_SECS])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `out` failed with `code` and an error naming `path` and `says`.
fn refused(out: &Output, code: i32, path: &Path, says: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(says), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

/// A sandbox with the TPM cache backend, its key delivered as a systemd credential, and a
/// sparse `cache.enc` of 64 GiB behind a valid header.
fn sparse_cache() -> (Sandbox, std::path::PathBuf, std::path::PathBuf) {
    sparse_cache_with(b"PSIC\x02\x01", 64 << 30)
}

/// [`sparse_cache`] with another header and size.
fn sparse_cache_with(header: &[u8], len: u64) -> (Sandbox, std::path::PathBuf, std::path::PathBuf) {
    let sandbox = Sandbox::new();
    let config = sandbox.config("cache:\n  backend: tpm\n");
    let creds = sandbox.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("psi-cache-key"), [0x42u8; 32]).unwrap();
    std::fs::create_dir_all(sandbox.state_dir()).unwrap();
    let cache = sandbox.state_dir().join("cache.enc");
    std::fs::write(&cache, header).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&cache)
        .unwrap()
        .set_len(len)
        .unwrap();
    (sandbox, config, creds)
}

/// `psi cache status --verify`, bounded, with the cache key in `creds`.
fn status_verify(sandbox: &Sandbox, config: &Path, creds: &Path) -> Output {
    let mut cmd = sandbox.psi();
    cmd.arg("-c")
        .arg(config)
        .args(["cache", "status", "--verify"])
        .env("CREDENTIALS_DIRECTORY", creds);
    bounded(&cmd)
}

#[test]
fn sparse_64_gib_cache_is_refused_by_status_verify() {
    let (sandbox, config, creds) = sparse_cache();
    let out = status_verify(&sandbox, &config, &creds);
    refused(
        &out,
        1,
        &sandbox.state_dir().join("cache.enc"),
        "larger than 64 MiB, the limit for cache files",
    );
}

/// The header is judged before the body is read: a 1 GiB file with a bad magic fails
/// `status --verify` (exit 1) without reading the gigabyte.
#[test]
fn bad_magic_is_refused_before_the_body_is_read() {
    let (sandbox, config, creds) = sparse_cache_with(b"XSIC\x02\x01", 1 << 30);
    let out = status_verify(&sandbox, &config, &creds);
    refused(
        &out,
        1,
        &sandbox.state_dir().join("cache.enc"),
        "has bad magic b'XSIC', expected b'PSIC'",
    );
    // The largest child this test process has waited for (any test's): far below the file.
    let children = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
    assert!(
        children < 512 * 1024,
        "a child reached {children} KiB of RSS"
    );
}

#[test]
fn serve_starts_with_a_sparse_64_gib_cache_and_reports_it() {
    if !require("systemd-creds") {
        return;
    }
    let (sandbox, config, creds) = sparse_cache();
    let mut cmd = sandbox.psi();
    cmd.arg("-c")
        .arg(&config)
        .arg("serve")
        .env("CREDENTIALS_DIRECTORY", &creds);
    let serve = ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"));
    // The first load may finish after READY=1: wait for its outcome in the log.
    serve.wait_for_log("the first cache load", Duration::from_secs(30), |log| {
        log.contains(r#""event":"cache.load","outcome":"error""#)
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime.block_on(http::get(&sandbox.socket(), "/healthz/cache"));
    assert_eq!(reply.status, 503, "{}", reply.text());
    let body = reply.text();
    assert!(body.contains("\"unavailable\""), "{body}");
    assert!(body.contains("larger than 64 MiB"), "{body}");
    let health = runtime.block_on(http::get(&sandbox.socket(), "/healthz"));
    assert_eq!(health.status, 200, "{}", serve.log());
}

/// A mapping that is not a regular file: `psi secret lookup` fails at once, naming it, and
/// `psi serve` answers 500 for it without tying up a worker.
fn special_mapping_is_refused(make: impl FnOnce(&Path), says: &str) {
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    std::fs::create_dir_all(sandbox.state_dir()).unwrap();
    let mapping = sandbox.state_dir().join("0123456789abcdef012345678");
    make(&mapping);

    let mut cmd = sandbox.psi();
    cmd.arg("-c")
        .arg(&config)
        .args(["secret", "lookup"])
        .env("SECRET_ID", "0123456789abcdef012345678");
    refused(&bounded(&cmd), 1, &mapping, says);

    let mut cmd = sandbox.psi();
    cmd.arg("-c").arg(&config).arg("serve");
    let serve = ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // More lookups than the runtime has workers: none may block one.
    for _ in 0..4 {
        let reply = runtime.block_on(http::get(
            &sandbox.socket(),
            "/lookup/0123456789abcdef012345678",
        ));
        assert_eq!(reply.status, 500, "{}", reply.text());
        assert!(reply.text().contains(says), "{}", reply.text());
    }
    let health = runtime.block_on(http::get(&sandbox.socket(), "/healthz"));
    assert_eq!(health.status, 200, "{}", serve.log());
}

#[test]
fn fifo_mapping_fails_a_lookup_promptly() {
    special_mapping_is_refused(mkfifo, "is a FIFO, not a regular file");
}

#[test]
fn mapping_symlinked_to_dev_zero_is_refused() {
    special_mapping_is_refused(
        |path| std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        "is a character device, not a regular file",
    );
}

#[test]
fn oversized_mapping_is_refused_naming_the_limit() {
    special_mapping_is_refused(
        |path| {
            std::fs::File::create(path)
                .unwrap()
                .set_len(1 << 30)
                .unwrap()
        },
        "is larger than 4 MiB, the limit for mapping files",
    );
}

#[test]
fn client_token_file_dev_zero_and_fifo_are_refused() {
    let sandbox = Sandbox::new();
    let fifo = sandbox.path().join("token.fifo");
    mkfifo(&fifo);
    for (path, says) in [
        (Path::new("/dev/zero"), "is a character device"),
        (fifo.as_path(), "is a FIFO"),
    ] {
        let mut cmd = sandbox.psi();
        cmd.args(["client", "lookup", "--socket"])
            .arg(sandbox.socket())
            .arg("--token-file")
            .arg(path)
            .env("SECRET_ID", "0123456789abcdef012345678");
        refused(&bounded(&cmd), 2, path, says);
    }
}

#[test]
fn config_dev_zero_fifo_and_oversized_are_refused() {
    let sandbox = Sandbox::new();
    let fifo = sandbox.path().join("config.fifo");
    mkfifo(&fifo);
    let big = sandbox.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    for (path, says) in [
        (Path::new("/dev/zero"), "is a character device"),
        (fifo.as_path(), "is a FIFO"),
        (
            big.as_path(),
            "larger than 4 MiB, the limit for configuration files",
        ),
    ] {
        let mut cmd = sandbox.psi();
        cmd.arg("-c").arg(path).arg("check");
        refused(&bounded(&cmd), 2, path, says);
    }
}
