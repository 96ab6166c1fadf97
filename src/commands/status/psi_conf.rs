//! psi.conf for `psi status` (pure): which client and socket the file's driver commands
//! name, and whether it is what `psi install` writes now. The file's text is compared,
//! never copied into the report (curl's form carries the socket token).

use std::path::PathBuf;

use serde::Serialize;
use zeroize::Zeroizing;

/// psi.conf and what `psi install` would write now.
pub struct DriverFacts {
    pub path: PathBuf,
    /// The file's text (`None`: it does not exist), or why it cannot be read. Zeroized: curl's
    /// form holds the socket token.
    pub text: Result<Option<Zeroizing<String>>, String>,
    /// What `psi install` writes now with this configuration.
    pub expected: Zeroizing<String>,
}

/// psi.conf as Podman reads it.
#[derive(Debug, Serialize)]
pub struct DriverReport {
    pub path: PathBuf,
    pub present: bool,
    /// Why the file cannot be read.
    pub error: Option<String>,
    /// `curl`, `psi-client` or `psi client`, as its lookup command names it.
    pub client: Option<String>,
    pub socket: Option<String>,
    /// The file is what `psi install` writes now (`null`: no file).
    pub current: Option<bool>,
}

/// The client and socket psi.conf's lookup command names, when the file holds one.
fn describe(text: &str) -> (Option<String>, Option<String>) {
    let Some(words) = lookup_command(text).and_then(|c| shlex::split(&c)) else {
        return (None, None);
    };
    let after = |flag: &str| {
        let at = words.iter().position(|w| w == flag)?;
        words.get(at + 1).cloned()
    };
    let client = match (words.first(), words.get(1)) {
        (Some(curl), _) if curl == "curl" => "curl",
        (Some(_), Some(client)) if client == "client" => "psi client",
        (Some(program), _) if program.ends_with(crate::driver::LEAN_CLIENT) => "psi-client",
        _ => return (None, None),
    };
    let socket = after("--unix-socket").or_else(|| after("--socket"));
    (Some(client.to_owned()), socket)
}

/// The `lookup` option of psi.conf's `[secrets.opts]`, unescaped from its TOML basic string
/// (the escapes [`crate::unitgen::toml_basic`] writes).
fn lookup_command(text: &str) -> Option<String> {
    let quoted = text.lines().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "lookup").then(|| value.trim())
    })?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            escaped => out.push(escaped),
        }
    }
    Some(out)
}

impl DriverReport {
    /// What `facts` say about psi.conf.
    pub fn of(facts: &DriverFacts) -> DriverReport {
        let (text, error) = match &facts.text {
            Ok(text) => (text.as_ref().map(|t| t.as_str()), None),
            Err(why) => (None, Some(why.clone())),
        };
        let (client, socket) = text.map_or((None, None), describe);
        DriverReport {
            path: facts.path.clone(),
            present: text.is_some(),
            error,
            client,
            socket,
            current: text.map(|t| t == facts.expected.as_str()),
        }
    }

    /// Missing, unreadable or stale: a line for the verdict.
    pub fn problems(&self, facts: &DriverFacts, problems: &mut Vec<String>) {
        let path = self.path.display();
        if let Some(error) = &self.error {
            problems.push(format!("psi.conf: {path} cannot be read: {error}"));
        } else if !self.present {
            problems.push(format!(
            "psi.conf: {path} does not exist, so Podman's shell driver does not reach psi: run psi install"
        ));
        } else if self.current == Some(false) {
            let name = |(client, socket): (Option<String>, Option<String>)| match (client, socket) {
                (Some(client), Some(socket)) => format!("{client} on {socket}"),
                _ => "other commands".into(),
            };
            let now = name((self.client.clone(), self.socket.clone()));
            let wanted = name(describe(&facts.expected));
            let detail = if now == wanted {
                format!("{now}, with other options or token")
            } else {
                format!("{now}; psi install writes {wanted}")
            };
            problems.push(format!(
            "psi.conf: {path} differs from what psi install writes now ({detail}): run psi install"
        ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_conf_forms_are_told_apart() {
        let lookup =
            |command: &str| format!("lookup = \"{}\"\n", crate::unitgen::toml_basic(command));
        let cases = [
            ("/usr/bin/psi client lookup --socket /s", "psi client", "/s"),
            (
                "'/opt/my psi/psi-client' lookup --socket '/a b'",
                "psi-client",
                "/a b",
            ),
            (
                "curl -sf --unix-socket /s http://localhost/lookup/$SECRET_ID",
                "curl",
                "/s",
            ),
        ];
        for (command, client, socket) in cases {
            let (c, s) = describe(&lookup(command));
            assert_eq!(
                (c.as_deref(), s.as_deref()),
                (Some(client), Some(socket)),
                "{command}"
            );
        }
        assert_eq!(describe("lookup = \"sh -c true\"\n"), (None, None));
        assert_eq!(describe("nothing here"), (None, None));
        assert_eq!(
            lookup_command("lookup = \"a\\\"b\\\\c\\u0009\"").as_deref(),
            Some("a\"b\\c\t")
        );
    }
}
