//! Typed scalar values of the config file (PCR lists, file modes, hooks, durations), each
//! parsed inside serde's visitor so that a bad value fails the load with its key path and
//! position, and no consumer parses text again.

use std::time::Duration;

use serde::Deserialize;

/// TPM2 PCR indexes, written `7`, `"7+11"`, `"7,11"` or `[7, 11]`; never empty, because
/// systemd-creds 252 cannot decrypt what it sealed with an empty `--tpm2-pcrs=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrList(Vec<u8>);

impl PcrList {
    /// A String error: raised in serde's visitor (`parse_scalar`), which adds line and column.
    pub fn parse(text: &str) -> Result<PcrList, String> {
        let mut pcrs = Vec::new();
        for part in text.split(['+', ',']).map(str::trim) {
            let pcr: u8 = part
                .parse()
                .map_err(|_| format!("'{part}' is not a PCR number"))?;
            pcrs.push(pcr);
        }
        PcrList::new(pcrs)
    }

    /// A String error, as [`PcrList::parse`]'s.
    fn new(pcrs: Vec<u8>) -> Result<PcrList, String> {
        if pcrs.is_empty() {
            return Err("the PCR list is empty; leave tpm2_pcrs out instead".into());
        }
        if let Some(bad) = pcrs.iter().find(|p| **p > 23) {
            return Err(format!("PCR {bad} is out of range (0-23)"));
        }
        Ok(PcrList(pcrs))
    }

    /// The `--tpm2-pcrs=` argument form, `7+11`.
    pub fn to_arg(&self) -> String {
        self.0
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join("+")
    }
}

impl<'de> Deserialize<'de> for PcrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u8),
            Text(String),
            List(Vec<u8>),
        }
        let list = match Raw::deserialize(d)? {
            Raw::One(pcr) => PcrList::new(vec![pcr]),
            Raw::Text(text) => PcrList::parse(&text),
            Raw::List(pcrs) => PcrList::new(pcrs),
        };
        list.map_err(serde::de::Error::custom)
    }
}

/// A duration key (`30s`, `90d`), parsed when the file is loaded.
pub(super) fn duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Duration, D::Error> {
    parse_scalar(d, super::duration::parse)
}

pub(super) fn optional_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    struct Value(Duration);
    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            duration(d).map(Value)
        }
    }
    Ok(Option::<Value>::deserialize(d)?.map(|Value(duration)| duration))
}

/// Reads a scalar with psi's own `parse`, inside serde's visitor: serde_yaml gives an error
/// raised there the value's line and column (raised afterwards, it gets the enclosing
/// block's).
fn parse_scalar<'de, D, T>(
    d: D,
    parse: fn(&str) -> Result<T, String>,
) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Scalar<T>(fn(&str) -> Result<T, String>);
    impl<T> serde::de::Visitor<'_> for Scalar<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<T, E> {
            (self.0)(text).map_err(E::custom)
        }
    }
    d.deserialize_str(Scalar(parse))
}

/// A TLS hook: a command line, split into words like a shell would split it when the file
/// is loaded (so a hook that cannot run is a config error, not a failed renewal). No shell
/// ever runs it; the first word is the program, found on `PATH` unless it is a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    line: String,
    /// Never empty.
    argv: Vec<String>,
}

impl Hook {
    /// The command line as written, for the log.
    pub fn line(&self) -> &str {
        &self.line
    }

    pub fn program(&self) -> &str {
        &self.argv[0]
    }

    pub fn args(&self) -> &[String] {
        &self.argv[1..]
    }

    /// A String error: raised in serde's visitor (`parse_scalar`), which adds line and column.
    pub fn parse(line: &str) -> Result<Hook, String> {
        let argv = shlex::split(line).ok_or_else(|| {
            "the hook is not a command line: unbalanced quotes or a trailing backslash".to_owned()
        })?;
        if argv.is_empty() {
            return Err("the hook is empty; write a command line".into());
        }
        Ok(Hook {
            line: line.to_owned(),
            argv,
        })
    }
}

impl<'de> Deserialize<'de> for Hook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_scalar(d, Hook::parse)
    }
}

/// A file's mode, for a certificate's output files and a workload's file secrets: octal
/// digits (`"0640"`, `0640`, `"640"`), `0o` allowed as in the original, at most 0777. Parsed
/// when the file is loaded, so a bad mode fails before a certificate is issued or Podman
/// reads it, instead of after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub(super) u32);

impl FileMode {
    /// A String error: raised in serde's visitor (`parse_scalar`), which adds line and column.
    pub fn parse(text: &str) -> Result<FileMode, String> {
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix("0o").unwrap_or(trimmed);
        let octal = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(digits, 8) {
            Ok(bits) if octal && bits <= 0o777 => Ok(FileMode(bits)),
            _ => Err(format!(
                "'{text}' is not a file mode; use octal digits, e.g. 0640"
            )),
        }
    }

    pub fn bits(self) -> u32 {
        self.0
    }
}

/// Four octal digits, `0640`: the form Podman's `mode=` reads (it takes no `0o`).
impl std::fmt::Display for FileMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_scalar(d, FileMode::parse)
    }
}

/// `providers.infisical.api_url`: an http(s) URL that can be a base for API paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl(reqwest::Url);

