//! Access tokens: the record kept per auth configuration, when to use, renew or replace it,
//! and the on-disk cache the original psi also reads and writes.
//!
//! File: `state_dir/.token.<K>.json`, `K` = the first 12 hex digits of
//! `sha256("<method>:<identity_id>:<client_id>")` (the client secret is not part of it).
//! Content: the original's `{"access_token": "...", "expires_at": <float epoch seconds>}`
//! plus, from psi, `renewed_at`, `ttl` and `max_expires_at`, which the original's reader
//! ignores. A file with only the two original fields is used until `expires_at` and then
//! replaced by a login, since renewing needs the TTL.
//!
//! `expires_at` is when psi stops *using* the token: `min(expiresIn, token.ttl)` after it was
//! issued or renewed (the `token.ttl` cap is the original's), never past the max TTL. Renewal
//! goes by `expiresIn`, not the JWT's `exp`, which Infisical sets to the max TTL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::Result;
use crate::fsutil;
use crate::secret::SecretString;

/// A token as the server granted it (login or renew).
pub(crate) struct Grant {
    pub access: SecretString,
    /// `expiresIn`: seconds until the server stops accepting the token unless renewed.
    pub ttl: u64,
    /// `accessTokenMaxTTL`: seconds from creation past which it cannot be renewed; 0 = none.
    pub max_ttl: u64,
}

/// A token in use, in memory and in the cache file.
#[derive(Clone)]
pub(crate) struct Token {
    pub access: SecretString,
    /// Epoch seconds after which psi no longer uses it.
    expires_at: f64,
    /// When the current lifetime began (login or renew); unknown in the original's files.
    renewed_at: Option<f64>,
    /// The server-side TTL in seconds; unknown in the original's files.
    ttl: Option<u64>,
    /// The server's hard limit; `None` is "no limit" when `ttl` is known.
    max_expires_at: Option<f64>,
}

/// What to do with the token we hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Use,
    Renew,
    Login,
}

impl Token {
    /// A token granted at `now` by a login; `cap` is `token.ttl` (0 = no cap).
    pub fn from_login(grant: Grant, now: f64, cap: u64) -> Token {
        let max = (grant.max_ttl > 0).then_some(now + grant.max_ttl as f64);
        Token::lifetime(grant, now, cap, max)
    }

    /// The token after a renewal at `now`: the max-TTL deadline stays the creation's.
    pub fn renewed(&self, grant: Grant, now: f64, cap: u64) -> Token {
        Token::lifetime(grant, now, cap, self.max_expires_at)
    }

    fn lifetime(grant: Grant, now: f64, cap: u64, max_expires_at: Option<f64>) -> Token {
        let used = if cap > 0 {
            grant.ttl.min(cap)
        } else {
            grant.ttl
        };
        let mut expires_at = now + used as f64;
        if let Some(max) = max_expires_at {
            expires_at = expires_at.min(max);
        }
        Token {
            access: grant.access,
            expires_at,
            renewed_at: Some(now),
            ttl: Some(grant.ttl),
            max_expires_at,
        }
    }

    /// Use it while fresh; refresh a tenth of its lifetime (at most 30 s) before it runs
    /// out; renew only while the server still accepts it and the renewed TTL stays within
    /// the max TTL (a renew past it fails *and* deletes the token server-side); else log in.
    pub fn next(&self, now: f64) -> Next {
        let margin = self
            .renewed_at
            .map_or(0.0, |at| ((self.expires_at - at) / 10.0).min(30.0));
        if now < self.expires_at - margin {
            return Next::Use;
        }
        match (self.renewed_at, self.ttl) {
            (Some(at), Some(ttl))
                if now < at + ttl as f64
                    && self
                        .max_expires_at
                        .is_none_or(|max| now + ttl as f64 <= max) =>
            {
                Next::Renew
            }
            _ => Next::Login,
        }
    }

    /// The cache file content.
    fn to_file(&self) -> Zeroizing<Vec<u8>> {
        #[derive(Serialize)]
        struct File<'a> {
            access_token: &'a str,
            expires_at: f64,
            renewed_at: Option<f64>,
            ttl: Option<u64>,
            max_expires_at: Option<f64>,
        }
        super::secret_json(&File {
            access_token: self.access.expose(),
            expires_at: self.expires_at,
            renewed_at: self.renewed_at,
            ttl: self.ttl,
            max_expires_at: self.max_expires_at,
        })
    }

    /// A String error: the only caller logs it and logs in again.
    fn from_file(bytes: &[u8]) -> Result<Token, String> {
        #[derive(Deserialize)]
        struct File {
            access_token: SecretString,
            expires_at: f64,
            #[serde(default)]
            renewed_at: Option<f64>,
            #[serde(default)]
            ttl: Option<u64>,
            #[serde(default)]
            max_expires_at: Option<f64>,
        }
        let file: File = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
        if !file.expires_at.is_finite() {
            return Err("expires_at is not a number".into());
        }
        Ok(Token {
            access: file.access_token,
            expires_at: file.expires_at,
            renewed_at: file.renewed_at,
            ttl: file.ttl,
            max_expires_at: file.max_expires_at,
        })
    }
}

/// The original's cache key for an auth configuration.
pub(crate) fn cache_key(
    method: &str,
    identity_id: Option<&str>,
    client_id: Option<&str>,
) -> String {
    let text = format!(
        "{method}:{}:{}",
        identity_id.unwrap_or(""),
        client_id.unwrap_or("")
    );
    crate::encoding::hex(&super::sigv4::sha256(text.as_bytes()))[..12].to_owned()
}

