//! `psi client store|lookup|delete|list`, the driver commands without curl, and psi's other
//! blocking requests to psi serve (`psi healthcheck`, `psi run`).
//!
//! The client itself is [`lean`]: one source for `psi client` in this binary (which existing
//! `psi.conf` files and secrets name) and for the small `psi-client` binary that
//! `psi install` and `psi setup` now write into the driver commands. This module adds what
//! only the library needs: its errors as psi's [`Error`] and values as [`SecretValue`].

use std::path::Path;

use crate::error::{Error, Result};
use crate::secret::SecretValue;

pub mod lean;

use lean::{build_request, error_detail, exchange, parse_response, Failure};
pub use lean::{parse, secret_id_from_env, validate_socket_token, Invocation, Op};

/// Runs `psi client ARGS...` (the words after `client`) and returns the exit code.
/// `socket` is the socket when `--socket` is not given (`$PSI_SOCKET`, or the global flag).
pub fn main(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    socket: Option<std::path::PathBuf>,
) -> u8 {
    lean::main("psi client", args, socket)
}

/// Whatever stopped an exchange: serve could not be asked, which exits 1 for these callers
/// (not 2 as a usage error does in `psi client`).
fn serve_error(failure: Failure) -> Error {
    match failure {
        Failure::Usage(why) | Failure::Serve(why) => Error::Serve(why),
    }
}

/// `psi healthcheck`: `GET /healthz`, and with `cache` also `GET /healthz/cache` (which
/// needs `token` when serve has one), must answer 200. Blocking and runtime-free like the
/// driver commands: Podman runs it in the container every `HealthInterval`. The error says
/// which route failed and how.
pub fn healthcheck(socket: &Path, cache: bool, token: Option<&str>) -> Result<()> {
    let routes: &[&str] = if cache {
        &["/healthz", "/healthz/cache"]
    } else {
        &["/healthz"]
    };
    for route in routes {
        let response = get(socket, route, token)?;
        if response.status != 200 {
            return Err(Error::Serve(format!(
                "{route}: HTTP {}: {}",
                response.status,
                error_detail(&response.body)
            )));
        }
    }
    Ok(())
}

/// `GET route` on `socket`: serve's answer whatever its status (`psi healthcheck`, and
/// `psi status`, which reads the JSON of `/healthz/cache`). The error says why serve could
/// not be asked.
pub fn get(socket: &Path, route: &str, token: Option<&str>) -> Result<lean::Response> {
    request(socket, "GET", route, token)
}

/// `METHOD route` without a body on `socket` (`psi setup`'s `POST /cache/reload`): serve's
/// answer whatever its status; the error says why serve could not be asked.
pub fn request(
    socket: &Path,
    method: &str,
    route: &str,
    token: Option<&str>,
) -> Result<lean::Response> {
    let request = build_request(method, route, token, None);
    let reply = exchange(socket, &request).map_err(serve_error)?;
    parse_response(&reply)
        .map_err(|why| Error::Serve(format!("{route}: malformed reply from psi serve: {why}")))
}

/// `GET /lookup/{id}` on `socket`: what the driver's lookup prints, for `psi run`. The error
/// is serve's own explanation (never a value).
pub fn lookup(socket: &Path, token: Option<&str>, id: &str) -> Result<SecretValue> {
    let mut target = String::from("/lookup/");
    target.extend(crate::encoding::uri_component(id));
    let request = build_request("GET", &target, token, None);
    let reply = exchange(socket, &request).map_err(serve_error)?;
    let response = parse_response(&reply).map_err(|why| {
        Error::Serve(format!(
            "lookup {id}: malformed reply from psi serve: {why}"
        ))
    })?;
    if response.status != 200 {
        return Err(Error::Serve(format!(
            "lookup {id}: HTTP {}: {}",
            response.status,
            error_detail(&response.body)
        )));
    }
    Ok(SecretValue::new(response.body.to_vec()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_refuses_a_store_where_serve_would() {
        assert_eq!(super::lean::MAX_BODY, crate::server::routes::MAX_BODY);
    }
}
