//! `psi-client`: the driver client as a binary of its own, `psi client` without the rest of
//! psi, for the commands Podman runs once per secret on every container start.
//!
//! What a driver command costs is mostly loading the program: psi is a 17 MB executable
//! (Tokio, OpenSSL, the providers) and this is about 1 MB. It compiles the client's
//! source (`src/client/lean.rs`) with the two leaves of psi it uses, each under the path it
//! has in the library, so both binaries run one code. The fast build, static and not
//! position-independent, is `cargo build-psi-client` (`.cargo/config.toml`; README, "Build").

#[path = "../client/lean.rs"]
mod client;
#[path = "../encoding/uri.rs"]
mod encoding;
#[path = "../fsutil/read.rs"]
mod fsutil;

fn main() -> std::process::ExitCode {
    let socket = std::env::var_os("PSI_SOCKET").map(Into::into);
    let code = client::main("psi-client", std::env::args_os().skip(1), socket);
    std::process::ExitCode::from(code)
}