impl ApiUrl {
    pub fn parse(text: &str) -> Result<ApiUrl, String> {
        reqwest::Url::parse(text)
            .ok()
            .filter(|url| !url.cannot_be_a_base() && matches!(url.scheme(), "http" | "https"))
            .map(ApiUrl)
            .ok_or_else(|| format!("'{text}' is not an http(s) URL"))
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.0
    }
}

/// Infisical's cloud, the original's default.
impl Default for ApiUrl {
    fn default() -> ApiUrl {
        ApiUrl::parse("https://app.infisical.com").expect("a valid URL literal")
    }
}

impl<'de> Deserialize<'de> for ApiUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_scalar(d, ApiUrl::parse)
    }
}

/// `providers.nitrokeyhsm.key_id`: the key's `CKA_ID`, as hex that Python's `bytes.fromhex`
/// takes (whitespace between bytes allowed), like the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    pub fn parse(text: &str) -> Result<KeyId, String> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let pairs = digits.chunks(2).map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            // from_str_radix takes a sign; bytes.fromhex does not.
            let digits = pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit());
            digits.then(|| u8::from_str_radix(pair, 16).ok()).flatten()
        });
        pairs
            .collect::<Option<Vec<u8>>>()
            .map(KeyId)
            .ok_or_else(|| format!("'{text}' is not hex (for example \"02\")"))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Lowercase hex, two digits a byte (`02`).
impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::encoding::hex(&self.0))
    }
}

/// `02`, the original's default (the Nitrokey's first key slot as its tools number it).
impl Default for KeyId {
    fn default() -> KeyId {
        KeyId(vec![2])
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_scalar(d, KeyId::parse)
    }
}

/// A duration key that systemd reads too (`cache.refresh_interval` goes into a timer's
/// `OnUnitActiveSec=`): checked with psi's parser at load, kept as written (trimmed), since
/// every unit psi accepts is one systemd accepts as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerSpan(pub(super) String);

impl TimerSpan {
    /// A String error: raised in serde's visitor (`parse_scalar`), which adds line and column.
    pub fn parse(text: &str) -> Result<TimerSpan, String> {
        super::duration::parse(text)?;
        Ok(TimerSpan(text.trim().to_owned()))
    }

    /// The text for the unit file, as the config wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The span as a duration (checked at parse, so it always reads): the timers'
    /// validation and `psi status`'s stale-cache check.
    pub fn duration(&self) -> std::time::Duration {
        super::duration::parse(&self.0).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for TimerSpan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        parse_scalar(d, TimerSpan::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_parse_like_bytes_fromhex() {
        let bytes = |text| KeyId::parse(text).map(|id| id.bytes().to_vec());
        assert_eq!(bytes("02"), Ok(vec![2]));
        assert_eq!(bytes("0a FF"), Ok(vec![10, 255]));
        assert_eq!(bytes(""), Ok(vec![]));
        for bad in ["2", "zz", "+1"] {
            assert!(bytes(bad).unwrap_err().contains("is not hex"), "{bad}");
        }
    }

    #[test]
    fn api_urls_are_http_bases() {
        assert!(ApiUrl::parse("https://infisical.example/").is_ok());
        assert!(ApiUrl::parse("http://127.0.0.1:8080").is_ok());
        for bad in ["ftp://x", "mailto:a@b", "not a url", ""] {
            assert!(
                ApiUrl::parse(bad)
                    .unwrap_err()
                    .contains("is not an http(s) URL"),
                "{bad}"
            );
        }
    }

    #[test]
    fn file_modes() {
        for (text, bits) in [
            ("0640", 0o640),
            ("644", 0o644),
            ("0o600", 0o600),
            (" 0400 ", 0o400),
        ] {
            assert_eq!(FileMode::parse(text), Ok(FileMode(bits)), "{text}");
        }
        for bad in ["", "0o", "rw-r--r--", "0800", "+640", "01777", "-0"] {
            let err = FileMode::parse(bad).unwrap_err();
            assert!(err.contains("is not a file mode"), "{bad}: {err}");
        }
    }

    #[test]
    fn hooks_are_split_at_load() {
        let hook = Hook::parse("touch '/tmp/a b' c").unwrap();
        assert_eq!(hook.program(), "touch");
        assert_eq!(hook.args(), ["/tmp/a b", "c"]);
        assert_eq!(hook.line(), "touch '/tmp/a b' c");
        for bad in ["", "   ", "touch 'unbalanced", "touch a\\"] {
            assert!(Hook::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pcr_lists() {
        assert_eq!(PcrList::parse("7+11").unwrap().to_arg(), "7+11");
        assert_eq!(PcrList::parse("7, 11").unwrap().to_arg(), "7+11");
        assert!(PcrList::parse("").is_err());
        assert!(PcrList::parse("24").is_err());
    }

    #[test]
    fn file_modes_print_as_podman_reads_them() {
        assert_eq!(FileMode::parse("400").unwrap().to_string(), "0400");
        assert_eq!(FileMode::parse("0o640").unwrap().to_string(), "0640");
    }

    #[test]
    fn timer_spans_keep_the_text() {
        assert_eq!(TimerSpan::parse(" 1h ").unwrap().as_str(), "1h");
        let err = TimerSpan::parse("hourly").unwrap_err();
        assert!(err.contains("'hourly' is not a duration"), "{err}");
    }
}
