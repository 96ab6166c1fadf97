//! `containers.conf.d/psi.conf`: Podman's shell secret driver as four commands against
//! `psi serve`, run with curl (the original's form), with the small `psi-client` binary, or
//! with `psi client` (both without a curl process start-up per secret; `psi-client` also
//! without loading all of psi).
//!
//! The lookup, delete and list lines are the original's byte for byte (existing secrets carry
//! them in their driver options). The store line is the one deliberate change: the body goes
//! with `--data-binary @-` because the original's `-d @-` strips CR and LF (corrupting a raw
//! value with newlines), and `--fail-with-body` instead of `-f` so that when psi refuses a
//! store, its reason reaches the user through `podman secret create`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

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
    /// `<binary> OP`, `binary` being `psi-client`, with the token read from `token_file`
    /// (kept out of argv).
    Lean {
        binary: &'a Path,
        token_file: Option<&'a Path>,
    },
    /// `<binary> client OP`, `binary` being psi itself: the same client as [`Client::Lean`]
    /// inside the whole of psi, which psi wrote before `psi-client` existed.
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
    match spec.client {
        Client::Curl { token } => curl_commands(&socket, token),
        Client::Lean { binary, token_file } => psi_commands(
            &shell_word(&binary.to_string_lossy()),
            &socket,
            token_file.map(|f| f.to_string_lossy()).as_deref(),
        ),
        Client::Psi { binary, token_file } => psi_commands(
            &format!("{} client", shell_word(&binary.to_string_lossy())),
            &socket,
            token_file.map(|f| f.to_string_lossy()).as_deref(),
        ),
    }
}

/// The commands of psi's own client: `program` (`psi-client`, or `psi client`, shell-quoted)
/// with the operation, the socket and the token file.
fn psi_commands(
    program: &str,
    socket: &str,
    token_file: Option<&str>,
) -> [(&'static str, String); 4] {
    let token_file = token_file
        .map(|f| format!(" --token-file {}", shell_word(f)))
        .unwrap_or_default();
    let psi = |op: &str| format!("{program} {op} --socket {socket}{token_file}");
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

/// What a set of driver commands reaches psi serve with: the part psi serve can tell apart.
/// Two sets that agree on it work the same, whichever client runs them.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    socket: String,
    auth: Auth,
}

#[derive(Debug, PartialEq, Eq)]
enum Auth {
    None,
    Token(Zeroizing<String>),
    TokenFile(PathBuf),
}

/// Reads back commands that are exactly psi's own, in any client's form (the store line
/// included, so the original's `-d @-` store line never passes); `None` for anything else.
fn parse(opts: &BTreeMap<String, String>) -> Option<Target> {
    let words = shlex::split(opts.get("lookup")?)?;
    let after = |flag: &str| {
        let at = words.iter().position(|w| w == flag)?;
        words.get(at + 1).cloned()
    };
    let socket = after("--unix-socket").or_else(|| after("--socket"))?;
    let quoted = shell_word(&socket);
    let (regenerated, auth) = if words.first().map(String::as_str) == Some("curl") {
        let token =
            after("-H").and_then(|h| h.strip_prefix("Authorization: Bearer ").map(str::to_owned));
        let regenerated = curl_commands(&quoted, token.as_deref());
        let auth = token.map_or(Auth::None, |t| Auth::Token(Zeroizing::new(t)));
        (regenerated, auth)
    } else {
        // `psi-client lookup --socket` or `psi client lookup --socket`.
        let program = shell_word(words.first()?);
        let program = match words.get(1..4)? {
            [lookup, flag, _] if lookup == "lookup" && flag == "--socket" => program,
            [client, lookup, flag]
                if client == "client" && lookup == "lookup" && flag == "--socket" =>
            {
                format!("{program} client")
            }
            _ => return None,
        };
        let token_file = after("--token-file");
        let regenerated = psi_commands(&program, &quoted, token_file.as_deref());
        let auth = token_file.map_or(Auth::None, |f| Auth::TokenFile(PathBuf::from(f)));
        (regenerated, auth)
    };
    let regenerated: BTreeMap<String, String> = regenerated
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    same(opts, &regenerated).then_some(Target { socket, auth })
}

/// Compares the four driver commands the way the original's dry run did: a missing option
/// counts as empty, and other options Podman may hold do not matter.
fn same(stored: &BTreeMap<String, String>, current: &BTreeMap<String, String>) -> bool {
    current
        .iter()
        .all(|(key, value)| stored.get(key).map(String::as_str).unwrap_or("") == value)
}

/// The driver options `psi setup` gives the secrets it creates, and its test for the options
/// of existing ones: the same commands, or (unless `exact`, `psi setup --fix-opts`) psi's
/// own commands in another client's form (curl, `psi-client`, `psi client`) for the same
/// socket and token. psi serve cannot
/// tell such a secret from a current one, so re-creating it would only churn Podman. Its
/// `Debug` leaves out the commands and the token: curl's commands carry the token inline.
pub struct DriverOpts {
    pub commands: BTreeMap<String, String>,
    /// The socket token, to match curl's inline token against the psi client's token file.
    token: Option<Zeroizing<String>>,
    /// The token file the psi client's commands name.
    token_file: Option<PathBuf>,
    exact: bool,
}

impl std::fmt::Debug for DriverOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverOpts")
            .field("commands", &self.commands.keys().collect::<Vec<_>>())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("exact", &self.exact)
            .finish()
    }
}

