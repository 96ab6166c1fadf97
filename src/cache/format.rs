//! The `cache.enc` file format, pure (bytes in, bytes out; the caller passes the time):
//!
//! ```text
//! offset 0  magic    "PSIC"
//! offset 4  version  0x01 (the original) or 0x02 (psi: the header is authenticated)
//! offset 5  tag      0x01 TPM, 0x02 HSM
//! offset 6  payload  TPM: nonce (12) || AES-256-GCM(key, json) || tag (16)
//!                    HSM: the Nitrokey hybrid envelope of json
//! ```
//!
//! Version 1 encrypts without associated data, so its header can be changed unnoticed.
//! Version 2 is byte for byte the same layout, but the 6 header bytes are the AES-GCM
//! associated data (for HSM: of the envelope's AES-GCM part). psi writes version 2 and reads
//! both.
//!
//! The decrypted JSON is the original's, written as Python's
//! `json.dumps(..., sort_keys=True, separators=(",", ":"))` writes it:
//! `{"entries":{"<hmac hex>":"<base64 value>"},"hmac_key":"<base64 32 bytes>","version":2,"written_at":<int>}`.
//! A payload with `"version": 1` (the original's older, ID-keyed cache) is recognised and
//! discarded. Error messages are the original's.
//!
//! Secret bytes are decoded straight from the decrypted buffer into zeroizing buffers of
//! their final size, and the JSON text is written into one buffer sized up front: no copy of
//! a value is left behind by a reallocation.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

use super::Digest;
use crate::crypto::aead::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::crypto::CryptoError;
use crate::pyjson;
use crate::secret::SecretValue;

pub const MAGIC: [u8; 4] = *b"PSIC";
pub const HEADER_LEN: usize = 6;
/// The original's file version: no associated data.
pub const VERSION_ORIGINAL: u8 = 1;
/// psi's file version: the header is the AES-GCM associated data.
pub const VERSION_AUTHENTICATED: u8 = 2;
pub const TAG_TPM: u8 = 0x01;
pub const TAG_HSM: u8 = 0x02;
/// The payload JSON's `version`.
pub const PAYLOAD_VERSION: u64 = 2;

/// The 6-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub tag: u8,
}

impl Header {
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [a, b, c, d] = MAGIC;
        [a, b, c, d, self.version, self.tag]
    }

    /// Reads a header from the start of `bytes`, checking length and magic only (status
    /// reports any version and tag). `path` is for the message.
    /// A String error: a whole sentence that becomes `Error::Cache`, or a `cache status` row.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Header, String> {
        let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(format!(
                "Cache file {} is too short to contain a header",
                path.display()
            ));
        };
        if header[..4] != MAGIC {
            return Err(format!(
                "Cache file {} has bad magic {}, expected b'PSIC'",
                path.display(),
                py_bytes_repr(&header[..4])
            ));
        }
        Ok(Header {
            version: header[4],
            tag: header[5],
        })
    }

    /// Whether this file can be decrypted by the backend with tag `expected`.
    /// A String error: a whole sentence that becomes `Error::Cache`.
    pub fn check(self, path: &Path, expected: u8) -> Result<(), String> {
        if !matches!(self.version, VERSION_ORIGINAL | VERSION_AUTHENTICATED) {
            return Err(format!(
                "Cache file {} uses unsupported version {}",
                path.display(),
                self.version
            ));
        }
        if self.tag != expected {
            return Err(format!(
                "Cache file {} was written by backend tag {:#x}, but current backend is {:#x}. \
                 Re-run 'psi cache init' with the correct backend or restore the key.",
                path.display(),
                self.tag,
                expected
            ));
        }
        Ok(())
    }

    /// The AES-GCM associated data of a file with this header: none for version 1, the
    /// header itself from version 2 on.
    pub fn aad(self) -> Vec<u8> {
        if self.version >= VERSION_AUTHENTICATED {
            self.to_bytes().to_vec()
        } else {
            Vec::new()
        }
    }
}

/// Python's `repr()` of a bytes object, for the bad-magic message (`b'PSIX'`, `b'\x00\x01'`).
fn py_bytes_repr(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut out = format!("b{quote}");
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if char::from(b) == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push(quote);
    out
}

