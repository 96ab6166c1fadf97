//! The PKCS#11 thread: the one owner of the cryptoki context and of the session.
//!
//! A PKCS#11 session must not be used from two threads at once, and a smart card is one
//! device anyway, so [`Token`] runs a dedicated OS thread and async callers send it jobs over
//! a channel, each awaiting a oneshot reply. Jobs run one after another: concurrent lookups
//! queue, never interleave on the session. Nothing is loaded at start: the module is loaded
//! and the token opened on the first job, so `psi serve` starts (and answers `/healthz`)
//! whether or not the token is there.
//!
//! Recovery: when an operation reports that the session, the login or the token is gone, the
//! session is dropped, the library re-initialised, and the job retried once on a fresh
//! session. When opening fails, later jobs fail fast with `ProviderUnavailable` until the
//! next attempt is due (1 s, doubling to 30 s). A PIN the token rejected is never tried
//! again: tokens lock after a few wrong PINs, so only a changed PIN gets a new attempt.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use openssl::sha::sha256;
use zeroize::Zeroizing;

use super::session::{ckr_name, pkcs11, select_slot, Failure, OpResult, OpenToken};
use super::{failed, unavailable, Mechanism, PinInfo};
use crate::crypto::oaep::{OaepHash, PublicKey};
use crate::error::{Error, Result};

/// First and longest wait between attempts to open the token after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Which token, which key, which PIN: the provider's configuration, resolved.
#[derive(Clone)]
pub struct TokenOptions {
    pub module: PathBuf,
    /// Index into the slots that have a token (the original's `slot`).
    pub slot_index: usize,
    /// When set, select the token by label or serial instead of by index: stable when
    /// readers are added.
    pub token_label: Option<String>,
    pub token_serial: Option<String>,
    pub key_id: Vec<u8>,
    pub key_label: String,
    /// Resolves the PIN (credentials directory > config > environment) at each login, so a
    /// corrected PIN is picked up without a restart.
    pub pin: Arc<dyn Fn() -> Result<PinInfo> + Send + Sync>,
    /// SHA-256 in production (the envelope format); SHA-1 lets tests drive native OAEP.
    pub oaep_hash: OaepHash,
}

/// What an open, logged-in token looks like, for `preflight`, `status` and `test-pin`.
#[derive(Debug, Clone)]
pub struct TokenStatus {
    pub slot_id: u64,
    /// Position among the slots with a token (what `slot:` in the config means).
    pub slot_index: usize,
    pub slot_description: String,
    pub token_label: String,
    pub token_serial: String,
    pub token_model: String,
    /// The private key, when found.
    pub key: Option<KeyInfo>,
}

/// A key found on the token.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// `"id"` or `"label"`: which attribute matched (id is searched first).
    pub found_by: &'static str,
    pub id_hex: String,
    pub label: String,
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// Handle to the PKCS#11 thread. Dropping it stops the thread, which closes the session and
/// finalises the library.
pub struct Token {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    mechanism: Arc<AtomicU8>,
}

impl Token {
    pub fn start(options: TokenOptions) -> Result<Token> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let mechanism = Arc::new(AtomicU8::new(0));
        let mut worker = Worker::new(options, mechanism.clone());
        let thread = std::thread::Builder::new()
            .name("psi-pkcs11".into())
            .spawn(move || {
                for job in queue {
                    job(&mut worker);
                }
                worker.close();
            })
            .map_err(|e| Error::Io {
                context: "cannot start the PKCS#11 thread".into(),
                source: e,
            })?;
        Ok(Token {
            jobs: Some(jobs),
            thread: Some(thread),
            mechanism,
        })
    }

    /// Runs `job` on the PKCS#11 thread, after the jobs queued before it.
    pub async fn call<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Worker) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |worker| {
            // A caller that gave up (deadline) no longer needs the token's time.
            if !reply.is_closed() {
                let _ = reply.send(job(worker));
            }
        });
        let stopped = || unavailable("the PKCS#11 thread has stopped".into());
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// How the current session unwraps keys, once it has unwrapped one.
    pub fn mechanism(&self) -> Option<Mechanism> {
        Mechanism::from_u8(self.mechanism.load(Ordering::Relaxed))
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            // Finalising the library must finish before anyone loads it again (tests do).
            let _ = thread.join();
        }
    }
}

