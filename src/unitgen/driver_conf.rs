//! `containers.conf.d/psi.conf`: Podman's shell secret driver as four commands against
//! `psi serve`, run either with curl (the original's form) or with `psi client` (no curl
//! process start-up per secret).
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
    pub client: Client<'a>,
}

/// The program the commands run, and how it gets the socket token.
#[derive(Debug, Clone, Copy)]
pub enum Client<'a> {
    /// curl, with the token embedded as an `Authorization` header. Its alphabet
    /// (`config::validate_socket_token`) makes single quotes safe.
    Curl { token: Option<&'a str> },
    /// `<binary> client OP`, with the token read from `token_file` (kept out of argv).
    Psi {
        binary: &'a Path,
        token_file: Option<&'a Path>,
    },
}

impl DriverConf<'_> {
    /// Mode of the written file: it holds the token when curl carries one.
    pub fn mode(&self) -> u32 {
        match self.client {
            Client::Curl { token: Some(_) } => 0o600,
            _ => 0o644,
        }
    }
}

/// The four driver commands by option name. Podman copies them into each secret's driver
/// options at create time, so `psi setup` compares a secret's options with these to tell a
/// current secret from one made under an older psi.conf.
pub fn commands(spec: &DriverConf<'_>) -> [(&'static str, String); 4] {
    let socket = shell_word(&spec.socket.to_string_lossy());
    let (binary, token_file) = match spec.client {
        Client::Curl { token } => return curl_commands(&socket, token),
        Client::Psi { binary, token_file } => (binary, token_file),
    };
    let token_file = token_file
        .map(|f| format!(" --token-file {}", shell_word(&f.to_string_lossy())))
        .unwrap_or_default();
    let psi = |op: &str| {
        format!(
            "{} client {op} --socket {socket}{token_file}",
            shell_word(&binary.to_string_lossy())
        )
    };
    [
        ("store", psi("store")),
        ("lookup", psi("lookup")),
        ("delete", psi("delete")),
        ("list", psi("list")),
    ]
}

fn curl_commands(socket: &str, token: Option<&str>) -> [(&'static str, String); 4] {
    let auth = token
        .map(|t| format!("-H 'Authorization: Bearer {t}' "))
        .unwrap_or_default();
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