/// The TPM backend's payload: `nonce || AES-256-GCM(key, plaintext, aad)`.
pub fn seal_tpm(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
    aead::seal(key, aad, plaintext).map_err(|e| format!("TPM cache encrypt failed: {e}"))
}

/// Opens what [`seal_tpm`] sealed.
pub fn open_tpm(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    payload: &[u8],
) -> Result<Zeroizing<Vec<u8>>, String> {
    if payload.len() < NONCE_LEN + TAG_LEN {
        return Err("TPM cache payload truncated".into());
    }
    aead::open(key, aad, payload).map_err(|e| match e {
        CryptoError::Authentication => {
            "TPM cache decrypt failed: ciphertext tampered or wrong key".into()
        }
        other => format!("TPM cache decrypt failed: {other}"),
    })
}

/// The payload JSON for `entries` (`(key, value)`, any order), byte for byte what the
/// original's `json.dumps(payload, separators=(",", ":"), sort_keys=True)` writes.
pub fn encode_payload<K: AsRef<str>>(
    hmac_key: &[u8],
    entries: &[(K, &[u8])],
    written_at: u64,
) -> Zeroizing<Vec<u8>> {
    // Keys are not secret: escape them first, so the one buffer can be sized exactly.
    let mut keyed: Vec<(&str, String, &[u8])> = entries
        .iter()
        .map(|(key, value)| {
            let mut escaped = String::new();
            pyjson::write_string(&mut escaped, key.as_ref());
            (key.as_ref(), escaped, *value)
        })
        .collect();
    // Python sorts str keys by code point: the same order as UTF-8 bytes.
    keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));

    let head = "{\"entries\":{";
    let middle = "},\"hmac_key\":\"";
    let tail = format!("\",\"version\":{PAYLOAD_VERSION},\"written_at\":{written_at}}}");
    let b64_len = |n: usize| n.div_ceil(3) * 4;
    let entries_len: usize = keyed
        .iter()
        .map(|(_, key, value)| key.len() + 1 + b64_len(value.len()) + 2)
        .sum::<usize>()
        + keyed.len().saturating_sub(1);
    let capacity = head.len() + entries_len + middle.len() + b64_len(hmac_key.len()) + tail.len();

    let mut out = Zeroizing::new(String::with_capacity(capacity));
    out.push_str(head);
    for (i, (_, key, value)) in keyed.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str(":\"");
        B64.encode_string(value, &mut out);
        out.push('"');
    }
    out.push_str(middle);
    B64.encode_string(hmac_key, &mut out);
    out.push_str(&tail);
    debug_assert_eq!(out.len(), capacity, "the payload buffer was sized exactly");
    // Moves the buffer out (no copy) into a zeroizing Vec.
    Zeroizing::new(std::mem::take(&mut *out).into_bytes())
}

/// A decrypted payload.
pub enum Payload {
    /// `"version": 1`: the original's older cache, keyed by Podman secret IDs. Its entries
    /// can never match a digest, so they are discarded.
    Legacy,
    Current {
        hmac_key: Zeroizing<[u8; KEY_LEN]>,
        entries: HashMap<Digest, SecretValue>,
        /// Entries whose key is not a lowercase hex SHA-256 digest (no mapping can have it).
        foreign_keys: usize,
    },
}

