//! psi's own image (the top-level `Containerfile`), built and run as the `psi-secrets`
//! container the way the quadlet runs it, with the host's Podman using it as its secret
//! driver through the socket on a shared volume.
//!
//! Slow (a release build inside a container the first time on a machine), so `#[ignore]`d:
//! `scripts/test` runs it explicitly (`cargo test --test it image:: -- --ignored`).
//!
//! No registry is reachable here, so the build names local images (TESTING.md, "Container
//! images"): the debootstrapped bookworm base (`support::bookworm`) for the runtime stage,
//! and for the builder stage that base plus gcc, make and perl (the vendored OpenSSL) and the
//! host's own Rust toolchain (Debian's rustc is older than Cargo.toml's rust-version). Crates
//! come from crates.io inside the build. Both local images live in one Podman store kept in
//! `$CARGO_TARGET_TMPDIR/psi-image` between runs, next to the other per-machine bases, so
//! a later run reuses them and the build's layer cache; the Containerfile's cache mounts keep
//! the crates and the target directory, so after a source change only psi is recompiled.
//! Measured on 2 shared cores: the first build 6 min (crates downloaded and compiled, the
//! runtime stage's apt-get), the builder image 27 s, a rebuild after a change to src/ 47 s,
//! the test without any rebuild 11 s. Podman keeps the cache mounts in
//! /var/tmp/buildah-cache (about 600 MB); removing it makes the next build a first one.
//! A `flock` keeps two test processes out of the store at once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::support::podman::{base_conf, image_tar};
use crate::support::{bookworm, files_under, require_all, run_with_stdin, Sandbox};

const BASE: &str = "localhost/psi-test-bookworm";
const BUILDER: &str = "localhost/psi-test-builder";
const IMAGE: &str = "localhost/psi:test";
const WORKLOAD: &str = "localhost/psi-test-bb";
const CONTAINER: &str = "psi-secrets-image-test";

/// The persistent Podman store (overlay: vfs would copy the whole builder for every build
/// step), locked for the lifetime of the value. Drop removes what the test made in it: the
/// containers, the secrets and psi's image; the local base images stay for the next run.
struct Store {
    dir: PathBuf,
    /// The test's own containers.conf: the store's settings plus psi's driver, once known.
    conf: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    fn open(sandbox: &Sandbox) -> Store {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("psi-image");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let lock = File::create(dir.with_extension("lock")).unwrap();
        let lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .unwrap_or_else(|e| panic!("flock psi-image.lock: {e}"));
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let conf = sandbox.path().join("containers.conf");
        std::fs::write(&conf, base_conf(&dir)).unwrap();
        Store {
            dir,
            conf,
            _lock: lock,
        }
    }

    fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.podman().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn exists(&self, image: &str) -> bool {
        self.run(&["image", "exists", image]).status.success()
    }

    /// `podman build ARGS...`, its output in `log` (printed in full on failure: the
    /// interesting part of a failed cargo build is rarely in the last lines).
    fn build(&self, args: &[&str], log: &Path) {
        let started = Instant::now();
        let file = File::create(log).unwrap();
        let status = self
            .podman()
            .arg("build")
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "podman build {args:?} failed with {status}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        eprintln!("podman build {args:?} took {:?}", started.elapsed());
    }

