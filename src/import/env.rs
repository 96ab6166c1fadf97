//! The env-file reader of `psi infisical import env-file`: comments, `export `, single
//! quotes verbatim, double quotes with `\n \t \r \\ \" \$` escapes and values spanning
//! lines, inline comments after a quoted value or after whitespace in an unquoted one.
//! Pure: it takes the text and returns the keys; warnings name lines, never values.

use zeroize::Zeroizing;

use super::{valid_key, Found};

/// Parses an env file. Returns the assignments and warnings (line numbers, never values).
pub fn parse_env(text: &str, source: &str) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            warnings.push(format!("{source}:{number}: skipped: no '='"));
            continue;
        };
        let key = key.trim();
        if !valid_key(key) {
            warnings.push(format!("{source}:{number}: skipped: invalid key"));
            continue;
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                // A quoted value may continue on the following lines. The search for the
                // closing quote resumes where it stopped, so an unclosed quote costs one pass
                // over the rest of the file rather than one per line.
                let mut text = rest[1..].to_owned();
                let mut closing = Closing::new(quote);
                let mut scanned = 0;
                loop {
                    match closing.find(&text[scanned..]).map(|at| scanned + at) {
                        Some(end) => {
                            let after = text[end + 1..].trim_start();
                            if !(after.is_empty() || after.starts_with('#')) {
                                warnings.push(format!(
                                    "{source}:{number}: skipped: text after the closing quote"
                                ));
                                break None;
                            }
                            let inner = &text[..end];
                            break Some(if quote == '"' {
                                unescape(inner)
                            } else {
                                inner.to_owned()
                            });
                        }
                        None if i < lines.len() => {
                            scanned = text.len();
                            text.push('\n');
                            text.push_str(lines[i]);
                            i += 1;
                        }
                        None => {
                            warnings.push(format!("{source}:{number}: skipped: unclosed quote"));
                            break None;
                        }
                    }
                }
            }
            _ => {
                // Unquoted: an inline comment starts at whitespace followed by '#'.
                let mut end = rest.len();
                let bytes = rest.as_bytes();
                for (at, b) in bytes.iter().enumerate() {
                    if *b == b'#' && at > 0 && bytes[at - 1].is_ascii_whitespace() {
                        end = at;
                        break;
                    }
                }
                Some(rest[..end].trim_end().to_owned())
            }
        };
        if let Some(value) = value {
            found.push(Found {
                key: key.to_owned(),
                value: Zeroizing::new(value),
                source: source.to_owned(),
            });
        }
    }
    (found, warnings)
}

/// The search for the closing quote of a quoted env value, fed the value one piece at a
/// time. A double quote may be escaped with `\`; an escape at the end of one piece applies to
/// the first character of the next.
struct Closing {
    quote: char,
    escaped: bool,
}

impl Closing {
    fn new(quote: char) -> Closing {
        Closing {
            quote,
            escaped: false,
        }
    }

    /// The byte index in `piece` of the closing quote, if `piece` holds it.
    fn find(&mut self, piece: &str) -> Option<usize> {
        for (at, c) in piece.char_indices() {
            if self.quote == '"' && self.escaped {
                self.escaped = false;
            } else if self.quote == '"' && c == '\\' {
                self.escaped = true;
            } else if c == self.quote {
                return Some(at);
            }
        }
        None
    }
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other @ ('\\' | '"' | '$' | '`')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::tests::{finishes_within, p, pairs};

    #[test]
    fn env_files() {
        let text = "# comment\n\n  export A=1\nB = spaced value  # inline\nC=\"x\\ty\\\"z\\\\\" # after\nD='raw \\n $x' # c\nE=a#b\nF=\"two\nlines\"\nG=\nH=\"\"\nno equals\n1BAD!=x\nI='unterminated\n";
        let (found, warnings) = parse_env(text, "f.env");
        assert_eq!(
            pairs(&found),
            [
                p("A", "1"),
                p("B", "spaced value"),
                p("C", "x\ty\"z\\"),
                p("D", "raw \\n $x"),
                p("E", "a#b"),
                p("F", "two\nlines"),
                p("G", ""),
                p("H", ""),
            ]
        );
        assert_eq!(
            warnings,
            [
                "f.env:12: skipped: no '='",
                "f.env:13: skipped: invalid key",
                "f.env:14: skipped: unclosed quote",
            ]
        );
    }

    #[test]
    fn text_after_a_closing_quote_is_refused_without_quoting_it() {
        let (found, warnings) = parse_env("A=\"x\"trailing-secret\n", "s");
        assert!(found.is_empty());
        assert_eq!(warnings, ["s:1: skipped: text after the closing quote"]);
    }

    #[test]
    fn an_unclosed_quote_is_read_in_linear_time() {
        let text = format!("A=\"{}", "some value text\n".repeat(200_000));
        finishes_within(std::time::Duration::from_secs(10), move || {
            let (found, warnings) = parse_env(&text, "f.env");
            assert!(found.is_empty());
            assert_eq!(warnings, ["f.env:1: skipped: unclosed quote"]);
        });
    }
}