/// Parses the decrypted payload JSON.
/// A String error: a whole sentence that becomes `Error::Cache`.
pub fn decode_payload(bytes: &[u8]) -> Result<Payload, String> {
    let document: Json<'_> = serde_json::from_slice(bytes)
        .map_err(|e| format!("Cache payload is not valid UTF-8 JSON: {e}"))?;
    let Json::Object(fields) = document else {
        return Err("Cache payload must be a JSON object".into());
    };
    // Python's json.loads keeps the last of duplicate keys.
    let field = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(key, _)| key.as_str() == name)
            .map(|(_, value)| value)
    };
    match field("version") {
        Some(Json::Number(n)) if n.as_f64() == Some(1.0) => return Ok(Payload::Legacy),
        Some(Json::Number(n)) if n.as_f64() == Some(PAYLOAD_VERSION as f64) => {}
        other => {
            return Err(format!(
                "Cache payload version {} is unsupported (expected {PAYLOAD_VERSION})",
                other.map_or("None".to_owned(), Json::describe)
            ))
        }
    }

    let Some(Json::String(key_text)) = field("hmac_key") else {
        return Err("Cache payload 'hmac_key' must be a base64 string".into());
    };
    let key_bytes = decode_b64(key_text.as_str())
        .map_err(|e| format!("Cache payload 'hmac_key' has invalid base64: {e}"))?;
    let hmac_key: [u8; KEY_LEN] = key_bytes.as_slice().try_into().map_err(|_| {
        format!(
            "Cache payload 'hmac_key' must be {KEY_LEN} bytes, got {}",
            key_bytes.len()
        )
    })?;
    let hmac_key = Zeroizing::new(hmac_key);

    let Some(Json::Object(items)) = field("entries") else {
        return Err("Cache payload 'entries' must be a JSON object".into());
    };
    let mut entries = HashMap::with_capacity(items.len());
    let mut foreign_keys = 0;
    for (key, value) in items {
        let Json::String(encoded) = value else {
            return Err("Cache entry keys and values must be strings".into());
        };
        let value = decode_b64(encoded.as_str()).map_err(|e| {
            format!(
                "Cache entry {} has invalid base64: {e}",
                py_str_repr(key.as_str())
            )
        })?;
        match parse_digest(key.as_str()) {
            Some(digest) => {
                entries.insert(digest, SecretValue::from(value));
            }
            None => foreign_keys += 1,
        }
    }
    Ok(Payload::Current {
        hmac_key,
        entries,
        foreign_keys,
    })
}

/// Strict standard base64 (`base64.b64decode(s, validate=True)`) into a zeroizing buffer of
/// its final size.
fn decode_b64(text: &str) -> Result<Zeroizing<Vec<u8>>, base64::DecodeError> {
    let mut out = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(text.len())));
    B64.decode_vec(text, &mut out)?;
    Ok(out)
}

/// A digest from its lowercase hex form (what Python's `hexdigest()` writes).
pub fn parse_digest(text: &str) -> Option<Digest> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut digest = [0u8; 32];
    for (out, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
        *out = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(digest)
}

/// The lowercase hex form of a digest.
pub fn digest_hex(digest: &Digest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Python's `repr()` of a str, near enough for an entry key in a message.
fn py_str_repr(text: &str) -> String {
    format!("'{}'", text.escape_default())
}

// ---------------------------------------------------------------------------------------------
// A shallow JSON tree that borrows strings from the decrypted buffer.

/// A JSON string: borrowed when it has no escapes (always, for what psi and the original
/// write), else an owned copy that zeroizes.
enum Text<'a> {
    Borrowed(&'a str),
    Owned(Zeroizing<String>),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(text) => text,
            Text::Owned(text) => text,
        }
    }
}