    /// The bookworm base and the builder image, made when missing. The builder is rebuilt
    /// when the host's toolchain changed (its `rustc -vV` is kept next to the store).
    fn bases(&self, base_tar: &Path) {
        if !self.exists(BASE) {
            self.ok(&["import", base_tar.to_str().unwrap(), BASE]);
        }
        if !self.exists(WORKLOAD) {
            self.ok(&["import", image_tar().to_str().unwrap(), WORKLOAD]);
        }
        let version = rustc(&["-vV"]);
        let stamp = self.dir.join("builder.rustc");
        if self.exists(BUILDER) && std::fs::read_to_string(&stamp).ok() == Some(version.clone()) {
            return;
        }
        let ctx = self.dir.join("builder");
        let _ = std::fs::remove_dir_all(&ctx);
        std::fs::create_dir_all(ctx.join("rust/bin")).unwrap();
        // The active toolchain's compiler, cargo and libraries (rustc finds its sysroot
        // from its own path), without the 800 MB of documentation.
        let sysroot = PathBuf::from(rustc(&["--print", "sysroot"]).trim());
        let status = Command::new("cp")
            .arg("-a")
            .arg(sysroot.join("bin/cargo"))
            .arg(sysroot.join("bin/rustc"))
            .arg(ctx.join("rust/bin"))
            .status()
            .unwrap();
        assert!(status.success());
        let status = Command::new("cp")
            .arg("-a")
            .arg(sysroot.join("lib"))
            .arg(ctx.join("rust"))
            .status()
            .unwrap();
        assert!(status.success());
        // The host's CA bundle: this machine reaches crates.io through a TLS-inspecting
        // proxy whose CA only the host trusts.
        std::fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            ctx.join("ca-certificates.crt"),
        )
        .unwrap();
        std::fs::write(
            ctx.join("Containerfile"),
            format!(
                "FROM {BASE}\n\
                 RUN apt-get update \\\n \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev make perl ca-certificates \\\n \
                 && rm -rf /var/lib/apt/lists/*\n\
                 COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n\
                 COPY rust/ /usr/local/rust/\n\
                 ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\\n    \
                 CARGO_HOME=/usr/local/cargo\n"
            ),
        )
        .unwrap();
        self.build(
            &["-t", BUILDER, ctx.to_str().unwrap()],
            &self.dir.join("builder.log"),
        );
        std::fs::remove_dir_all(&ctx).unwrap();
        std::fs::write(stamp, version).unwrap();
    }

    /// Whether `name`'s socket answers `GET /healthz` with 200, from the host.
    fn wait_for_socket(&self, socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthz(socket) {
            if Instant::now() > deadline {
                let logs = self.run(&["logs", CONTAINER]);
                panic!(
                    "psi-secrets did not answer on {}: {}{}",
                    socket.display(),
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The secret first, while psi may still answer its delete; Podman keeps a secret
        // whose delete fails, so a failed test can leave one behind (with this run's name).
        let _ = self.run(&["secret", "rm", "--all"]);
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["rmi", "--force", IMAGE]);
        // Untagged intermediate images of the builds; the cache mounts stay.
        let _ = self.run(&["image", "prune", "--force"]);
    }
}

fn rustc(args: &[&str]) -> String {
    let out = Command::new("rustc").args(args).output().unwrap();
    assert!(out.status.success(), "rustc {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn healthz(socket: &Path) -> bool {
    Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "--max-time", "2", "--unix-socket"])
        .arg(socket)
        .arg("http://localhost/healthz")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `podman run -d` of psi-secrets as the quadlet has it: host network, the state dir, the
/// socket dir and the configuration from the host, and the host's systemd-creds key at the
/// path systemd-creds reads it from, with the host's machine ID the key is bound to.
fn start_psi_secrets(store: &Store, sandbox: &Sandbox) {
    let vol =
        |host: PathBuf, target: &str, opts: &str| format!("{}:{target}:{opts}", host.display());
    store.ok(&[
        "run",
        "-d",
        "--name",
        CONTAINER,
        "--network",
        "host",
        "-v",
        &vol(sandbox.state_dir(), "/var/lib/psi", "Z"),
        "-v",
        &vol(sandbox.path().join("run"), "/run/psi", "Z"),
        "-v",
        &vol(sandbox.path().join("etc"), "/etc/psi", "ro,Z"),
        "-v",
        &vol(
            sandbox.credential_secret(),
            "/var/lib/systemd/credential.secret",
            "ro,Z",
        ),
        "-v",
        "/etc/machine-id:/etc/machine-id:ro",
        IMAGE,
    ]);
    store.wait_for_socket(&sandbox.path().join("run/psi.sock"));
}

/// psi's image built from the top-level Containerfile on the local bases, in the store
/// (locked while the returned value lives). `None` when a tool is missing outside CI.
fn built(sandbox: &Sandbox) -> Option<Store> {
    if !require_all(&["podman", "runc", "rustc", "busybox"]) {
        return None;
    }
    let base_tar = bookworm::base_tar()?;
    let store = Store::open(sandbox);
    store.bases(base_tar);
    let started = Instant::now();
    store.build(
        &[
            "--format",
            "docker",
            "--build-arg",
            &format!("BUILDER_IMAGE={BUILDER}"),
            "--build-arg",
            &format!("BASE_IMAGE={BASE}"),
            "-t",
            IMAGE,
            env!("CARGO_MANIFEST_DIR"),
        ],
        &store.dir.join("build.log"),
    );
    eprintln!("psi image built in {:?}", started.elapsed());
    Some(store)
}

/// psi's image (built as [`built`] does) saved as a docker archive, named `name` for the
/// machines that load it (`podman load` keeps the tag), at `dir/psi-image.tar`.
pub(crate) fn archive(dir: &Path, name: &str) -> Option<PathBuf> {
    let sandbox = Sandbox::new();
    let store = built(&sandbox)?;
    let path = dir.join("psi-image.tar");
    store.ok(&["tag", IMAGE, name]);
    store.ok(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        path.to_str().unwrap(),
        name,
    ]);
    store.ok(&["rmi", name]);
    Some(path)
}

