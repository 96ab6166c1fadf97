//! Cryptography on bytes, with no I/O: the AES-256-GCM layout both psi envelopes share
//! ([`aead`]), RSA-OAEP key wrapping and the software OAEP decoding used when a token cannot
//! do OAEP-SHA256 itself ([`oaep`]), and the Nitrokey hybrid envelope ([`envelope`]) that must
//! stay byte-compatible with the original psi; and HMAC-SHA256 ([`hmac_sha256`]).
//!
//! Everything here is OpenSSL underneath: psi implements formats, never primitives.

pub mod aead;
pub mod envelope;
pub mod oaep;

/// Why a cryptographic operation failed. Messages name sizes and causes, never key material
/// or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("envelope too short: {len} bytes, the 2-byte key length prefix is missing")]
    TooShort { len: usize },
    #[error(
        "envelope truncated: the prefix announces a {key_len}-byte wrapped key, so at least \
         {needed} bytes are needed, but the envelope has {len}"
    )]
    Truncated {
        key_len: usize,
        needed: usize,
        len: usize,
    },
    #[error(
        "the envelope's wrapped key is {key_len} bytes, but this RSA key needs {expected} \
         (a wrong length prefix, or an envelope made for another key)"
    )]
    WrongKeyLength { key_len: usize, expected: usize },
    #[error("sealed data too short: {len} bytes, need at least {needed} (nonce and tag)")]
    SealedTooShort { len: usize, needed: usize },
    #[error("authentication failed: the data was tampered with or was sealed with another key")]
    Authentication,
    #[error(
        "RSA-OAEP decoding failed: the wrapped key was made for another key or with another \
         hash, or was tampered with"
    )]
    OaepDecoding,
    #[error("the unwrapped key is {len} bytes, expected {expected}")]
    KeySize { len: usize, expected: usize },
    #[error("expected an RSA public key, got {0}")]
    NotRsa(String),
    #[error("{0}")]
    OpenSsl(String),
}

/// HMAC-SHA256 of `data` under `key`. With an in-memory key it cannot fail short of an
/// allocation failure, so it returns the tag directly.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let key = PKey::hmac(key).expect("HMAC key");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("HMAC-SHA256");
    signer.update(data).expect("HMAC update");
    let mut tag = [0u8; 32];
    let len = signer.sign(&mut tag).expect("HMAC final");
    debug_assert_eq!(len, 32);
    tag
}

impl CryptoError {
    /// An OpenSSL failure in `what` (key parsing, randomness): these are not about the data.
    pub(crate) fn openssl(what: &str, err: openssl::error::ErrorStack) -> CryptoError {
        CryptoError::OpenSsl(format!("{what}: {err}"))
    }
}