impl DriverOpts {
    pub fn new(
        commands: [(&'static str, String); 4],
        token: Option<String>,
        token_file: Option<PathBuf>,
        exact: bool,
    ) -> DriverOpts {
        DriverOpts {
            commands: commands
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            token: token.map(Zeroizing::new),
            token_file,
            exact,
        }
    }

    /// Whether a secret with driver options `stored` is current.
    pub fn accepts(&self, stored: &BTreeMap<String, String>) -> bool {
        if same(stored, &self.commands) {
            return true;
        }
        if self.exact {
            return false;
        }
        match (parse(stored), parse(&self.commands)) {
            (Some(stored), Some(current)) => self.resolved(stored) == self.resolved(current),
            _ => false,
        }
    }

    /// `target` with the token file psi writes replaced by the token it holds.
    fn resolved(&self, target: Target) -> Target {
        match (&target.auth, &self.token_file, &self.token) {
            (Auth::TokenFile(file), Some(ours), Some(token)) if file == ours => Target {
                socket: target.socket,
                auth: Auth::Token(token.clone()),
            },
            _ => target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKET: &str = "/run/psi/psi.sock";
    const TOKEN_FILE: &str = "/var/lib/psi/socket-token";

    fn curl(socket: &str, token: Option<&str>) -> BTreeMap<String, String> {
        let conf = DriverConf {
            socket: Path::new(socket),
            client: Client::Curl { token },
        };
        DriverOpts::new(commands(&conf), None, None, false).commands
    }

    fn psi(binary: &str, token_file: Option<&str>) -> BTreeMap<String, String> {
        let client = Client::Psi {
            binary: Path::new(binary),
            token_file: token_file.map(Path::new),
        };
        psi_form(client)
    }

    fn lean(binary: &str, token_file: Option<&str>) -> BTreeMap<String, String> {
        let client = Client::Lean {
            binary: Path::new(binary),
            token_file: token_file.map(Path::new),
        };
        psi_form(client)
    }

    fn psi_form(client: Client<'_>) -> BTreeMap<String, String> {
        let conf = DriverConf {
            socket: Path::new(SOCKET),
            client,
        };
        DriverOpts::new(commands(&conf), None, None, false).commands
    }

    /// What setup holds when its configured client is curl with `token`.
    fn current(token: Option<&str>, exact: bool) -> DriverOpts {
        let conf = DriverConf {
            socket: Path::new(SOCKET),
            client: Client::Curl { token },
        };
        DriverOpts::new(
            commands(&conf),
            token.map(str::to_owned),
            token.map(|_| PathBuf::from(TOKEN_FILE)),
            exact,
        )
    }

    #[test]
    fn debug_shows_no_token() {
        let opts = current(Some("secret-token-123"), false);
        let shown = format!("{opts:?}");
        assert!(!shown.contains("secret-token-123"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn the_other_clients_form_for_the_same_socket_and_token_is_current() {
        let opts = current(Some("tok"), false);
        assert!(opts.accepts(&curl(SOCKET, Some("tok"))));
        assert!(opts.accepts(&psi("/usr/local/bin/psi", Some(TOKEN_FILE))));
        assert!(opts.accepts(&psi("/opt/my psi/psi", Some(TOKEN_FILE))));
        assert!(opts.accepts(&lean("/usr/local/bin/psi-client", Some(TOKEN_FILE))));
        assert!(opts.accepts(&lean("/opt/my psi/psi-client", Some(TOKEN_FILE))));
        let none = current(None, false);
        assert!(none.accepts(&psi("/usr/bin/psi", None)));
        assert!(none.accepts(&lean("/usr/bin/psi-client", None)));
    }

    #[test]
    fn psi_client_and_psi_forms_differ_only_in_the_program() {
        let lean = lean("/usr/local/bin/psi-client", Some(TOKEN_FILE));
        let psi = psi("/usr/local/bin/psi", Some(TOKEN_FILE));
        assert_eq!(
            lean["lookup"],
            format!("/usr/local/bin/psi-client lookup --socket {SOCKET} --token-file {TOKEN_FILE}")
        );
        assert_eq!(
            psi["lookup"],
            format!("/usr/local/bin/psi client lookup --socket {SOCKET} --token-file {TOKEN_FILE}")
        );
        // Where setup now writes psi-client, the secrets made with `psi client` or curl stay.
        let conf = DriverConf {
            socket: Path::new(SOCKET),
            client: Client::Lean {
                binary: Path::new("/usr/local/bin/psi-client"),
                token_file: Some(Path::new(TOKEN_FILE)),
            },
        };
        let token = Some("tok".to_owned());
        let now = DriverOpts::new(commands(&conf), token, Some(TOKEN_FILE.into()), false);
        assert!(now.accepts(&lean));
        assert!(now.accepts(&psi));
        assert!(now.accepts(&curl(SOCKET, Some("tok"))));
        assert!(!now.accepts(&curl(SOCKET, Some("old"))));
        let exact = DriverOpts::new(commands(&conf), None, Some(TOKEN_FILE.into()), true);
        assert!(!exact.accepts(&psi));
    }

    #[test]
    fn another_socket_token_or_command_is_stale() {
        let opts = current(Some("tok"), false);
        assert!(!opts.accepts(&curl("/run/other.sock", Some("tok"))));
        assert!(!opts.accepts(&curl(SOCKET, Some("old"))));
        assert!(!opts.accepts(&curl(SOCKET, None)));
        assert!(!opts.accepts(&psi("/usr/bin/psi", Some("/elsewhere/token"))));
        assert!(!opts.accepts(&psi("/usr/bin/psi", None)));
        // The original's store line strips newlines from raw values: always re-created.
        let mut original = curl(SOCKET, Some("tok"));
        original.insert(
            "store".into(),
            format!("curl -sf -H 'Authorization: Bearer tok' --unix-socket {SOCKET} -X POST -d @- http://localhost/store/$SECRET_ID"),
        );
        assert!(!opts.accepts(&original));
        assert!(!opts.accepts(&BTreeMap::new()));
    }

    #[test]
    fn fix_opts_accepts_only_the_configured_form() {
        let opts = current(Some("tok"), true);
        assert!(opts.accepts(&curl(SOCKET, Some("tok"))));
        assert!(!opts.accepts(&psi("/usr/local/bin/psi", Some(TOKEN_FILE))));
    }
}
