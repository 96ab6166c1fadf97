//! The Nitrokey hybrid envelope, byte-compatible with the original psi:
//!
//! ```text
//! key_len      u16 big-endian (256 for RSA-2048)
//! wrapped_key  key_len bytes: RSA-OAEP(SHA-256, MGF1-SHA-256, empty label) of the AES key
//! nonce        12 bytes
//! ciphertext   AES-256-GCM(aes_key, nonce, plaintext, no AAD), the 16-byte tag last
//! ```
//!
//! Sealing needs only the public key, so it runs in software without the token; opening is
//! split in two because unwrapping the AES key is the token's job: [`Envelope::parse`] finds
//! the parts, the caller unwraps [`Envelope::wrapped_key`], and [`Envelope::open`] decrypts.
//!
//! The original format has no associated data. psi's own newer formats (the version 2 cache
//! file) bind associated data into the AES-GCM part ([`seal_with_aad`],
//! [`Envelope::open_with_aad`]); the byte layout is the same. No AAD is the same as empty AAD
//! in GCM, so the plain functions are the `b""` case.

use zeroize::Zeroizing;

use super::aead::{self, NONCE_LEN, TAG_LEN};
use super::oaep::{OaepHash, PublicKey};
use super::CryptoError;

const PREFIX_LEN: usize = 2;

/// Seals `plaintext` for `public_key` with a fresh AES key (OAEP-SHA256, the format's).
pub fn seal(public_key: &PublicKey, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal_with(public_key, plaintext, OaepHash::Sha256)
}

/// [`seal`] with `aad` bound into the AES-GCM part.
pub fn seal_with_aad(
    public_key: &PublicKey,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    seal_inner(public_key, aad, plaintext, OaepHash::Sha256)
}

/// [`seal`] with another OAEP hash: only for exercising tokens' native OAEP in tests; such
/// envelopes are not the original's format.
pub fn seal_with(
    public_key: &PublicKey,
    plaintext: &[u8],
    hash: OaepHash,
) -> Result<Vec<u8>, CryptoError> {
    seal_inner(public_key, b"", plaintext, hash)
}

fn seal_inner(
    public_key: &PublicKey,
    aad: &[u8],
    plaintext: &[u8],
    hash: OaepHash,
) -> Result<Vec<u8>, CryptoError> {
    let key = aead::random_key()?;
    let wrapped = public_key.wrap(key.as_ref(), hash)?;
    let key_len = u16::try_from(wrapped.len())
        .map_err(|_| CryptoError::OpenSsl("RSA key too large for the envelope".into()))?;
    let sealed = aead::seal(&key, aad, plaintext)?;
    let mut out = Vec::with_capacity(PREFIX_LEN + wrapped.len() + sealed.len());
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// A parsed envelope, borrowing the bytes.
#[derive(Debug)]
pub struct Envelope<'a> {
    wrapped_key: &'a [u8],
    sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Splits `bytes` into wrapped key and AES-GCM part, checking only lengths.
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, CryptoError> {
        let Some((prefix, rest)) = bytes.split_first_chunk::<PREFIX_LEN>() else {
            return Err(CryptoError::TooShort { len: bytes.len() });
        };
        let key_len = usize::from(u16::from_be_bytes(*prefix));
        let needed = PREFIX_LEN + key_len + NONCE_LEN + TAG_LEN;
        if bytes.len() < needed {
            return Err(CryptoError::Truncated {
                key_len,
                needed,
                len: bytes.len(),
            });
        }
        let (wrapped_key, sealed) = rest.split_at(key_len);
        Ok(Envelope {
            wrapped_key,
            sealed,
        })
    }

    /// The RSA-OAEP wrapped AES key, for the token to unwrap.
    pub fn wrapped_key(&self) -> &'a [u8] {
        self.wrapped_key
    }

    /// Checks the wrapped key's length against the RSA key's size, before the token sees it:
    /// a wrong length prefix or another key's envelope gets a clear error here instead of a
    /// token error code.
    pub fn check_key_size(&self, modulus_len: usize) -> Result<(), CryptoError> {
        if self.wrapped_key.len() != modulus_len {
            return Err(CryptoError::WrongKeyLength {
                key_len: self.wrapped_key.len(),
                expected: modulus_len,
            });
        }
        Ok(())
    }

    /// Decrypts the value with the unwrapped AES key.
    pub fn open(&self, aes_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.open_with_aad(aes_key, b"")
    }

    /// Decrypts what [`seal_with_aad`] sealed with the same `aad`.
    pub fn open_with_aad(
        &self,
        aes_key: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        aead::open(aes_key, aad, self.sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;
    use openssl::rsa::{Padding, Rsa};

    #[test]
    fn layout_and_round_trip() {
        let rsa = Rsa::generate(2048).unwrap();
        let private = PKey::from_rsa(rsa.clone()).unwrap();
        let public = PublicKey::from_der(&private.public_key_to_der().unwrap()).unwrap();
        let bytes = seal(&public, b"hello\n").unwrap();
        assert_eq!(&bytes[..2], &[1, 0]);
        assert_eq!(bytes.len(), 2 + 256 + 12 + 6 + 16);

        let envelope = Envelope::parse(&bytes).unwrap();
        envelope.check_key_size(256).unwrap();
        // Unwrap as the token would, with OpenSSL's OAEP-SHA256.
        let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&private).unwrap();
        ctx.decrypt_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
        ctx.set_rsa_oaep_md(openssl::md::Md::sha256()).unwrap();
        ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).unwrap();
        let mut key = Vec::new();
        ctx.decrypt_to_vec(envelope.wrapped_key(), &mut key)
            .unwrap();
        assert_eq!(envelope.open(&key).unwrap().as_slice(), b"hello\n");

        // With associated data: the same layout, and only the same AAD opens it.
        let bytes = seal_with_aad(&public, b"PSIC\x02\x02", b"bound").unwrap();
        let envelope = Envelope::parse(&bytes).unwrap();
        let mut key = Vec::new();
        ctx.decrypt_to_vec(envelope.wrapped_key(), &mut key)
            .unwrap();
        assert_eq!(
            envelope
                .open_with_aad(&key, b"PSIC\x02\x02")
                .unwrap()
                .as_slice(),
            b"bound"
        );
        assert_eq!(
            envelope.open(&key).unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn malformed_envelopes_are_errors_not_panics() {
        assert_eq!(
            Envelope::parse(&[1]).unwrap_err(),
            CryptoError::TooShort { len: 1 }
        );
        assert!(matches!(
            Envelope::parse(&[1, 0, 9]).unwrap_err(),
            CryptoError::Truncated {
                key_len: 256,
                needed: 286,
                len: 3
            }
        ));
        // The smallest well-formed envelope: no wrapped key, nonce and tag only.
        let minimal = [0u8; 2 + 12 + 16];
        let envelope = Envelope::parse(&minimal).unwrap();
        assert!(matches!(
            envelope.check_key_size(256).unwrap_err(),
            CryptoError::WrongKeyLength {
                key_len: 0,
                expected: 256
            }
        ));
        assert_eq!(
            envelope.open(&[0u8; 32]).unwrap_err(),
            CryptoError::Authentication
        );
    }
}