#[test]
#[ignore = "builds psi's image: minutes the first time; scripts/test runs it"]
fn image_runs_psi_secrets_for_the_hosts_podman() {
    if !require_all(&["curl", "systemd-creds"]) {
        return;
    }
    let sandbox = Sandbox::new();
    let Some(store) = built(&sandbox) else {
        return;
    };

    // What the image declares: psi serve as the entry point, the health check (kept by the
    // docker format), the OCI labels, root.
    let inspect: serde_json::Value =
        serde_json::from_str(&store.ok(&["image", "inspect", IMAGE])).unwrap();
    let image = &inspect[0];
    let config = &image["Config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(["psi"]), "{config}");
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]), "{config}");
    assert_eq!(
        config["Labels"]["org.opencontainers.image.title"], "psi",
        "{config}"
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.licenses"], "Apache-2.0",
        "{config}"
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.base.name"], BASE,
        "{config}"
    );
    assert_eq!(
        image["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "psi", "healthcheck"]),
        "{image}"
    );
    assert!(config["User"].as_str().unwrap_or("").is_empty(), "{config}");

    // The binary needs glibc alone; OpenSC's module and pcsc-lite's client are there and
    // resolve all their libraries.
    let in_image = |script: &str| {
        store.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            IMAGE,
            "-c",
            script,
        ])
    };
    // The completions and man pages psi generated for itself at build time, where bash,
    // zsh, fish and man look for them.
    let help = in_image(
        "ls /usr/share/bash-completion/completions/psi /usr/share/zsh/vendor-completions/_psi \
         /usr/share/fish/vendor_completions.d/psi.fish /usr/share/man/man1/psi.1 \
         /usr/share/man/man1/psi-setup.1 && head -c 12 /usr/share/zsh/vendor-completions/_psi",
    );
    assert!(help.trim_end().ends_with("#compdef psi"), "{help}");
    let ldd = in_image("ldd /usr/local/bin/psi");
    let mut libs: Vec<&str> = ldd
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|l| l.rsplit('/').next().unwrap())
        .collect();
    libs.sort_unstable();
    assert_eq!(
        libs,
        [
            "ld-linux-x86-64.so.2",
            "libc.so.6",
            "libgcc_s.so.1",
            "libm.so.6",
            "linux-vdso.so.1"
        ],
        "{ldd}"
    );
    let modules = in_image(
        "ldd /usr/lib64/pkcs11/opensc-pkcs11.so && ls /usr/lib/*/libpcsclite.so.1 && command -v systemd-creds && test ! -e /etc/machine-id",
    );
    assert!(!modules.contains("not found"), "{modules}");
    assert!(modules.contains("libpcsclite.so.1"), "{modules}");
    assert!(modules.contains("/systemd-creds"), "{modules}");
    // The image's psi dlopens OpenSC's module at the default path and initialises it (the
    // step a crt-static build crashes in); with no pcscd here OpenSC finds no token, which
    // psi reports as such and exits 1, not by a signal.
    let pin = store.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/sh",
        "-e",
        "PSI_NITROKEYHSM_PIN=123456",
        IMAGE,
        "-c",
        "printf 'providers:\\n  nitrokeyhsm: {}\\n' > /etc/psi/config.yaml && exec psi nitrokeyhsm test-pin",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&pin.stdout),
        String::from_utf8_lossy(&pin.stderr)
    );
    assert_eq!(pin.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the PKCS#11 module /usr/lib64/pkcs11/opensc-pkcs11.so reports no slot with an initialised token"),
        "{text}"
    );

    // The host side: a host key for systemd-creds (created by its first use), the socket
    // directory, the state directory and the configuration.
    let probe = run_with_stdin(
        Command::new("systemd-creds")
            .env("SYSTEMD_CREDENTIAL_SECRET", sandbox.credential_secret())
            .args(["encrypt", "--with-key=host", "--name=probe", "-"])
            .arg(sandbox.path().join("probe.cred")),
        b"x",
    );
    assert!(probe.status.success(), "{probe:?}");
    for dir in ["run", "etc", "state"] {
        std::fs::create_dir_all(sandbox.path().join(dir)).unwrap();
    }
    std::fs::write(
        sandbox.path().join("etc/config.yaml"),
        "providers:\n  systemd-creds:\n    with_key: host\nstore:\n  raw_values: seal\n",
    )
    .unwrap();
    start_psi_secrets(&store, &sandbox);
    let socket = sandbox.path().join("run/psi.sock");

    // The driver configuration comes from the container: curl there (psi's own path means
    // nothing to the host), on the socket path the volume maps to the host's.
    let driver = store.ok(&["exec", CONTAINER, "psi", "install", "--stdout"]);
    assert!(driver.contains("curl "), "{driver}");
    assert!(
        driver.contains("--unix-socket /run/psi/psi.sock"),
        "{driver}"
    );
    // On a real host both sides say /run/psi; here the host's side is the sandbox's.
    let driver = driver.replace("/run/psi/psi.sock", socket.to_str().unwrap());
    std::fs::write(&store.conf, format!("{}{driver}", base_conf(&store.dir))).unwrap();

    // A raw value stored through Podman is sealed by the containerised psi and read back
    // by a container start.
    let name = format!("psi-image-test-{}", std::process::id());
    let value = "image-s3cret\nline two";
    let mut create = store.podman();
    create.args(["secret", "create", &name, "-"]);
    let out = run_with_stdin(&mut create, value.as_bytes());
    assert!(out.status.success(), "secret create: {out:?}");
    let mappings = files_under(&sandbox.state_dir());
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    crate::support::assert_not_on_disk(&sandbox.state_dir(), b"image-s3cret");
    let read_back = |store: &Store| {
        store.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--secret",
            &format!("{name},type=env,target=V"),
            WORKLOAD,
            "sh",
            "-c",
            "printf %s \"$V\"",
        ])
    };
    assert_eq!(read_back(&store), value);

    // The health check the image declares (`psi healthcheck`), run by Podman in the
    // container: healthy while psi serves.
    let out = store.run(&["healthcheck", "run", CONTAINER]);
    assert!(out.status.success(), "healthcheck: {out:?}");

    // Stopping psi-secrets (SIGTERM) shuts psi down cleanly and takes the socket away; the
    // mappings stay byte for byte, and a new container on the same state directory and host
    // key serves the secret again.
    store.ok(&["stop", "--time", "20", CONTAINER]);
    let exit = store.ok(&["inspect", "--format", "{{.State.ExitCode}}", CONTAINER]);
    assert_eq!(exit.trim(), "0");
    assert!(!socket.exists(), "socket left behind");
    store.ok(&["rm", CONTAINER]);
    assert_eq!(files_under(&sandbox.state_dir()), mappings);
    start_psi_secrets(&store, &sandbox);
    assert_eq!(read_back(&store), value);

    // Deleting the secret goes through the containerised psi too.
    store.ok(&["secret", "rm", &name]);
    assert!(files_under(&sandbox.state_dir()).is_empty());
}
