//! Pure renderers for the files psi generates (psi.conf, drop-ins, pcscd, Butane/Ignition):
//! plain data in, text out; no file system, no environment, no clock. Writing is the commands' job.

pub mod butane;
pub mod driver_conf;
pub mod dropin;
pub mod pcscd;
pub mod units;

use crate::config::Scope;

/// The target a unit's `[Install] WantedBy=` names: the one each scope's manager reaches at
/// boot or login (a user manager has no `multi-user.target`).
pub fn install_target(scope: Scope) -> &'static str {
    match scope {
        Scope::System => "multi-user.target",
        Scope::User => "default.target",
    }
}

/// Quotes `word` for `/bin/sh` when it needs it; plain paths stay as they are, so the output
/// matches the original's byte for byte.
pub fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Escapes `text` for a TOML basic string (`"..."`).
pub fn toml_basic(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
