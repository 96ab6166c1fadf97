//! AES-256-GCM in the layout both of psi's envelopes use: `nonce (12) || ciphertext || tag
//! (16)`, with a fresh random nonce per message. The systemd-creds provider binds the secret
//! name as associated data; the Nitrokey envelope (original format) uses none, which is the
//! same as empty associated data in GCM.

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use zeroize::Zeroizing;

use super::CryptoError;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// A fresh random AES-256 key.
pub fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    openssl::rand::rand_bytes(key.as_mut())
        .map_err(|e| CryptoError::openssl("no randomness", e))?;
    Ok(key)
}

/// Encrypts `plaintext` under `key` with `aad`: `nonce || ciphertext || tag`.
pub fn seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce).map_err(|e| CryptoError::openssl("no randomness", e))?;
    let mut tag = [0u8; TAG_LEN];
    let ciphertext = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&nonce),
        aad,
        plaintext,
        &mut tag,
    )
    .map_err(|e| CryptoError::openssl("AES-GCM encryption", e))?;
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len() + TAG_LEN);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    sealed.extend_from_slice(&tag);
    Ok(sealed)
}

/// Decrypts what [`seal`] produced; any change to the bytes, the key or `aad` is
/// [`CryptoError::Authentication`].
pub fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if key.len() != KEY_LEN {
        return Err(CryptoError::KeySize {
            len: key.len(),
            expected: KEY_LEN,
        });
    }
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::SealedTooShort {
            len: sealed.len(),
            needed: NONCE_LEN + TAG_LEN,
        });
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(nonce),
        aad,
        ciphertext,
        tag,
    )
    .map(Zeroizing::new)
    .map_err(|_| CryptoError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = random_key().unwrap();
        for value in [&b""[..], b"x", &[0u8; 5000]] {
            let sealed = seal(&key, b"name", value).unwrap();
            assert_eq!(sealed.len(), NONCE_LEN + value.len() + TAG_LEN);
            assert_eq!(
                open(key.as_ref(), b"name", &sealed).unwrap().as_slice(),
                value
            );
            assert_eq!(
                open(key.as_ref(), b"other", &sealed).unwrap_err(),
                CryptoError::Authentication
            );
            let mut flipped = sealed.clone();
            *flipped.last_mut().unwrap() ^= 1;
            assert_eq!(
                open(key.as_ref(), b"name", &flipped).unwrap_err(),
                CryptoError::Authentication
            );
        }
        assert!(matches!(
            open(key.as_ref(), b"", &[0u8; 27]).unwrap_err(),
            CryptoError::SealedTooShort { len: 27, .. }
        ));
        assert!(matches!(
            open(&[0u8; 16], b"", &[0u8; 40]).unwrap_err(),
            CryptoError::KeySize { len: 16, .. }
        ));
    }
}
