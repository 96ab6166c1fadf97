//! The one error type. Callers branch on its kind, so each condition that maps to its own
//! HTTP status or exit code is a variant; [`Error::context`] adds the "while doing what"
//! chain that `main` prints once ("lookup 3f2a…: systemd-creds: decrypt failed: …").
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
    /// Anything else that is not the caller's fault (exit 1, HTTP 500).
    #[error("{0}")]
    Failed(String),
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
            Error::Config { .. } | Error::Io { .. } | Error::Failed(_) => (500, "internal_error"),
            Error::Context { .. } => unreachable!("root() never returns Context"),
        }
    }
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
}
