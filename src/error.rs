//! The one error type. Callers branch on its kind, so each condition that maps to its own
//! HTTP status or exit code is a variant; [`Error::context`] and [`ResultExt::context`] add
//! the "while doing what" chain that `main` prints once ("lookup 3f2a…: systemd-creds:
//! decrypt failed: …"), as netavark's `ErrorWrap::wrap` does. A foreign error (I/O, JSON,
//! OpenSSL, HTTP) enters with `.context(what)` and keeps its type underneath.
//!
//! No variant carries a secret value: messages quote IDs, paths and provider replies only.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or its environment is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The configuration file is wrong (exit 2).
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A secret ID failed validation (HTTP 400).
    #[error("invalid secret ID: {0}")]
    InvalidId(String),
    /// A request body or stdin payload is unusable (HTTP 400).
    #[error("{0}")]
    InvalidBody(String),
    /// A request body over the limit (HTTP 413).
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The client did not send its request in time (HTTP 408).
    #[error("{0}")]
    Timeout(String),
    /// Missing or wrong bearer token (HTTP 401).
    #[error("invalid or missing token")]
    Unauthorized,
    /// No route for this request (HTTP 404).
    #[error("not found")]
    NoRoute,
    /// The route exists but not for this method (HTTP 405).
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// No mapping file for the ID (HTTP 404).
    #[error("no mapping for secret: {0}")]
    NoMapping(String),
    /// A mapping file that cannot be parsed (HTTP 500).
    #[error("corrupt mapping for {id}: {reason}")]
    CorruptMapping { id: String, reason: String },
    /// A mapping names a provider this psi does not run (HTTP 500).
    #[error("provider '{name}' is not running in this psi (running: {configured})")]
    UnknownProvider { name: String, configured: String },
    /// The provider answered that the secret does not exist (HTTP 404).
    #[error("{provider}: secret not found: {detail}")]
    SecretNotFound {
        provider: &'static str,
        detail: String,
    },
    /// The place a secret is looked up in does not exist: an Infisical folder or
    /// environment (HTTP 404). Not an empty folder: setup must not drop what it holds.
    #[error("{provider}: {detail}")]
    FolderNotFound {
        provider: &'static str,
        detail: String,
    },
    /// The provider is down, slow or rate-limiting; retrying later may work (HTTP 503).
    #[error("{provider}: unavailable: {detail}")]
    ProviderUnavailable {
        provider: &'static str,
        detail: String,
    },
    /// The provider failed for good (HTTP 502).
    #[error("{provider}: {detail}")]
    Provider {
        provider: &'static str,
        detail: String,
    },
    /// The secret cache (`cache.enc`, its key) is missing, malformed, tampered with or was
    /// written for another backend. The message is a whole sentence with what to do.
    #[error("{0}")]
    Cache(String),
    /// A file-system or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Podman's API or its command refused or failed; the message has Podman's status and
    /// reason (exit 1, HTTP 500).
    #[error("{0}")]
    Podman(String),
    /// psi serve could not be reached, or answered `psi healthcheck` or `psi run` with an
    /// error; the message has the route, the status and serve's detail (exit 1).
    #[error("{0}")]
    Serve(String),
    /// A program psi ran (systemctl, a build) exited with a failure; the message has its
    /// command line and what it printed (exit 1).
    #[error("{0}")]
    Subprocess(String),
    /// psi will not do what was asked with what it found: a value the chosen format cannot
    /// carry, an argument that names no secret, a socket another psi answers on, a
    /// certificate that does not match its key. The message says what to do instead (exit 1,
    /// HTTP 500).
    #[error("{0}")]
    Refused(String),
    /// A command that checks or works through several things found failures it has
    /// already shown one by one; the message sums them up for the exit code (exit 1).
    #[error("{0}")]
    Incomplete(String),
    /// A JSON value psi encodes or a reply it decodes (under a [`Error::Context`]).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// OpenSSL failed: a certificate or key that does not parse, no randomness.
    #[error(transparent)]
    Openssl(#[from] openssl::error::ErrorStack),
    /// The AEAD layer failed (no randomness for a key, a tampered ciphertext).
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// An HTTP request psi builds is malformed.
    #[error(transparent)]
    Http(#[from] hyper::http::Error),
    /// A provider's HTTP client cannot be set up (its TLS back end, its settings).
    #[error(transparent)]
    HttpClient(#[from] reqwest::Error),
    /// A system call through nix failed (an errno, printed as nix does).
    #[error(transparent)]
    Errno(#[from] nix::errno::Errno),
    /// A worker task panicked or was cancelled: a bug in psi, not the input.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// `context` while handling `source`.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Wraps the error with what was being done; exit code and HTTP status stay the inner's.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// An I/O error about `path`.
    pub fn io(what: &str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }

    /// The innermost error, which decides statuses and codes.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }

    /// 0 is success; 2 means the user must fix the invocation or the configuration; every
    /// other failure is 1.
    pub fn exit_code(&self) -> u8 {
        match self.root() {
            Error::Usage(_) | Error::Config { .. } => 2,
            _ => 1,
        }
    }

    /// The HTTP status and the stable machine-readable code for the JSON error body.
    pub fn http_status(&self) -> (u16, &'static str) {
        match self.root() {
            Error::InvalidId(_) => (400, "invalid_secret_id"),
            Error::InvalidBody(_) | Error::Usage(_) => (400, "invalid_request"),
            Error::Unauthorized => (401, "unauthorized"),
            Error::NoRoute => (404, "not_found"),
            Error::NoMapping(_) => (404, "not_found"),
            Error::SecretNotFound { .. } => (404, "secret_not_found"),
            Error::FolderNotFound { .. } => (404, "folder_not_found"),
            Error::MethodNotAllowed { .. } => (405, "method_not_allowed"),
            Error::Timeout(_) => (408, "request_timeout"),
            Error::BodyTooLarge { .. } => (413, "payload_too_large"),
            Error::CorruptMapping { .. } => (500, "corrupt_mapping"),
            Error::UnknownProvider { .. } => (500, "unknown_provider"),
            Error::Provider { .. } => (502, "provider_error"),
            Error::ProviderUnavailable { .. } => (503, "provider_unavailable"),
            Error::Cache(_) => (500, "cache_error"),
            Error::Config { .. }
            | Error::Io { .. }
            | Error::Podman(_)
            | Error::Serve(_)
            | Error::Subprocess(_)
            | Error::Refused(_)
            | Error::Incomplete(_)
            | Error::Json(_)
            | Error::Openssl(_)
            | Error::Crypto(_)
            | Error::Http(_)
            | Error::HttpClient(_)
            | Error::Errno(_)
            | Error::Task(_) => (500, "internal_error"),
            Error::Context { .. } => unreachable!("root() never returns Context"),
        }
    }
}

/// A cause that [`ResultExt`] can wrap: psi's own error, or a foreign one psi meets. An
/// I/O error becomes [`Error::Io`] (callers match on its kind); the others keep their own
/// variant under a [`Error::Context`].
pub trait Cause {
    /// The error, saying it happened while doing `what`.
    fn within(self, what: String) -> Error;
}

impl Cause for Error {
    fn within(self, what: String) -> Error {
        self.context(what)
    }
}

impl Cause for std::io::Error {
    fn within(self, what: String) -> Error {
        Error::Io {
            context: what,
            source: self,
        }
    }
}

/// The foreign errors that convert with `From` and then take the context as any error does.
macro_rules! foreign_causes {
    ($($foreign:ty),* $(,)?) => {$(
        impl Cause for $foreign {
            fn within(self, what: String) -> Error {
                Error::from(self).context(what)
            }
        }
    )*};
}

foreign_causes!(
    serde_json::Error,
    openssl::error::ErrorStack,
    crate::crypto::CryptoError,
    hyper::http::Error,
    reqwest::Error,
    nix::errno::Errno,
    tokio::task::JoinError,
);

/// `.context("while doing what")` on any result whose error is a [`Cause`]: the chain then
/// prints "what: cause", and the kind (hence exit code and HTTP status) stays the cause's.
pub trait ResultExt<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// As [`ResultExt::context`], with the text built only on failure.
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Cause> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|err| err.within(what.into()))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| err.within(what()))
    }
}

