//! Operations on an open, logged-in PKCS#11 session, and what their failures mean: token
//! selection, key lookup (once per session), unwrapping the AES key (native OAEP, or raw RSA
//! plus software OAEP decoding), and the mapping of `CKR_*` codes to psi errors, including
//! which ones mean "the session is gone, open a new one". The thread and its recovery policy
//! are in [`super::token`].

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism as CkMechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

use super::thread::{KeyInfo, TokenOptions, TokenStatus};
use super::{failed, unavailable, Mechanism};
use crate::crypto::oaep::{self, OaepHash};
use crate::crypto::CryptoError;
use crate::error::Error;

/// A logged-in session and what it has learnt about the token; dropped whole when the
/// session is lost, so no stale handle or unwrap path outlives it.
pub(super) struct OpenToken {
    pub(super) session: Session,
    pub(super) status: TokenStatus,
    /// Looked up once per session.
    pub(super) private_key: Option<(ObjectHandle, Vec<u8>)>,
    /// The unwrap path that worked on this session (`None` until the first unwrap).
    pub(super) path: Option<Mechanism>,
}

/// An operation's failure: the error, and whether the session is gone and a fresh one
/// should be tried.
pub(super) struct Failure {
    pub(super) error: Error,
    pub(super) session_lost: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            session_lost: false,
        }
    }
}

pub(super) type OpResult<T> = std::result::Result<T, Failure>;

impl OpenToken {
    /// Finds the key object of `class`: by `CKA_ID` first, then by `CKA_LABEL` (the
    /// original's order). Returns the handle and which attribute matched.
    pub(super) fn find(
        &self,
        class: ObjectClass,
        options: &TokenOptions,
    ) -> OpResult<(ObjectHandle, &'static str)> {
        let searches: [(&'static str, Attribute); 2] = [
            ("id", Attribute::Id(options.key_id.clone())),
            (
                "label",
                Attribute::Label(options.key_label.as_bytes().to_vec()),
            ),
        ];
        for (found_by, attr) in searches {
            let found = self
                .session
                .find_objects(&[Attribute::Class(class), attr])
                .map_err(|e| pkcs11("cannot search the token", e))?;
            if let Some(handle) = found.first() {
                return Ok((*handle, found_by));
            }
        }
        let kind = if class == ObjectClass::PUBLIC_KEY {
            "public"
        } else {
            "private"
        };
        Err(failed(format!(
            "{kind} key not found on token '{}': no object with id '{}' or label '{}' \
             (check key_id/key_label in providers.nitrokeyhsm)",
            self.status.token_label,
            crate::encoding::hex(&options.key_id),
            options.key_label
        ))
        .into())
    }

    /// The private key's handle and modulus, looked up once per session.
    pub(super) fn private_key(
        &mut self,
        options: &TokenOptions,
    ) -> OpResult<(ObjectHandle, Vec<u8>)> {
        if let Some(found) = &self.private_key {
            return Ok(found.clone());
        }
        let (handle, found_by) = self.find(ObjectClass::PRIVATE_KEY, options)?;
        let attrs = self
            .session
            .get_attributes(
                handle,
                &[
                    AttributeType::Modulus,
                    AttributeType::Id,
                    AttributeType::Label,
                ],
            )
            .map_err(|e| pkcs11("cannot read the private key's attributes", e))?;
        let mut modulus = None;
        let mut key = KeyInfo {
            found_by,
            id_hex: String::new(),
            label: String::new(),
        };
        for attr in attrs {
            match attr {
                Attribute::Modulus(m) => modulus = Some(m),
                Attribute::Id(id) => key.id_hex = crate::encoding::hex(&id),
                Attribute::Label(l) => key.label = String::from_utf8_lossy(&l).into_owned(),
                _ => {}
            }
        }
        let modulus = modulus
            .ok_or_else(|| failed("the private key is not an RSA key (no CKA_MODULUS)".into()))?;
        self.status.key = Some(key);
        self.private_key = Some((handle, modulus.clone()));
        Ok((handle, modulus))
    }

    pub(super) fn unwrap_key(
        &mut self,
        wrapped: &[u8],
        options: &TokenOptions,
    ) -> OpResult<Zeroizing<Vec<u8>>> {
        let hash = options.oaep_hash;
        let (key, modulus) = self.private_key(options)?;
        let size = modulus.len() - modulus.iter().take_while(|b| **b == 0).count();
        if wrapped.len() != size {
            return Err(decrypt_failed(CryptoError::WrongKeyLength {
                key_len: wrapped.len(),
                expected: size,
            }));
        }
        // A block not below the modulus was never made with this key (an envelope for another
        // key of the same size); raw RSA on some tokens answers that with CKR_GENERAL_ERROR,
        // which would read as a broken session. Same length, so byte order is number order.
        if wrapped >= &modulus[modulus.len() - size..] {
            return Err(decrypt_failed(CryptoError::OaepDecoding));
        }
        if self.path != Some(Mechanism::RawWithSoftwareUnpadding) {
            let (hash_alg, mgf) = match hash {
                OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
                OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            };
            let params = PkcsOaepParams::new(hash_alg, mgf, PkcsOaepSource::empty());
            match self
                .session
                .decrypt(&CkMechanism::RsaPkcsOaep(params), key, wrapped)
            {
                Ok(plain) => {
                    self.path = Some(Mechanism::Oaep);
                    return Ok(Zeroizing::new(plain));
                }
                Err(CkError::Pkcs11(
                    rv @ (RvError::ArgumentsBad
                    | RvError::MechanismParamInvalid
                    | RvError::MechanismInvalid),
                    _,
                )) if self.path.is_none() => {
                    tracing::info!(
                        provider = super::NAME,
                        token_error = ckr_name(rv),
                        hash = ?hash,
                        "the token does not do RSA-OAEP with these parameters; using raw RSA \
                         on the token and OAEP decoding in software"
                    );
                    self.path = Some(Mechanism::RawWithSoftwareUnpadding);
                }
                Err(e) => return Err(unwrap_failed(e)),
            }
        }
        let encoded = Zeroizing::new(
            self.session
                .decrypt(&CkMechanism::RsaX509, key, wrapped)
                .map_err(unwrap_failed)?,
        );
        oaep::decode(&modulus, &encoded, hash).map_err(decrypt_failed)
    }
}

/// The slot to use: by token label or serial when configured, else the `slot_index`-th slot
/// with an initialised token. (The original counted every slot with a token; uninitialised
/// tokens exist only on software tokens, whose free slot comes last, so indices agree.)
pub(super) fn select_slot(library: &Pkcs11, options: &TokenOptions) -> OpResult<(Slot, usize)> {
    let slots = library
        .get_slots_with_initialized_token()
        .map_err(|e| pkcs11("cannot list slots", e))?;
    if slots.is_empty() {
        return Err(unavailable(format!(
            "no token present: the PKCS#11 module {} reports no slot with an initialised \
             token (is the Nitrokey plugged in and pcscd running?)",
            options.module.display()
        ))
        .into());
    }
    if options.token_label.is_none() && options.token_serial.is_none() {
        return slots
            .get(options.slot_index)
            .map(|slot| (*slot, options.slot_index))
            .ok_or_else(|| {
                unavailable(format!(
                    "slot {} not found: {} slot(s) with a token present (slot is an index \
                     into them)",
                    options.slot_index,
                    slots.len()
                ))
                .into()
            });
    }
    let mut seen = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        let info = library
            .get_token_info(*slot)
            .map_err(|e| pkcs11("cannot read the token info", e))?;
        let (label, serial) = (info.label().trim(), info.serial_number().trim());
        let label_ok = options.token_label.as_deref().is_none_or(|l| l == label);
        let serial_ok = options.token_serial.as_deref().is_none_or(|s| s == serial);
        if label_ok && serial_ok {
            return Ok((*slot, index));
        }
        seen.push(format!("'{label}' (serial {serial})"));
    }
    Err(unavailable(format!(
        "no token with {}{} is present; tokens present: {}",
        options
            .token_label
            .as_deref()
            .map_or(String::new(), |l| format!("label '{l}'")),
        options
            .token_serial
            .as_deref()
            .map_or(String::new(), |s| format!(" serial '{s}'")),
        seen.join(", ")
    ))
    .into())
}

