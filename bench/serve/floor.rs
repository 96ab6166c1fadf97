//! The floor the bench measures psi against: compiles `bench/floor`'s server and client and
//! starts the server.
//!
//! They are compiled here with rustc alone, each a single std-only file: cargo builds no
//! examples for `cargo bench --bench serve` and holds the build directory while the bench
//! runs, and the client is built as the least a driver command can be, with flags for it
//! alone: static and not position-independent (where the toolchain can link it so),
//! `opt-level = "z"`, `panic = "abort"`, stripped.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Mode, Running};

pub struct Floor {
    server: PathBuf,
    pub client: PathBuf,
    /// Whether the client is linked statically (the toolchain could not, when false).
    pub client_static: bool,
}

impl Floor {
    /// Compiles both programs into `floor/` beside the bench's own `deps/`.
    pub fn build() -> Floor {
        // The bench runs as <target>/release/deps/serve-<hash>.
        let out = std::env::current_exe()
            .expect("bench executable")
            .parent()
            .and_then(Path::parent)
            .expect("target/release")
            .join("floor");
        std::fs::create_dir_all(&out).expect("floor output directory");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/floor");
        let (server, client) = (out.join("floor-server"), out.join("floor-client"));
        assert!(
            rustc(&source.join("server.rs"), &server, &["-C", "opt-level=3"]),
            "rustc could not build the floor server (bench/floor/server.rs)"
        );
        let small = [
            "-C",
            "opt-level=z",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ];
        // Static and not position-independent: nothing for a dynamic loader or a
        // self-relocating start to do.
        let static_flags = [
            &small[..],
            &[
                "-C",
                "target-feature=+crt-static",
                "-C",
                "relocation-model=static",
            ],
        ]
        .concat();
        let client_static = rustc(&source.join("client.rs"), &client, &static_flags);
        if !client_static {
            eprintln!("the floor client does not link statically here; building it dynamic");
            assert!(
                rustc(&source.join("client.rs"), &client, &small),
                "rustc could not build the floor client (bench/floor/client.rs)"
            );
        }
        Floor {
            server,
            client,
            client_static,
        }
    }

    /// Starts the floor server on `socket`, answering each connection once or keeping it, as
    /// `mode` asks, and waits until it listens.
    pub fn start_server(&self, socket: &Path, mode: Mode) -> Running {
        let mut server = Command::new(&self.server);
        server.arg(socket).stdout(Stdio::null());
        if let Mode::KeepAlive = mode {
            server.arg("--keep-alive");
        }
        let mut child = server.spawn().expect("floor server");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Connecting succeeds once it listens; the server reads end-of-file and closes.
        while UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the floor server exited with {status}");
            }
            assert!(Instant::now() < deadline, "the floor server did not start");
            std::thread::sleep(Duration::from_micros(200));
        }
        Running::new(child)
    }
}

/// Compiles `source` to `output` with `flags`; whether it succeeded. The rustc is `$RUSTC`,
/// else the one beside the cargo that built the bench, else the one on `PATH`.
fn rustc(source: &Path, output: &Path, flags: &[&str]) -> bool {
    let beside_cargo = Path::new(env!("CARGO")).with_file_name("rustc");
    let rustc = std::env::var_os("RUSTC")
        .map(PathBuf::from)
        .or_else(|| beside_cargo.exists().then_some(beside_cargo))
        .unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "bin"])
        .args(flags)
        .arg("-o")
        .arg(output)
        .arg(source)
        .status()
        .expect("rustc")
        .success()
}