/// Names for a message ("a, b"), or `(none)`: what error messages list as the choices.
pub fn list_or_none<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let names: Vec<S> = names.into_iter().collect();
    if names.is_empty() {
        return "(none)".into();
    }
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_inner_status_and_reads_as_a_chain() {
        let err = Error::ProviderUnavailable {
            provider: "systemd-creds",
            detail: "timed out".into(),
        }
        .context("lookup abc");
        assert_eq!(
            err.to_string(),
            "lookup abc: systemd-creds: unavailable: timed out"
        );
        assert_eq!(err.http_status(), (503, "provider_unavailable"));
        assert_eq!(err.exit_code(), 1);
        assert_eq!(Error::Usage("x".into()).context("y").exit_code(), 2);
    }

    #[test]
    fn result_context_reads_as_a_chain_and_keeps_the_kind() {
        let io: std::result::Result<(), _> =
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        let err = io.context("cannot read /x").unwrap_err();
        assert!(matches!(&err, Error::Io { context, .. } if context == "cannot read /x"));
        assert_eq!(err.to_string(), "cannot read /x: gone");

        let json = serde_json::from_str::<u8>("x").with_context(|| "decode the reply".into());
        let err = json.unwrap_err();
        assert!(matches!(err.root(), Error::Json(_)));
        assert!(err
            .to_string()
            .starts_with("decode the reply: expected value"));
        assert_eq!(err.http_status(), (500, "internal_error"));

        let own: Result<()> = Err(Error::NoMapping("abc".into()));
        let err = own.context("lookup abc").unwrap_err();
        assert_eq!(err.to_string(), "lookup abc: no mapping for secret: abc");
        assert_eq!(err.http_status(), (404, "not_found"));
    }
}
