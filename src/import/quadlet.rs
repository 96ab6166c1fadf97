//! The quadlet reader of `psi infisical import quadlet`: `Environment=` assignments (quoted,
//! and with systemd's line continuations) and `Secret=` references, whose values the command
//! reads from Podman with `--resolve-secrets`. Pure: it takes the text and returns the keys
//! and references; warnings name lines, never values.

use zeroize::Zeroizing;

use super::{valid_key, Found};

/// A `Secret=` reference of a quadlet: the Podman secret and the key to import it as.
#[derive(Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// Parses a quadlet file: `Environment=` assignments and `Secret=` references, from any
/// section (systemd's line continuations joined). Warnings name lines, never values.
pub fn parse_quadlet(text: &str, source: &str) -> (Vec<Found>, Vec<SecretRef>, Vec<String>) {
    let mut found = Vec::new();
    let mut refs = Vec::new();
    let mut warnings = Vec::new();
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let (number, mut line) = match pending.take() {
            Some((n, mut acc)) => {
                acc.push(' ');
                acc.push_str(raw.trim());
                (n, acc)
            }
            None => (index + 1, raw.trim().to_owned()),
        };
        if line.ends_with('\\') && !line.starts_with('#') && !line.starts_with(';') {
            // Trimmed in place: copying the joined line at every continuation would make a
            // long run of continuations quadratic.
            line.pop();
            line.truncate(line.trim_end().len());
            pending = Some((number, line));
            continue;
        }
        logical.push((number, line));
    }
    if let Some(last) = pending {
        logical.push(last);
    }
    for (number, line) in logical {
        if let Some(rest) = line.strip_prefix("Environment=") {
            match split_words(rest) {
                Some(words) => {
                    for word in words {
                        match word.split_once('=') {
                            Some((key, value)) if valid_key(key) => found.push(Found {
                                key: key.to_owned(),
                                value: Zeroizing::new(value.to_owned()),
                                source: source.to_owned(),
                            }),
                            _ => warnings.push(format!(
                                "{source}:{number}: skipped an Environment= word that is not KEY=VALUE"
                            )),
                        }
                    }
                }
                None => warnings.push(format!("{source}:{number}: skipped: unclosed quote")),
            }
        } else if let Some(rest) = line.strip_prefix("Secret=") {
            // The drop-in reader's grammar, so `psi run` and import read `Secret=` alike.
            if let Some(secret) = crate::unitgen::dropin::parse_secret(rest) {
                refs.push(SecretRef {
                    key: secret.target().to_owned(),
                    name: secret.name,
                });
            }
        }
    }
    (found, refs, warnings)
}

/// systemd's word splitting for `Environment=`: whitespace outside quotes separates words,
/// quotes are removed, `\` escapes the next character. `None` for an unclosed quote.
fn split_words(text: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some(other) => word.push(other),
                    None => {}
                }
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::tests::{finishes_within, p, pairs};

    #[test]
    fn quadlets() {
        let text = "[Unit]\nDescription=x\n[Container]\nEnvironment=A=1 \"B=two words\" C='x y' D=a\\ b\nEnvironment=E=1 \\\n  F=2\nEnvironment=noequals\nSecret=db,type=env,target=DB_PASS\nSecret=plain\n# Environment=Z=1\n";
        let (found, refs, warnings) = parse_quadlet(text, "q");
        assert_eq!(
            pairs(&found),
            [
                p("A", "1"),
                p("B", "two words"),
                p("C", "x y"),
                p("D", "a b"),
                p("E", "1"),
                p("F", "2"),
            ]
        );
        assert_eq!(
            refs,
            [
                SecretRef {
                    name: "db".into(),
                    key: "DB_PASS".into()
                },
                SecretRef {
                    name: "plain".into(),
                    key: "plain".into()
                }
            ]
        );
        assert_eq!(warnings.len(), 1);
    }

    /// Runs `parse` on another thread and fails unless it returns within `limit`. The inputs

    #[test]
    fn continuations_are_joined_in_linear_time() {
        let text = format!(
            "[Container]\nEnvironment=A=1 \\\n{}  C=3\n",
            "  B=2 \\\n".repeat(500_000)
        );
        finishes_within(std::time::Duration::from_secs(20), move || {
            let (found, _, warnings) = parse_quadlet(&text, "q");
            assert_eq!(found.len(), 500_002);
            assert!(warnings.is_empty());
        });
    }
}
