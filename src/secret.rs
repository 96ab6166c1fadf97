//! The three values every flow passes around: the validated [`SecretId`], the on-disk
//! [`Mapping`] (the wire contract with Podman and with the original psi), and the
//! [`SecretValue`] itself, which zeroizes on drop and never prints.

use std::fmt;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::{fsutil, pyjson, state};

/// How the driver reads `SECRET_ID`, defined with the client that must compile alone.
pub use crate::client::secret_id_from_env;

/// Longest accepted secret ID, in bytes. Podman's IDs are 25 hex characters and names are
/// short. The ID becomes a file name inside the state directory, and it is written through a
/// temporary file whose name is [`fsutil::TEMP_NAME_OVERHEAD`] bytes longer, which must
/// still fit the file system's 255-byte limit.
pub const MAX_ID_LEN: usize = fsutil::NAME_MAX - fsutil::TEMP_NAME_OVERHEAD;

/// Unicode general category Cf (format characters), as of Unicode 15.1: invisible characters
/// such as U+202E RIGHT-TO-LEFT OVERRIDE or U+FEFF that make a logged ID read as another.
const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{AD}', '\u{AD}'),
    ('\u{600}', '\u{605}'),
    ('\u{61C}', '\u{61C}'),
    ('\u{6DD}', '\u{6DD}'),
    ('\u{70F}', '\u{70F}'),
    ('\u{890}', '\u{891}'),
    ('\u{8E2}', '\u{8E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Characters that break or disguise a log line without being control characters: the
/// format characters and U+2028/U+2029, the line and paragraph separators.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
        || FORMAT_CHARS
            .iter()
            .any(|&(first, last)| (first..=last).contains(&c))
}

/// A secret ID that is safe to use as a file name inside the state directory.
///
/// Podman passes its 25-hex-character secret ID; `psi creds store NAME` passes a name. Either
/// way the ID becomes `state_dir/<ID>`, so anything that could leave that directory, name one
/// of psi's own files there, or confuse a log line is refused. These rules are the only ones:
/// every route and command that takes an ID goes through [`SecretId::parse`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretId(String);

impl SecretId {
    /// Validates `raw` as a secret ID; the error says what is wrong with it, quoting the ID
    /// only when it holds nothing that could mislead a reader.
    /// A String error: routes make it `Error::InvalidId` (HTTP 400), commands an `Error::Usage`.
    pub fn parse(raw: &str) -> Result<SecretId, String> {
        if raw.is_empty() {
            return Err("secret ID is empty".into());
        }
        if raw.len() > MAX_ID_LEN {
            return Err(format!(
                "secret ID is {} bytes long; the limit is {MAX_ID_LEN} bytes",
                raw.len()
            ));
        }
        if raw.contains(['/', '\\']) {
            return Err("secret ID must not contain path separators ('/' or '\\')".into());
        }
        if raw.chars().any(char::is_control) {
            return Err("secret ID must not contain NUL or control characters".into());
        }
        if let Some(c) = raw.chars().find(|&c| is_invisible(c)) {
            return Err(format!(
                "secret ID must not contain Unicode format or line separator characters (found U+{:04X})",
                u32::from(c)
            ));
        }
        if raw.starts_with('.') {
            return Err(format!(
                "secret ID {raw:?} starts with '.', which is reserved for psi's own files"
            ));
        }
        if state::OWN_NAMES.contains(&raw) {
            return Err(format!(
                "secret ID {raw:?} is reserved: psi keeps a file of that name in the state directory"
            ));
        }
        Ok(SecretId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretId({:?})", self.0)
    }
}

/// A secret value: the bytes a container receives. Zeroized when dropped; it has no
/// `Display`, and its `Debug` prints only the length, so it cannot reach a log line by
/// accident. A clone is another zeroizing buffer (the cache hands one to each lookup).
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The plaintext. Call sites are few on purpose: the HTTP body, stdout of the one-shot
    /// driver, and the sealing step.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretValue {
    /// Takes over an already zeroizing buffer (decrypted plaintext) without a copy.
    fn from(bytes: Zeroizing<Vec<u8>>) -> SecretValue {
        SecretValue(bytes)
    }
}

impl From<SecretString> for SecretValue {
    /// Takes over the string's buffer without a copy.
    fn from(mut text: SecretString) -> SecretValue {
        SecretValue::new(std::mem::take(&mut *text.0).into_bytes())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.0.len())
    }
}

/// A mapping: the JSON object Podman stores through the driver and psi keeps at
/// `state_dir/<SECRET_ID>`. It names the provider and where the value lives, never the value.
///
/// The object is kept whole, in its original key order, because the cache derives its keys
/// from the exact object (the original hashes every field, including ones psi does not read).
#[derive(Clone, PartialEq)]
pub struct Mapping {
    object: Map<String, Value>,
}

