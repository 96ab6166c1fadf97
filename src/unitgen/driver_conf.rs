//! `containers.conf.d/psi.conf`: Podman's shell secret driver as four curl commands against
//! `psi serve`.
//!
//! The lookup, delete and list lines are the original's byte for byte (existing secrets carry
//! them in their driver options). The store line is the one deliberate change: the body goes
//! with `--data-binary @-` because the original's `-d @-` strips CR and LF (corrupting a raw
//! value with newlines), and `--fail-with-body` instead of `-f` so that when psi refuses a
//! store, its reason reaches the user through `podman secret create`.

use std::path::Path;

use super::{shell_word, toml_basic};

/// What the file depends on.
#[derive(Debug, Clone, Copy)]
pub struct DriverConf<'a> {
    pub socket: &'a Path,
    /// The socket token, embedded as an `Authorization` header. Its alphabet
    /// (`config::validate_socket_token`) makes single quotes safe.
    pub token: Option<&'a str>,
}

impl DriverConf<'_> {
    /// Mode of the written file: it holds the token when there is one.
    pub fn mode(&self) -> u32 {
        if self.token.is_some() {
            0o600
        } else {
            0o644
        }
    }
}

/// The four driver commands by option name. Podman copies them into each secret's driver
/// options at create time, so `psi setup` compares a secret's options with these to tell a
/// current secret from one made under an older psi.conf.
pub fn commands(spec: &DriverConf<'_>) -> [(&'static str, String); 4] {
    let auth = spec
        .token
        .map(|t| format!("-H 'Authorization: Bearer {t}' "))
        .unwrap_or_default();
    let socket = shell_word(&spec.socket.to_string_lossy());
    let curl = |flags: &str| format!("curl {flags} {auth}--unix-socket {socket}");
    [
        (
            "store",
            format!(
                "{} -X POST --data-binary @- http://localhost/store/$SECRET_ID",
                curl("-s --fail-with-body")
            ),
        ),
        (
            "lookup",
            format!("{} http://localhost/lookup/$SECRET_ID", curl("-sf")),
        ),
        (
            "delete",
            format!(
                "{} -X DELETE http://localhost/delete/$SECRET_ID",
                curl("-sf")
            ),
        ),
        ("list", format!("{} http://localhost/list", curl("-sf"))),
    ]
}

pub fn render(spec: &DriverConf<'_>) -> String {
    let mut out = String::from("[secrets]\ndriver = \"shell\"\n\n[secrets.opts]\n");
    for (key, command) in commands(spec) {
        out.push_str(&format!("{key} = \"{}\"\n", toml_basic(&command)));
    }
    out
}