/// State owned by the PKCS#11 thread.
pub struct Worker {
    options: TokenOptions,
    /// The loaded module; kept across re-initialisations (unloading is not needed and not
    /// every module survives being unloaded).
    library: Option<Pkcs11>,
    initialized: bool,
    open: Option<OpenToken>,
    retry: Retry,
    /// SHA-256 of the last PIN the token rejected.
    rejected_pin: Option<[u8; 32]>,
    mechanism: Arc<AtomicU8>,
}

#[derive(Default)]
struct Retry {
    failures: u32,
    not_before: Option<Instant>,
    last_error: String,
}

impl Worker {
    fn new(options: TokenOptions, mechanism: Arc<AtomicU8>) -> Worker {
        Worker {
            options,
            library: None,
            initialized: false,
            open: None,
            retry: Retry::default(),
            rejected_pin: None,
            mechanism,
        }
    }

    /// Opens (or reuses) the session and reports the token and the key.
    pub fn status(&mut self) -> Result<TokenStatus> {
        self.run(|token, options| {
            let key = match token.private_key(options) {
                Ok(_) => token.status.key.clone(),
                Err(Failure {
                    session_lost: false,
                    ..
                }) => None,
                Err(lost) => return Err(lost),
            };
            Ok(TokenStatus {
                key,
                ..token.status.clone()
            })
        })
    }

