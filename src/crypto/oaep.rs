//! RSA-OAEP for wrapping the envelope's AES key, and OAEP *decoding* in software for tokens
//! that can only do raw RSA with the private key.
//!
//! The Nitrokey envelope wraps with OAEP, SHA-256 for both the label hash and MGF1, and an
//! empty label. Some tokens (SoftHSM 2.6.1) reject those parameters; they still do raw RSA
//! (`CKM_RSA_X_509`), which yields the OAEP-encoded block `EM = c^d mod n`. Decoding `EM` is
//! the padding check, and it must be constant time (Manger's attack turns a timing leak in
//! that check into a decryption oracle), so psi does not write it: [`decode`] hands the block
//! to OpenSSL's own OAEP decryption over an RSA key whose private exponent is 1. With `d = 1`
//! the RSA step is the identity (`EM^1 mod n = EM`, as `EM < n`), leaving exactly OpenSSL's
//! constant-time `RSA_padding_check_PKCS1_OAEP_mgf1`. The "key" holds only the public modulus,
//! so nothing secret is built, and everything stays in safe Rust through the openssl crate.
//! (The alternatives were a hand-written OAEP decoder, which is what this avoids, or an
//! `unsafe` FFI call to the padding check, which the crate forbids.)

use openssl::bn::BigNum;
use openssl::md::{Md, MdRef};
use openssl::pkey::{Id, PKey, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa, RsaPrivateKeyBuilder};
use zeroize::Zeroizing;

use super::CryptoError;

/// The OAEP hash (label hash and MGF1). The envelope format fixes SHA-256; SHA-1 exists so
/// tests can drive the token's native OAEP path on SoftHSM, which only has OAEP-SHA1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl OaepHash {
    fn md(self) -> &'static MdRef {
        match self {
            OaepHash::Sha1 => Md::sha1(),
            OaepHash::Sha256 => Md::sha256(),
        }
    }
}

/// An RSA public key parsed from DER SubjectPublicKeyInfo.
pub struct PublicKey(PKey<Public>);

impl PublicKey {
    /// Parses DER SubjectPublicKeyInfo; anything but an RSA key is refused.
    pub fn from_der(der: &[u8]) -> Result<PublicKey, CryptoError> {
        let key = PKey::public_key_from_der(der)
            .map_err(|e| CryptoError::openssl("cannot parse the public key (DER SPKI)", e))?;
        if key.id() != Id::RSA {
            return Err(CryptoError::NotRsa(format!("{:?}", key.id())));
        }
        Ok(PublicKey(key))
    }

    /// Builds the key from a token's `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT` (big-endian).
    pub fn from_components(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey, CryptoError> {
        let bad = |e| CryptoError::openssl("invalid RSA public key components", e);
        let rsa = Rsa::from_public_components(
            BigNum::from_slice(modulus).map_err(bad)?,
            BigNum::from_slice(exponent).map_err(bad)?,
        )
        .map_err(bad)?;
        Ok(PublicKey(PKey::from_rsa(rsa).map_err(bad)?))
    }

    /// DER SubjectPublicKeyInfo, the format of the public key cache file.
    pub fn to_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.0
            .public_key_to_der()
            .map_err(|e| CryptoError::openssl("cannot encode the public key", e))
    }

    /// Size of the modulus, which is the size of every wrapped key, in bytes.
    pub fn size(&self) -> usize {
        self.0.size()
    }

    /// The modulus, big-endian.
    pub fn modulus(&self) -> Result<Vec<u8>, CryptoError> {
        let rsa = self
            .0
            .rsa()
            .map_err(|e| CryptoError::openssl("not an RSA key", e))?;
        Ok(rsa.n().to_vec())
    }

    /// RSA-OAEP encryption of `data` (label empty, MGF1 with the same hash).
    pub fn wrap(&self, data: &[u8], hash: OaepHash) -> Result<Vec<u8>, CryptoError> {
        let fail = |e| CryptoError::openssl("RSA-OAEP encryption", e);
        let mut ctx = PkeyCtx::new(&self.0).map_err(fail)?;
        ctx.encrypt_init().map_err(fail)?;
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).map_err(fail)?;
        ctx.set_rsa_oaep_md(hash.md()).map_err(fail)?;
        ctx.set_rsa_mgf1_md(hash.md()).map_err(fail)?;
        let mut out = Vec::new();
        ctx.encrypt_to_vec(data, &mut out).map_err(fail)?;
        Ok(out)
    }
}

