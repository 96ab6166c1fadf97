//! Butane YAML and Ignition JSON for provisioning psi on Fedora CoreOS (`psi butane`).
//!
//! Both renderers take one generic [`Provision`] (files, directories, units to enable), so
//! whatever other renderer produces a file (psi.conf, quadlets, units) joins by becoming a
//! [`ProvisionFile`]; this module knows nothing about psi itself.
//!
//! Butane: every file is `contents.inline`, as a YAML literal block scalar where that
//! round-trips exactly, and as a double-quoted scalar where it cannot (CR, control and other
//! non-printable characters, which YAML block scalars cannot carry or normalise away).
//! Modes are written as `0644`: Butane parses YAML with go-yaml v3, which reads a leading
//! zero as octal, and that is the form Butane's documentation shows.
//!
//! Ignition: the data URL is the one Butane writes for uncompressed contents
//! (`base/util/url.go`): RFC 2397 percent-encoding of every byte outside RFC 2396's
//! unreserved set (upper-case hex), or `;base64,` when that is strictly shorter. Butane would
//! gzip large compressible files as a third choice; psi does not, because gzip output is not
//! byte-identical across implementations and uncompressed sources are valid Ignition.

use std::path::PathBuf;

use base64::Engine;
use serde_json::{json, Map, Value};

/// Everything one machine gets: files, directories, and units to enable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provision {
    /// Comment lines for the top of the Butane file (Ignition JSON has no comments).
    pub comments: Vec<String>,
    pub files: Vec<ProvisionFile>,
    /// systemd units to enable that are not among `files` (a timer shipped elsewhere, say).
    pub units: Vec<ProvisionUnit>,
    /// Absolute path and mode.
    pub directories: Vec<(PathBuf, u32)>,
}

/// One file written whole at first boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionFile {
    /// Absolute path on the provisioned machine.
    pub path: PathBuf,
    pub mode: u32,
    pub contents: String,
    /// Comment lines above the file's entry in Butane, e.g. that it holds credentials.
    pub comment: Option<String>,
}

/// A systemd unit Ignition enables (or explicitly leaves disabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionUnit {
    pub name: String,
    pub enabled: bool,
}

/// The Ignition spec version of the JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnitionSpec {
    /// What Butane `fcos` 1.4.0 produces; the newest `ignition-validate` 2.14 checks.
    V3_3_0,
    /// What Butane `fcos` 1.5.0 produces.
    V3_4_0,
}

impl IgnitionSpec {
    pub fn version(self) -> &'static str {
        match self {
            IgnitionSpec::V3_3_0 => "3.3.0",
            IgnitionSpec::V3_4_0 => "3.4.0",
        }
    }
}

/// The Butane config as YAML text.
pub fn butane(p: &Provision, variant: &str, version: &str) -> String {
    let mut out = String::new();
    for line in p.comments.iter().flat_map(|c| c.lines()) {
        push_comment(&mut out, "", line);
    }
    out.push_str(&format!(
        "variant: {}\nversion: {}\n",
        yaml_scalar(variant),
        yaml_scalar(version)
    ));
    if !p.directories.is_empty() || !p.files.is_empty() {
        out.push_str("storage:\n");
    }
    if !p.directories.is_empty() {
        out.push_str("  directories:\n");
        for (path, mode) in &p.directories {
            out.push_str(&format!(
                "    - path: {}\n      mode: {:04o}\n",
                yaml_scalar(&path.to_string_lossy()),
                mode
            ));
        }
    }
    if !p.files.is_empty() {
        out.push_str("  files:\n");
        // Whether the previous inline block keeps its trailing newlines: then a blank line
        // after it would become part of its contents.
        let mut after_keep = true;
        for file in &p.files {
            let inline = yaml_text(&file.contents, 10);
            if let Some(comment) = &file.comment {
                // A blank line first, so a warning reads as belonging to the entry below it.
                if !after_keep {
                    out.push('\n');
                }
                for line in comment.lines() {
                    push_comment(&mut out, "    ", line);
                }
            }
            out.push_str(&format!(
                "    - path: {}\n      mode: {:04o}\n      overwrite: true\n      contents:\n        inline: {inline}",
                yaml_scalar(&file.path.to_string_lossy()),
                file.mode,
            ));
            after_keep = inline.starts_with("|+") || inline.starts_with("|2+");
        }
    }
    if !p.units.is_empty() {
        out.push_str("systemd:\n  units:\n");
        for unit in &p.units {
            out.push_str(&format!(
                "    - name: {}\n      enabled: {}\n",
                yaml_scalar(&unit.name),
                unit.enabled
            ));
        }
    }
    out
}

/// The Ignition config as pretty JSON, keys in the order of Ignition's Go types (which is
/// Butane's output order), empty sections left out as Butane does.
pub fn ignition(p: &Provision, spec: IgnitionSpec) -> String {
    let mut root = Map::new();
    root.insert("ignition".into(), json!({ "version": spec.version() }));
    let mut storage = Map::new();
    if !p.directories.is_empty() {
        let dirs: Vec<Value> = p
            .directories
            .iter()
            .map(|(path, mode)| json!({ "path": path.to_string_lossy(), "mode": mode }))
            .collect();
        storage.insert("directories".into(), Value::Array(dirs));
    }
    if !p.files.is_empty() {
        let files: Vec<Value> = p
            .files
            .iter()
            .map(|f| {
                json!({
                    "overwrite": true,
                    "path": f.path.to_string_lossy(),
                    "contents": { "source": data_url(f.contents.as_bytes()) },
                    "mode": f.mode,
                })
            })
            .collect();
        storage.insert("files".into(), Value::Array(files));
    }
    if !storage.is_empty() {
        root.insert("storage".into(), Value::Object(storage));
    }
    if !p.units.is_empty() {
        let units: Vec<Value> = p
            .units
            .iter()
            .map(|u| json!({ "enabled": u.enabled, "name": u.name }))
            .collect();
        root.insert("systemd".into(), json!({ "units": units }));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(root))
        .expect("a JSON value of strings, numbers and booleans always serializes");
    text.push('\n');
    text
}