impl Mapping {
    /// Parses mapping bytes as the original did: surrounding whitespace ignored, a JSON object
    /// with a string `provider`. The error never quotes the input, which may be a raw secret.
    /// A String error: the caller makes it `Error::CorruptMapping` for its ID or file.
    pub fn parse(bytes: &[u8]) -> Result<Mapping, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
        let value: Value = serde_json::from_str(text.trim()).map_err(|_| "not JSON".to_owned())?;
        let Value::Object(object) = value else {
            return Err("not a JSON object".into());
        };
        match object.get("provider") {
            Some(Value::String(_)) => Ok(Mapping { object }),
            Some(_) => Err("'provider' is not a string".into()),
            None => Err("missing 'provider' key".into()),
        }
    }

    /// Whether this mapping has exactly the shape of a mapping psi (or the original) writes:
    /// a known provider, its required string fields, and no other keys. Only such a body is
    /// kept as-is on store; anything else is treated as a raw value, so a secret that happens
    /// to be JSON with a `provider` key is sealed rather than written in plaintext.
    pub fn has_known_shape(&self) -> bool {
        let (required, optional): (&[&str], &[&str]) = match self.provider() {
            "infisical" => (&["project", "path", "key"], &[]),
            "nitrokeyhsm" => (&["blob"], &[]),
            "systemd-creds" => (&["name", "blob"], &["payload"]),
            _ => return false,
        };
        let allowed =
            |key: &str| key == "provider" || required.contains(&key) || optional.contains(&key);
        required
            .iter()
            .all(|key| matches!(self.object.get(*key), Some(Value::String(_))))
            && self
                .object
                .iter()
                .all(|(key, value)| allowed(key) && value.is_string())
    }

    /// Builds a mapping from `(key, value)` string pairs, `provider` first.
    pub fn new(provider: &str, fields: &[(&str, &str)]) -> Mapping {
        let mut object = Map::new();
        object.insert("provider".into(), Value::String(provider.into()));
        for (key, value) in fields {
            object.insert((*key).into(), Value::String((*value).into()));
        }
        Mapping { object }
    }

    pub fn provider(&self) -> &str {
        match self.object.get("provider") {
            Some(Value::String(name)) => name,
            _ => unreachable!("Mapping::parse and Mapping::new guarantee a string provider"),
        }
    }

    /// A required string field; the error names the provider and the field.
    /// A String error: each provider makes it its own kind of error.
    pub fn str_field(&self, key: &str) -> Result<&str, String> {
        match self.object.get(key) {
            Some(Value::String(value)) => Ok(value),
            Some(_) => Err(format!(
                "{} mapping field '{key}' is not a string",
                self.provider()
            )),
            None => Err(format!(
                "{} mapping is missing the '{key}' field",
                self.provider()
            )),
        }
    }

    /// An optional string field.
    pub fn opt_str_field(&self, key: &str) -> Result<Option<&str>, String> {
        match self.object.get(key) {
            None => Ok(None),
            Some(_) => self.str_field(key).map(Some),
        }
    }

    /// The bytes psi writes: Python `json.dumps` default separators, key order kept, so files
    /// psi writes are byte-identical to the original's for the same mapping.
    pub fn to_bytes(&self) -> Vec<u8> {
        pyjson::dumps_object(&self.object, pyjson::Style::DEFAULT).into_bytes()
    }

    /// The canonical text the cache derives its keys from: Python's
    /// `json.dumps(mapping, separators=(",", ":"), sort_keys=True)`, every field included.
    pub fn canonical(&self) -> String {
        pyjson::dumps_object(&self.object, pyjson::Style::CANONICAL)
    }
}

impl fmt::Debug for Mapping {
    // Mappings hold coordinates and ciphertext, not values, but blobs are long and noisy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapping(provider={:?})", self.provider())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(SecretId::parse("0123456789abcdef012345678").is_ok());
        assert!(SecretId::parse("myapp--DB_HOST").is_ok());
        assert!(SecretId::parse("worker@--KEY").is_ok());
        assert!(SecretId::parse("caf\u{e9}--cache.enc.old").is_ok());
        for bad in [
            "", ".", "..", "a/b", "a\\b", "a\0b", "a\nb", ".hidden", "x\u{7f}", "a\u{85}b",
        ] {
            assert!(SecretId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SecretId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
        let err = SecretId::parse(&"a".repeat(MAX_ID_LEN + 1)).unwrap_err();
        assert!(err.contains("the limit is 241 bytes"), "{err}");
    }

    #[test]
    fn the_longest_id_can_be_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let id = SecretId::parse(&"a".repeat(MAX_ID_LEN)).unwrap();
        fsutil::write_atomic(&dir.path().join(id.as_str()), b"{}", fsutil::PRIVATE).unwrap();
    }