/// Return codes after which the session (or login, or token) is gone and a fresh session
/// may work. Key and object handles are in the list because a re-initialised token
/// invalidates them while the session handle itself survives.
fn is_session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
    )
}

/// A PKCS#11 failure while doing `what`; session-lost codes are `ProviderUnavailable` and
/// marked for a retry on a fresh session.
pub(super) fn pkcs11(what: &str, err: CkError) -> Failure {
    match err {
        CkError::Pkcs11(rv, function) => {
            let lost = is_session_lost(rv);
            let detail = format!("{what}: {} ({function:?})", ckr_name(rv));
            Failure {
                error: if lost {
                    unavailable(detail)
                } else {
                    failed(detail)
                },
                session_lost: lost,
            }
        }
        other => failed(format!("{what}: {other}")).into(),
    }
}

fn unwrap_failed(err: CkError) -> Failure {
    match err {
        CkError::Pkcs11(
            rv @ (RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange),
            _,
        ) => failed(format!(
            "HSM decryption failed: the token could not unwrap the key ({}): the envelope \
                 was made for another key or was tampered with",
            ckr_name(rv)
        ))
        .into(),
        other => pkcs11("HSM decryption failed", other),
    }
}

fn decrypt_failed(err: CryptoError) -> Failure {
    failed(format!("HSM decryption failed: {err}")).into()
}

/// `ArgumentsBad` -> `CKR_ARGUMENTS_BAD`: the names people search for.
pub(super) fn ckr_name(rv: RvError) -> String {
    if let RvError::UnknownErrorCode(code) = rv {
        return format!("CKR {code:#x}");
    }
    let mut name = String::from("CKR");
    for c in format!("{rv:?}").chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_code_names() {
        assert_eq!(ckr_name(RvError::ArgumentsBad), "CKR_ARGUMENTS_BAD");
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::UnknownErrorCode(0x8000_0001)),
            "CKR 0x80000001"
        );
    }
}