/// The data URL Butane writes for `bytes` without compression: percent-encoded, or base64
/// when that is strictly shorter.
pub fn data_url(bytes: &[u8]) -> String {
    let mut escaped = String::with_capacity(bytes.len() + 6);
    escaped.push_str("data:,");
    escaped.extend(percent_encoding::percent_encode(bytes, DATA_URL));
    let b64 = format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    if b64.len() < escaped.len() {
        b64
    } else {
        escaped
    }
}

/// What Butane leaves unescaped in a data URL (Go's `url.PathEscape` set, less `$&+,/:;=@`).
const DATA_URL: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

fn push_comment(out: &mut String, indent: &str, line: &str) {
    if line.is_empty() {
        out.push_str(&format!("{indent}#\n"));
    } else {
        out.push_str(&format!("{indent}# {line}\n"));
    }
}

/// A one-line scalar (paths, names, versions): plain when YAML cannot read it as anything
/// but that string, double-quoted otherwise.
fn yaml_scalar(text: &str) -> String {
    let plain_char = |c: char| c.is_ascii_alphanumeric() || "/._-+@".contains(c);
    // A letter or '/' first rules out numbers; the keywords are YAML 1.1's booleans and null.
    let word = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    // Versions such as 1.5.0 are no number (two dots), and plain is how Butane's docs write them.
    let parts: Vec<&str> = text.split('.').collect();
    let version = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if (word && text.chars().all(plain_char)) || version {
        text.to_owned()
    } else {
        double_quoted(text)
    }
}

/// File contents as a YAML value starting right after `inline: `, ending in a newline.
/// Lines of a block scalar are indented by `indent` spaces, two more than the key's.
pub fn yaml_text(text: &str, indent: usize) -> String {
    if !block_safe(text) {
        return format!("{}\n", double_quoted(text));
    }
    let body = text.trim_end_matches('\n');
    let trailing = text.len() - body.len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    // An explicit indentation indicator when the first content line starts with white space:
    // otherwise the parser would take its leading spaces for indentation.
    let first = body.lines().find(|l| !l.is_empty()).unwrap_or("");
    // The indicator counts from the key's indentation, two columns left of the content.
    let indicator = if first.starts_with([' ', '\t']) {
        "2"
    } else {
        ""
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{indicator}{chomp}\n");
    for line in body.split('\n') {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push('\n');
    }
    // With keep chomping, each further trailing newline is an empty line.
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

/// Whether a literal block scalar carries `text` exactly: no CR (parsers turn CRLF into LF),
/// nothing YAML forbids or treats as a line break, and at least one non-newline character
/// (a scalar of only line breaks is ambiguous under chomping).
fn block_safe(text: &str) -> bool {
    text.chars().any(|c| c != '\n') && text.chars().all(|c| c == '\n' || !needs_escape(c))
}

/// Characters a YAML scalar must escape: C0/C1 controls (tab aside), DEL, the Unicode line
/// and paragraph separators and NEL (line breaks to YAML 1.1 parsers), and the BOM.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_url_escapes_as_butane() {
        assert_eq!(data_url(b"a=b c\n"), "data:,a%3Db%20c%0A");
        assert_eq!(data_url(b""), "data:,");
        // Binary: base64 wins once it is shorter than three characters per byte plus the
        // seven more its prefix takes; a tie stays percent-encoded, as in Butane.
        assert_eq!(data_url(&[0xff, 0xfe, 0x00]), "data:,%FF%FE%00");
        assert_eq!(data_url(&[0xff; 6]), "data:;base64,////////");
    }

    #[test]
    fn scalars_that_yaml_would_read_otherwise_are_quoted() {
        assert_eq!(yaml_scalar("/etc/psi/config.yaml"), "/etc/psi/config.yaml");
        assert_eq!(yaml_scalar("1.5.0"), "1.5.0");
        assert_eq!(yaml_scalar("fcos"), "fcos");
        for quoted in ["no", "On", "1.5", "12", "a b", "a:b", "#x", "", "-x"] {
            assert!(yaml_scalar(quoted).starts_with('"'), "{quoted}");
        }
    }

    #[test]
    fn block_scalar_chomping_and_indicator() {
        assert_eq!(yaml_text("a\nb\n", 4), "|\n    a\n    b\n");
        assert_eq!(yaml_text("a", 4), "|-\n    a\n");
        assert_eq!(yaml_text("a\n\n", 4), "|+\n    a\n\n");
        assert_eq!(yaml_text("  a\n", 4), "|2\n      a\n");
        assert_eq!(yaml_text("a\r\n", 4), "\"a\\u000D\\n\"\n");
        assert_eq!(yaml_text("", 4), "\"\"\n");
    }
}