/// One slot per auth configuration: the async mutex makes concurrent callers that need a
/// token share one login instead of each starting their own.
pub(crate) type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// The tokens of every auth configuration, in memory and under the state directory.
pub(crate) struct Tokens {
    dir: PathBuf,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Tokens {
    pub fn new(dir: &Path) -> Tokens {
        Tokens {
            dir: dir.to_path_buf(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn slot(&self, key: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(key.to_owned()).or_default().clone()
    }

    fn path(&self, key: &str) -> PathBuf {
        crate::state::StateDir::new(&self.dir).access_token_path(key)
    }

    /// The cached token for `key`, if there is a readable file. A malformed file is not an
    /// error: it is reported and will be replaced by the next login.
    pub fn load(&self, key: &str) -> Option<Token> {
        let path = self.path(key);
        let bytes = match crate::fsutil::read_capped(&path, crate::fsutil::TOKEN) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "cannot read the cached Infisical token; logging in");
                return None;
            }
        };
        match Token::from_file(&bytes) {
            Ok(token) => Some(token),
            Err(reason) => {
                tracing::warn!(file = %path.display(), reason, "ignoring a malformed cached Infisical token; it will be replaced");
                None
            }
        }
    }

    /// Writes the cache file (0600, atomically). Failing to cache is not failing to log in:
    /// the caller logs it and goes on with the token in memory.
    pub fn save(&self, key: &str, token: &Token) -> Result<()> {
        fsutil::ensure_dir(&self.dir, 0o700)?;
        fsutil::write_atomic(&self.path(key), &token.to_file(), fsutil::PRIVATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ttl: u64, max_ttl: u64) -> Grant {
        Grant {
            access: SecretString::new("tok".into()),
            ttl,
            max_ttl,
        }
    }

    #[test]
    fn cache_keys_match_the_original() {
        assert_eq!(
            cache_key("universal-auth", None, Some("cid")),
            "cd1469a80ff6"
        );
        assert_eq!(cache_key("aws-iam", Some("test-id"), None), "f0ef892f94f5");
    }

    #[test]
    fn reads_the_originals_file_and_logs_in_after_expiry() {
        let token =
            Token::from_file(br#"{"access_token":"tok","expires_at":1700000000.5}"#).unwrap();
        assert_eq!(token.access.expose(), "tok");
        assert_eq!(token.next(1_700_000_000.0), Next::Use);
        // No margin without a known lifetime, as the original: valid iff now < expires_at.
        assert_eq!(token.next(1_700_000_000.4), Next::Use);
        // Without the TTL a renewal cannot be planned.
        assert_eq!(token.next(1_700_000_000.5), Next::Login);
        assert!(Token::from_file(b"{\"access_token\":1}").is_err());
        assert!(Token::from_file(b"not json").is_err());
    }

    #[test]
    fn file_round_trip_keeps_the_original_fields_first() {
        let token = Token::from_login(grant(60, 600), 1000.0, 300);
        let bytes = token.to_file();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with(r#"{"access_token":"tok","expires_at":1060.0,"#),
            "{text}"
        );
        let back = Token::from_file(&bytes).unwrap();
        assert_eq!(back.expires_at, 1060.0);
        assert_eq!(back.max_expires_at, Some(1600.0));
        assert_eq!(back.ttl, Some(60));
    }

    #[test]
    fn lifetime_is_capped_by_token_ttl_and_max_ttl() {
        assert_eq!(
            Token::from_login(grant(2_592_000, 0), 0.0, 300).expires_at,
            300.0
        );
        assert_eq!(Token::from_login(grant(60, 0), 0.0, 300).expires_at, 60.0);
        assert_eq!(Token::from_login(grant(60, 0), 0.0, 0).expires_at, 60.0);
        assert_eq!(Token::from_login(grant(60, 30), 0.0, 300).expires_at, 30.0);
    }

    #[test]
    fn renews_only_within_the_max_ttl() {
        // TTL 60, max 600, no cap: fresh until 54 (a tenth of the lifetime early).
        let token = Token::from_login(grant(60, 600), 0.0, 0);
        assert_eq!(token.next(53.0), Next::Use);
        assert_eq!(token.next(55.0), Next::Renew);
        // Past the server-side TTL the token is dead: a renew would fail.
        assert_eq!(token.next(60.0), Next::Login);
        // Renewed at 530: a further renew at 585 would end at 645 > 600.
        let late = token.renewed(grant(60, 600), 530.0, 0);
        assert_eq!(late.next(585.0), Next::Login);
        // The Infisical defaults (TTL == max TTL): never renewable, log in again.
        let defaults = Token::from_login(grant(2_592_000, 2_592_000), 0.0, 300);
        assert_eq!(defaults.next(290.0), Next::Login);
        // No max TTL: renewable as long as the token lives.
        let unlimited = Token::from_login(grant(60, 0), 0.0, 0);
        assert_eq!(
            unlimited.renewed(grant(60, 0), 1e6, 0).next(1e6 + 58.0),
            Next::Renew
        );
    }

    #[test]
    fn malformed_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::new(dir.path());
        let path = dir.path().join(".token.abc.json");
        std::fs::write(&path, "{broken").unwrap();
        assert!(tokens.load("abc").is_none());
        tokens
            .save("abc", &Token::from_login(grant(60, 0), 0.0, 0))
            .unwrap();
        assert_eq!(tokens.load("abc").unwrap().access.expose(), "tok");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