    #[test]
    fn invisible_characters_are_refused_by_code_point() {
        for c in [
            '\u{AD}',
            '\u{200B}',
            '\u{202E}',
            '\u{2028}',
            '\u{2029}',
            '\u{FEFF}',
            '\u{E0041}',
        ] {
            let err = SecretId::parse(&format!("a{c}b")).unwrap_err();
            assert!(err.contains(&format!("U+{:04X}", u32::from(c))), "{err}");
        }
        // Neighbours of the ranges are ordinary characters.
        for ok in ['\u{AC}', '\u{2027}', '\u{202F}', '\u{FEFE}'] {
            assert!(
                SecretId::parse(&format!("a{ok}b")).is_ok(),
                "{ok:?} refused"
            );
        }
    }

    #[test]
    fn psis_own_files_are_reserved() {
        for name in state::OWN_NAMES {
            let err = SecretId::parse(name).unwrap_err();
            assert!(err.contains("reserved"), "{name}: {err}");
        }
        for name in [
            "cache.enc",
            "nitrokeyhsm-pubkey.der",
            "tls",
            ".socket-token",
        ] {
            assert!(SecretId::parse(name).is_err(), "{name} accepted");
        }
    }

    #[test]
    fn mapping_round_trip_keeps_order_and_python_separators() {
        let text = r#"{"provider": "infisical", "project": "myproject", "path": "/app", "key": "DB_HOST"}"#;
        let m = Mapping::parse(format!("  {text}\n").as_bytes()).unwrap();
        assert_eq!(m.provider(), "infisical");
        assert_eq!(m.to_bytes(), text.as_bytes());
        assert_eq!(m.str_field("key").unwrap(), "DB_HOST");
        assert!(m.str_field("blob").unwrap_err().contains("'blob'"));
    }

    #[test]
    fn only_known_shapes_count_as_mappings() {
        let shape = |text: &str| Mapping::parse(text.as_bytes()).unwrap().has_known_shape();
        assert!(shape(
            r#"{"provider": "infisical", "project": "p", "path": "/", "key": "K"}"#
        ));
        assert!(shape(r#"{"provider": "nitrokeyhsm", "blob": "AAEC"}"#));
        assert!(shape(
            r#"{"provider": "systemd-creds", "name": "n", "blob": "b", "payload": "p"}"#
        ));
        assert!(!shape(r#"{"provider": "x", "pw": "hunter2"}"#));
        assert!(!shape(
            r#"{"provider": "infisical", "project": "p", "path": "/", "key": "K", "pw": "x"}"#
        ));
        assert!(!shape(r#"{"provider": "nitrokeyhsm"}"#));
        assert!(!shape(r#"{"provider": "nitrokeyhsm", "blob": 1}"#));
    }

    #[test]
    fn secret_strings_compare_by_value() {
        let s = |text: &str| SecretString::new(text.into());
        assert_eq!(s("token-a"), s("token-a"));
        assert_ne!(s("token-a"), s("token-b"));
        assert_ne!(s("token-a"), s("token-a-longer"));
        assert_ne!(s(""), s("x"));
    }

    #[test]
    fn a_secret_string_becomes_a_value_with_its_bytes() {
        let value = SecretValue::from(SecretString::new("hunter2".into()));
        assert_eq!(value.expose(), b"hunter2");
    }

    #[test]
    fn mapping_errors_never_quote_input() {
        for bad in [
            &b"hunter2"[..],
            b"[1]",
            b"{\"x\": 1}",
            b"{\"provider\": 3}",
            b"\xff",
        ] {
            let err = Mapping::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"));
        }
    }
}

/// A credential from configuration or the environment (socket token, PIN, client secret):
/// zeroized on drop, redacted in `Debug`, compared in constant time.
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl PartialEq for SecretString {
    /// A derived comparison returns at the first differing byte (or at a length mismatch),
    /// which times how much of a credential a guess got right. Both sides are hashed first,
    /// so the time depends on neither their contents nor which is longer.
    fn eq(&self, other: &SecretString) -> bool {
        let digest = |s: &SecretString| openssl::sha::sha256(s.expose().as_bytes());
        openssl::memcmp::eq(&digest(self), &digest(other))
    }
}

impl Eq for SecretString {}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString::new)
    }
}

impl SecretString {
    pub fn new(value: String) -> SecretString {
        SecretString(Zeroizing::new(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}