    /// The public key (DER SubjectPublicKeyInfo) from the token's public key object.
    pub fn public_key(&mut self) -> Result<Vec<u8>> {
        self.run(|token, options| {
            let handle = token.find(ObjectClass::PUBLIC_KEY, options)?.0;
            let attrs = token
                .session
                .get_attributes(
                    handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(|e| pkcs11("cannot read the public key", e))?;
            let (mut modulus, mut exponent) = (None, None);
            for attr in attrs {
                match attr {
                    Attribute::Modulus(m) => modulus = Some(m),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
                return Err(
                    failed("the public key object has no RSA modulus/exponent".into()).into(),
                );
            };
            PublicKey::from_components(&modulus, &exponent)
                .and_then(|key| key.to_der())
                .map_err(|e| failed(format!("public key from the token: {e}")).into())
        })
    }

    /// Unwraps an envelope's AES key with the private key: native OAEP when the token takes
    /// the parameters, else raw RSA on the token and OAEP decoding in software.
    pub fn unwrap_key(&mut self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let result = self.run(|token, options| token.unwrap_key(wrapped, options));
        if let Some(token) = &self.open {
            self.mechanism
                .store(token.path.map_or(0, Mechanism::to_u8), Ordering::Relaxed);
        }
        result
    }

    /// Runs `op` on an open session; if the session turns out to be gone, once more on a
    /// fresh one.
    fn run<T>(&mut self, op: impl Fn(&mut OpenToken, &TokenOptions) -> OpResult<T>) -> Result<T> {
        for attempt in 0..2 {
            self.ensure_open(attempt > 0)?;
            let token = self.open.as_mut().expect("ensure_open leaves a session");
            match op(token, &self.options) {
                Ok(value) => return Ok(value),
                Err(failure) if failure.session_lost => {
                    tracing::warn!(
                        provider = super::NAME,
                        error = %failure.error,
                        "PKCS#11 session lost; reopening"
                    );
                    self.drop_session();
                    if attempt > 0 {
                        self.note_failure(&failure.error);
                        return Err(failure.error);
                    }
                }
                Err(failure) => return Err(failure.error),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Makes sure a logged-in session exists. `retrying` skips the backoff for the one
    /// immediate retry after a lost session.
    fn ensure_open(&mut self, retrying: bool) -> Result<()> {
        if self.open.is_some() {
            return Ok(());
        }
        if let Some(not_before) = self.retry.not_before.filter(|_| !retrying) {
            let now = Instant::now();
            if now < not_before {
                return Err(unavailable(format!(
                    "{} (next attempt in {}s)",
                    self.retry.last_error,
                    (not_before - now).as_secs() + 1
                )));
            }
        }
        match self.open_token() {
            Ok(token) => {
                tracing::info!(
                    event = "provider.open",
                    provider = super::NAME,
                    outcome = "success",
                    slot_id = token.status.slot_id,
                    token = %token.status.token_label,
                    "token opened and logged in"
                );
                self.open = Some(token);
                self.retry = Retry::default();
                Ok(())
            }
            Err(failure) => {
                // Some modules (SoftHSM) only rescan for tokens at C_Initialize: start the
                // next attempt from a fresh library state.
                self.drop_session();
                self.note_failure(&failure.error);
                Err(failure.error)
            }
        }
    }

    /// Starts the backoff after a failure that a later attempt may not repeat (token absent,
    /// device errors). Configuration errors (no PIN, wrong PIN, no module) are answered
    /// directly every time: they cost the token nothing.
    fn note_failure(&mut self, error: &Error) {
        let Error::ProviderUnavailable { detail, .. } = error.root() else {
            return;
        };
        let wait = FIRST_BACKOFF
            .saturating_mul(1 << self.retry.failures.min(5))
            .min(MAX_BACKOFF);
        self.retry.failures += 1;
        self.retry.not_before = Some(Instant::now() + wait);
        self.retry.last_error = detail.clone();
        tracing::warn!(
            event = "provider.open",
            provider = super::NAME,
            outcome = "error",
            error = %error,
            retry_in_secs = wait.as_secs(),
        );
    }

    fn library(&mut self) -> OpResult<Pkcs11> {
        if self.library.is_none() {
            let module = &self.options.module;
            if !module.exists() {
                return Err(failed(format!(
                    "PKCS#11 module not found: {}; install OpenSC (opensc-pkcs11) or set \
                     providers.nitrokeyhsm.pkcs11_module",
                    module.display()
                ))
                .into());
            }
            let library = Pkcs11::new(module).map_err(|e| {
                failed(format!(
                    "cannot load the PKCS#11 module {}: {e}",
                    module.display()
                ))
            })?;
            self.library = Some(library);
        }
        let library = self.library.clone().expect("loaded above");
        if !self.initialized {
            match library.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                // Already initialised in this process: usable as it is.
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(e) => return Err(pkcs11("C_Initialize", e)),
            }
            self.initialized = true;
        }
        Ok(library)
    }

    fn open_token(&mut self) -> OpResult<OpenToken> {
        let library = self.library()?;
        let (slot, slot_index) = select_slot(&library, &self.options)?;
        let info = library
            .get_token_info(slot)
            .map_err(|e| pkcs11("cannot read the token info", e))?;
        let slot_description = library
            .get_slot_info(slot)
            .map(|s| s.slot_description().trim().to_owned())
            .unwrap_or_default();
        let pin = (self.options.pin)()?;
        let digest = sha256(pin.pin.expose().as_bytes());
        if self.rejected_pin == Some(digest) {
            return Err(failed(format!(
                "HSM login: this PIN (from {}) was already rejected by the token; psi does not \
                 try it again, because tokens lock after a few wrong PINs. Check the PIN and \
                 correct it",
                pin.source_description()
            ))
            .into());
        }
        let session = library
            .open_ro_session(slot)
            .map_err(|e| pkcs11("cannot open a session", e))?;
        let auth = AuthPin::from(pin.pin.expose().to_owned());
        match session.login(UserType::User, Some(&auth)) {
            // Another session of this process is logged in already: so is this one.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(
                rv @ (RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange),
                _,
            )) => {
                self.rejected_pin = Some(digest);
                return Err(failed(format!(
                    "HSM login failed: the token rejected the PIN from {} ({}). Check your PIN; \
                     psi will not retry it, because tokens lock after a few wrong PINs",
                    pin.source_description(),
                    ckr_name(rv)
                ))
                .into());
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(failed(
                    "HSM login failed: the user PIN is locked (CKR_PIN_LOCKED); unblock it with \
                     the SO PIN"
                        .into(),
                )
                .into())
            }
            Err(e) => return Err(pkcs11("HSM login failed", e)),
        }
        Ok(OpenToken {
            session,
            status: TokenStatus {
                slot_id: slot.id(),
                slot_index,
                slot_description,
                token_label: info.label().trim().to_owned(),
                token_serial: info.serial_number().trim().to_owned(),
                token_model: info.model().trim().to_owned(),
                key: None,
            },
            private_key: None,
            path: None,
        })
    }

    fn drop_session(&mut self) {
        self.open = None;
        self.mechanism.store(0, Ordering::Relaxed);
        // Re-initialising is what brings a module back after the token or its reader
        // (pcscd) went away; the loaded library stays.
        self.finalize();
    }

    fn finalize(&mut self) {
        if let (true, Some(library)) = (self.initialized, self.library.clone()) {
            if let Err(e) = library.finalize() {
                tracing::debug!(provider = super::NAME, error = %e, "C_Finalize failed");
            }
        }
        self.initialized = false;
    }

    /// Closes the session and finalises the library (the thread is ending).
    fn close(&mut self) {
        self.open = None;
        self.finalize();
    }
}
