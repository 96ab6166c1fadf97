//! The floor client for `cargo bench --bench serve`: the least a driver command can do per
//! secret, so the cost of `psi client` (and curl) as Podman pays it has a yardstick measured
//! in the same run.
//!
//! It connects to the socket, sends `GET /lookup/$SECRET_ID` with `Connection: close`, reads
//! the reply to the end and writes its body to stdout; it exits 0 on a `200` and 1 otherwise.
//! No argument parsing beyond the socket path, no formatting on the way, no HTTP parsing
//! beyond the status line and the blank line before the body. The bench builds it static
//! where the toolchain can, with `opt-level = "z"` and `panic = "abort"`.
//!
//! `SECRET_ID=ID cargo run --release --example floor-client -- SOCKET`

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

fn main() {
    let (Some(socket), Some(id)) = (std::env::args_os().nth(1), std::env::var_os("SECRET_ID"))
    else {
        std::process::exit(2);
    };
    std::process::exit(match lookup(&socket, id.as_encoded_bytes()) {
        Ok(true) => 0,
        _ => 1,
    });
}

/// Whether the reply was a `200`, once its body is on stdout.
fn lookup(socket: &std::ffi::OsStr, id: &[u8]) -> std::io::Result<bool> {
    let mut stream = UnixStream::connect(socket)?;
    let mut request = Vec::with_capacity(128);
    request.extend_from_slice(b"GET /lookup/");
    request.extend_from_slice(id);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(&request)?;
    let mut reply = Vec::with_capacity(1024);
    stream.read_to_end(&mut reply)?;
    if !reply.starts_with(b"HTTP/1.1 200 ") {
        return Ok(false);
    }
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(false);
    };
    let mut stdout = std::io::stdout();
    stdout.write_all(&reply[end + 4..])?;
    stdout.flush()?;
    Ok(true)
}