/// Only as much JSON as the payload needs: objects (in order), strings, numbers; arrays,
/// booleans and null are consumed and kept as `Other`.
enum Json<'a> {
    Object(Vec<(Text<'a>, Json<'a>)>),
    String(Text<'a>),
    Number(serde_json::Number),
    Other(&'static str),
}

impl Json<'_> {
    /// For the unsupported-version message, as Python would print the value.
    fn describe(&self) -> String {
        match self {
            Json::Object(_) => "{...}".into(),
            Json::String(text) => text.as_str().to_owned(),
            Json::Number(n) => n.to_string(),
            Json::Other(what) => (*what).to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Json::deserialize(d)? {
            Json::String(text) => Ok(text),
            _ => Err(de::Error::custom("expected a string")),
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Text::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Text::Owned(Zeroizing::new(v.to_owned()))))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Other("nan"), Json::Number))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Other(if v { "True" } else { "False" }))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Other("None"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Json::Other("[...]"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(item) = map.next_entry::<Text<'de>, Json<'de>>()? {
            items.push(item);
        }
        Ok(Json::Object(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = {
        let mut key = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            key[i] = i as u8;
            i += 1;
        }
        key
    };

    fn path() -> &'static Path {
        Path::new("/var/lib/psi/cache.enc")
    }

    fn current(payload: Payload) -> (Zeroizing<[u8; 32]>, HashMap<Digest, SecretValue>, usize) {
        match payload {
            Payload::Current {
                hmac_key,
                entries,
                foreign_keys,
            } => (hmac_key, entries, foreign_keys),
            Payload::Legacy => panic!("legacy payload"),
        }
    }

    fn decode_err(text: &str) -> String {
        match decode_payload(text.as_bytes()) {
            Err(message) => message,
            Ok(_) => panic!("{text} decoded"),
        }
    }

    #[test]
    fn payload_text_is_the_originals() {
        let text = encode_payload(&KEY, &[("abc", &b"v"[..])], 1_700_000_000);
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            r#"{"entries":{"abc":"dg=="},"hmac_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","version":2,"written_at":1700000000}"#
        );
        let empty = encode_payload::<&str>(&KEY, &[], 5);
        assert_eq!(
            std::str::from_utf8(&empty).unwrap(),
            r#"{"entries":{},"hmac_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","version":2,"written_at":5}"#
        );
        // Keys sorted by code point, escaped like Python's ensure_ascii.
        let text = encode_payload(
            &KEY,
            &[("b", &b""[..]), ("a\u{e9}", b"\0"), ("a", b"xy")],
            1,
        );
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            r#"{"entries":{"a":"eHk=","a\u00e9":"AA==","b":""},"hmac_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","version":2,"written_at":1}"#
        );
    }

    #[test]
    fn payload_round_trip_with_binary_and_large_values() {
        let digest_a = [0xabu8; 32];
        let digest_b = [0x01u8; 32];
        let binary: Vec<u8> = (0..=255).collect();
        let large = vec![0x5au8; 128 * 1024];
        let keyed = [
            (digest_hex(&digest_a), binary.as_slice()),
            (digest_hex(&digest_b), large.as_slice()),
        ];
        let text = encode_payload(&KEY, &keyed, 42);
        let (key, entries, foreign) = current(decode_payload(&text).unwrap());
        assert_eq!(*key, KEY);
        assert_eq!(foreign, 0);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[&digest_a].expose(), binary.as_slice());
        assert_eq!(entries[&digest_b].expose(), large.as_slice());
    }

    #[test]
    fn payload_parsing_follows_the_original() {
        // Keys that are not digests (the Appendix A vector's "abc") load as nothing.
        let text = r#"{"entries":{"abc":"dg=="},"hmac_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","version":2,"written_at":1}"#;
        let (_, entries, foreign) = current(decode_payload(text.as_bytes()).unwrap());
        assert!(entries.is_empty());
        assert_eq!(foreign, 1);
        // Escaped strings, key order and duplicate keys (last wins) are JSON's business.
        let hex = digest_hex(&[7u8; 32]);
        let text = format!(
            r#"{{"version":2.0,"hmac_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\u003d","entries":{{"{hex}":"eA==","{hex}":"e\u0048k="}},"extra":[1,{{"a":null}}]}}"#
        );
        let (_, entries, _) = current(decode_payload(text.as_bytes()).unwrap());
        assert_eq!(entries[&[7u8; 32]].expose(), b"xy");
        assert!(matches!(
            decode_payload(br#"{"version":1,"entries":{"3f2a":"dg=="}}"#).unwrap(),
            Payload::Legacy
        ));

        assert!(decode_err("{").starts_with("Cache payload is not valid UTF-8 JSON: "));
        assert!(decode_payload(b"{\"version\":\"\xff\"}")
            .err()
            .unwrap()
            .starts_with("Cache payload is not valid UTF-8 JSON: "));
        assert_eq!(decode_err("[1]"), "Cache payload must be a JSON object");
        assert_eq!(decode_err("\"x\""), "Cache payload must be a JSON object");
        assert_eq!(
            decode_err(r#"{"version":3}"#),
            "Cache payload version 3 is unsupported (expected 2)"
        );
        assert_eq!(
            decode_err("{}"),
            "Cache payload version None is unsupported (expected 2)"
        );
        assert_eq!(
            decode_err(r#"{"version":2,"hmac_key":5,"entries":{}}"#),
            "Cache payload 'hmac_key' must be a base64 string"
        );
        assert!(decode_err(r#"{"version":2,"hmac_key":"AAE","entries":{}}"#)
            .starts_with("Cache payload 'hmac_key' has invalid base64: "));
        assert_eq!(
            decode_err(r#"{"version":2,"hmac_key":"AAEC","entries":{}}"#),
            "Cache payload 'hmac_key' must be 32 bytes, got 3"
        );
        let key = "\"hmac_key\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"";
        assert_eq!(
            decode_err(&format!(r#"{{"version":2,{key},"entries":[]}}"#)),
            "Cache payload 'entries' must be a JSON object"
        );
        assert_eq!(
            decode_err(&format!(r#"{{"version":2,{key}}}"#)),
            "Cache payload 'entries' must be a JSON object"
        );
        assert_eq!(
            decode_err(&format!(r#"{{"version":2,{key},"entries":{{"k":1}}}}"#)),
            "Cache entry keys and values must be strings"
        );
        assert!(
            decode_err(&format!(r#"{{"version":2,{key},"entries":{{"k":"a b"}}}}"#))
                .starts_with("Cache entry 'k' has invalid base64: ")
        );
    }

    #[test]
    fn headers_and_their_errors() {
        let header = Header {
            version: 2,
            tag: TAG_HSM,
        };
        assert_eq!(&header.to_bytes(), b"PSIC\x02\x02");
        assert_eq!(Header::parse(path(), b"PSIC\x02\x02rest").unwrap(), header);
        assert_eq!(header.aad(), b"PSIC\x02\x02");
        assert_eq!(Header { version: 1, tag: 1 }.aad(), b"");
        assert_eq!(
            Header::parse(path(), b"PSIC\x01").unwrap_err(),
            "Cache file /var/lib/psi/cache.enc is too short to contain a header"
        );
        assert_eq!(
            Header::parse(path(), b"PSIX\x01\x01").unwrap_err(),
            "Cache file /var/lib/psi/cache.enc has bad magic b'PSIX', expected b'PSIC'"
        );
        assert_eq!(
            Header::parse(path(), b"\x00\x01'\\\x01\x01").unwrap_err(),
            "Cache file /var/lib/psi/cache.enc has bad magic b\"\\x00\\x01'\\\\\", expected b'PSIC'"
        );
        assert_eq!(
            Header { version: 3, tag: 1 }
                .check(path(), TAG_TPM)
                .unwrap_err(),
            "Cache file /var/lib/psi/cache.enc uses unsupported version 3"
        );
        assert_eq!(
            Header { version: 1, tag: 1 }.check(path(), TAG_HSM).unwrap_err(),
            "Cache file /var/lib/psi/cache.enc was written by backend tag 0x1, but current backend is 0x2. Re-run 'psi cache init' with the correct backend or restore the key."
        );
        Header { version: 1, tag: 2 }
            .check(path(), TAG_HSM)
            .unwrap();
    }

    #[test]
    fn tpm_payloads() {
        let sealed = seal_tpm(&KEY, b"PSIC\x02\x01", b"{}").unwrap();
        assert_eq!(
            open_tpm(&KEY, b"PSIC\x02\x01", &sealed).unwrap().as_slice(),
            b"{}"
        );
        let tampered = "TPM cache decrypt failed: ciphertext tampered or wrong key";
        assert_eq!(open_tpm(&KEY, b"", &sealed).unwrap_err(), tampered);
        assert_eq!(
            open_tpm(&[1u8; 32], b"PSIC\x02\x01", &sealed).unwrap_err(),
            tampered
        );
        assert_eq!(
            open_tpm(&KEY, b"", &[0u8; 27]).unwrap_err(),
            "TPM cache payload truncated"
        );
    }

    #[test]
    fn digests_in_hex() {
        let digest: Digest = std::array::from_fn(|i| i as u8 * 8);
        let hex = digest_hex(&digest);
        assert_eq!(&hex[..8], "00081018");
        assert_eq!(parse_digest(&hex), Some(digest));
        assert_eq!(parse_digest(&hex.to_uppercase()), None);
        assert_eq!(parse_digest(&hex[1..]), None);
        assert_eq!(parse_digest("abc"), None);
    }
}