/// Decodes an OAEP-encoded block `encoded` (the raw RSA output, big-endian, at most the
/// modulus size) for the key with `modulus`, returning the message. See the module doc for
/// why OpenSSL does the decoding. Every decoding failure is the same
/// [`CryptoError::OaepDecoding`], so callers cannot leak which check failed.
pub fn decode(
    modulus: &[u8],
    encoded: &[u8],
    hash: OaepHash,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let fail = |e| CryptoError::openssl("OAEP decoder setup", e);
    let n = BigNum::from_slice(modulus).map_err(fail)?;
    let size = usize::try_from(n.num_bytes()).unwrap_or(0);
    if encoded.len() > size {
        return Err(CryptoError::OaepDecoding);
    }
    // Raw RSA output may come without its leading zero bytes; OpenSSL wants exactly `size`.
    let mut block = Zeroizing::new(vec![0u8; size]);
    block[size - encoded.len()..].copy_from_slice(encoded);
    let identity = RsaPrivateKeyBuilder::new(
        n,
        BigNum::from_u32(1).map_err(fail)?,
        BigNum::from_u32(1).map_err(fail)?,
    )
    .map_err(fail)?
    .build();
    let key = PKey::from_rsa(identity).map_err(fail)?;
    let mut ctx = PkeyCtx::new(&key).map_err(fail)?;
    ctx.decrypt_init().map_err(fail)?;
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).map_err(fail)?;
    ctx.set_rsa_oaep_md(hash.md()).map_err(fail)?;
    ctx.set_rsa_mgf1_md(hash.md()).map_err(fail)?;
    let mut out = Zeroizing::new(Vec::new());
    ctx.decrypt_to_vec(&block, &mut out)
        .map_err(|_| CryptoError::OaepDecoding)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::Private;

    fn keypair() -> (PKey<Private>, PublicKey) {
        let rsa = Rsa::generate(2048).unwrap();
        let private = PKey::from_rsa(rsa).unwrap();
        let public = PublicKey::from_der(&private.public_key_to_der().unwrap()).unwrap();
        (private, public)
    }

    /// What a token's CKM_RSA_X_509 returns: c^d mod n, no padding removed.
    fn raw_rsa(private: &PKey<Private>, c: &[u8]) -> Vec<u8> {
        let rsa = private.rsa().unwrap();
        let mut out = vec![0u8; rsa.size() as usize];
        let len = rsa.private_decrypt(c, &mut out, Padding::NONE).unwrap();
        out.truncate(len);
        out
    }

    #[test]
    fn software_decoding_of_raw_rsa_output_recovers_the_message() {
        let (private, public) = keypair();
        let modulus = public.modulus().unwrap();
        for hash in [OaepHash::Sha256, OaepHash::Sha1] {
            for message in [&b""[..], b"k", &[7u8; 32]] {
                let wrapped = public.wrap(message, hash).unwrap();
                let encoded = raw_rsa(&private, &wrapped);
                assert_eq!(
                    decode(&modulus, &encoded, hash).unwrap().as_slice(),
                    message
                );
                // The same block with the leading zero stripped (some tokens do) still decodes.
                assert_eq!(encoded[0], 0);
                assert_eq!(
                    decode(&modulus, &encoded[1..], hash).unwrap().as_slice(),
                    message
                );
            }
        }
    }

    #[test]
    fn decoding_failures_are_one_error() {
        let (private, public) = keypair();
        let modulus = public.modulus().unwrap();
        let wrapped = public.wrap(&[1u8; 32], OaepHash::Sha256).unwrap();
        let mut encoded = raw_rsa(&private, &wrapped);
        // Another hash, a flipped byte, an oversized block: all OaepDecoding, no panic.
        assert_eq!(
            decode(&modulus, &encoded, OaepHash::Sha1).unwrap_err(),
            CryptoError::OaepDecoding
        );
        encoded[100] ^= 1;
        assert_eq!(
            decode(&modulus, &encoded, OaepHash::Sha256).unwrap_err(),
            CryptoError::OaepDecoding
        );
        assert_eq!(
            decode(&modulus, &[1u8; 300], OaepHash::Sha256).unwrap_err(),
            CryptoError::OaepDecoding
        );
    }

    #[test]
    fn public_key_der_round_trips_and_non_rsa_is_refused() {
        let (_, public) = keypair();
        let rsa = public.0.rsa().unwrap();
        let rebuilt = PublicKey::from_components(&rsa.n().to_vec(), &rsa.e().to_vec()).unwrap();
        assert_eq!(rebuilt.to_der().unwrap(), public.to_der().unwrap());
        assert_eq!(public.size(), 256);
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let der = PKey::from_ec_key(ec).unwrap().public_key_to_der().unwrap();
        assert!(matches!(
            PublicKey::from_der(&der),
            Err(CryptoError::NotRsa(_))
        ));
    }
}
