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
    HmacSha256::new(key).mac(data)
}

/// HMAC-SHA256 (RFC 2104) with the key schedule done once: the SHA-256 states after
/// absorbing `key ^ ipad` and `key ^ opad` are kept and cloned per message. The cache
/// digests every lookup's mapping under one key; OpenSSL's generic HMAC interface would
/// look the algorithm up and build a context each time, which cost more than the hashing.
#[derive(Clone)]
pub struct HmacSha256 {
    inner: openssl::sha::Sha256,
    outer: openssl::sha::Sha256,
}

impl HmacSha256 {
    const BLOCK: usize = 64;

    pub fn new(key: &[u8]) -> HmacSha256 {
        let mut block = zeroize::Zeroizing::new([0u8; Self::BLOCK]);
        if key.len() > Self::BLOCK {
            block[..32].copy_from_slice(&openssl::sha::sha256(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut pad = zeroize::Zeroizing::new([0u8; Self::BLOCK]);
        let mut state = |byte: u8| {
            for (p, k) in pad.iter_mut().zip(block.iter()) {
                *p = k ^ byte;
            }
            let mut sha = openssl::sha::Sha256::new();
            sha.update(pad.as_ref());
            sha
        };
        let inner = state(0x36);
        let outer = state(0x5c);
        HmacSha256 { inner, outer }
    }

    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(data);
        let mut outer = self.outer.clone();
        outer.update(&inner.finish());
        outer.finish()
    }
}

impl CryptoError {
    /// An OpenSSL failure in `what` (key parsing, randomness): these are not about the data.
    pub(crate) fn openssl(what: &str, err: openssl::error::ErrorStack) -> CryptoError {
        CryptoError::OpenSsl(format!("{what}: {err}"))
    }
}

#[cfg(test)]
mod hmac_tests {
    use super::*;
    use crate::encoding::hex;

    #[test]
    fn rfc4231_vectors() {
        // Test case 1, and test case 6 (a key longer than the block is hashed first).
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn agrees_with_openssl_hmac_for_every_key_length() {
        use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
        // (OpenSSL refuses an empty HMAC key, so lengths start at 1.)
        for len in [1usize, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mac = HmacSha256::new(&key);
            for data in [&b""[..], b"x", &[0u8; 1000]] {
                let pkey = PKey::hmac(&key).unwrap();
                let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
                signer.update(data).unwrap();
                assert_eq!(
                    mac.mac(data).to_vec(),
                    signer.sign_to_vec().unwrap(),
                    "key {len}"
                );
            }
        }
    }
}
