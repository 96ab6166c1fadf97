//! Transport: the one `reqwest` client (one connection pool for every call, Infisical and
//! cloud metadata servers alike), retries of transient failures, and what Infisical's error
//! replies mean.
//!
//! Retried: connection failures, timeouts, 429, 500 (except the JWT errors that mean "log in
//! again"), 502, 503, 504, with exponential backoff (1 s, x2, at most 30 s, ±20 % jitter so a
//! fleet does not retry in step) or the server's `Retry-After` (at most 120 s). Never retried:
//! 400, 401, 403, 404, 422: asking again cannot change those answers.
//!
//! Every retry is a warning (route, reason, wait), so a long `Retry-After` is never a silent
//! pause at the default log level: on a terminal the warning is one plain line, in a journal
//! or a pipe a JSON event. The route is the method and the path, never the query (it names
//! the project, environment and folder) and never a header (the token).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::Clock;

const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
const RETRY_AFTER_CAP: Duration = Duration::from_secs(120);
/// Server messages are quoted in errors up to this many characters.
const MESSAGE_LIMIT: usize = 200;
/// Largest reply body psi reads. A folder listing of thousands of secrets is a few MiB; a
/// server (or something posing as one) sending more is refused, not buffered.
pub const MAX_REPLY: usize = 16 << 20;

pub(crate) struct Http {
    pub client: reqwest::Client,
    retries: u32,
    clock: Arc<dyn Clock>,
}

/// A final answer: success, or a failure that retrying would not change.
pub(crate) struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    retry_after: Option<String>,
    /// Zeroized: list and get bodies carry secret values, login bodies tokens.
    pub body: Zeroizing<Vec<u8>>,
}

/// What a reply means to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 2xx, or 304 to a conditional request.
    Success,
    /// Worth retrying later: 429, 5xx other than the JWT errors.
    Transient,
    /// The token is expired, revoked or unusable: log in again (once).
    Expired,
    /// The server does not have this route (fastify's 404): an older API generation.
    RouteMissing,
    /// The secret (or folder, project) does not exist.
    NotFound,
    /// Authenticated, but the identity may not do this.
    Denied,
    /// Anything else: a request the server will not accept as it is.
    Rejected,
}

/// Infisical's error body, `{"statusCode", "message", "error"}`, reduced to text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    /// The thrown error's name (`UnauthorizedError`, `PermissionDenied`, ...); not an enum.
    pub error: String,
    /// The message, or the validation issues' messages joined; truncated.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.error.is_empty() {
            write!(f, " {}", self.error)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl Reply {
    pub fn class(&self) -> Class {
        let err = self.api_error();
        classify(self.status, &err.error, &err.message)
    }

    /// The error body; a body that is not Infisical's JSON becomes its text, truncated.
    pub fn api_error(&self) -> ApiError {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            error: String,
            #[serde(default)]
            message: serde_json::Value,
        }
        let (error, message) = match serde_json::from_slice::<Body>(&self.body) {
            Ok(body) => (body.error, message_text(&body.message)),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&self.body).trim().to_owned(),
            ),
        };
        ApiError {
            status: self.status,
            error: truncate(&error),
            message: truncate(&message),
        }
    }

    /// Parses a success body as `T`; the error names the type, never the content.
    /// A String error: callers fold it into a `Provider` error's detail, which is text.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body)
            .map_err(|err| format!("unexpected response body (HTTP {}): {err}", self.status))
    }
}

/// `message` is a string, or (validation failures) an array of zod issues with `message`.
fn message_text(message: &serde_json::Value) -> String {
    match message {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(issues) => issues
            .iter()
            .map(|issue| match issue.get("message") {
                Some(serde_json::Value::String(text)) => text.clone(),
                _ => issue.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The meaning of a status, across API generations: the 2024 server answers 403 for expired
/// and revoked tokens and 401 for missing permissions, the newest 401 and 403 the other way
/// round, so `error` decides; the 2024 server also answers 500 for a JWT past its `exp`.
pub(crate) fn classify(status: u16, error: &str, message: &str) -> Class {
    let jwt_error = matches!(
        message,
        "jwt expired" | "jwt malformed" | "invalid signature"
    );
    match status {
        200..=299 | 304 => Class::Success,
        401 if error == "PermissionDenied" => Class::Denied,
        401 => Class::Expired,
        403 if error == "PermissionDenied" => Class::Denied,
        403 if error == "ValidationFailure" => Class::Rejected,
        403 => Class::Expired,
        404 if message.starts_with("Route ") => Class::RouteMissing,
        404 => Class::NotFound,
        // The 2024 server's not-found is a 400 ("Secret not found", "Folder not found").
        400 if message.to_ascii_lowercase().contains("not found") => Class::NotFound,
        500 if jwt_error => Class::Expired,
        429 | 500 | 502 | 503 | 504 => Class::Transient,
        _ => Class::Rejected,
    }
}

/// The wait before retry number `attempt + 1` (0-based): 1 s doubling to 30 s, scaled by a
/// jitter factor from `unit` in [0, 1): 0.8 to 1.2.
pub(crate) fn backoff(attempt: u32, unit: f64) -> Duration {
    let base = BACKOFF_BASE.as_secs_f64() * 2f64.powi(attempt.min(16) as i32);
    let jittered = base.min(BACKOFF_CAP.as_secs_f64()) * (0.8 + 0.4 * unit);
    Duration::from_secs_f64(jittered.min(BACKOFF_CAP.as_secs_f64()))
}

/// `Retry-After` as delta-seconds or an HTTP date, capped; `None` when unreadable.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// A wait as people read it: whole seconds as such ("51 s"), a backoff's to a tenth ("1.9 s").
fn seconds(wait: Duration) -> String {
    if wait.subsec_nanos() == 0 {
        format!("{} s", wait.as_secs())
    } else {
        format!("{:.1} s", wait.as_secs_f64())
    }
}

/// A uniform number in [0, 1) from the OpenSSL RNG (jitter needs no more than that).
fn jitter_unit() -> f64 {
    let mut bytes = [0u8; 4];
    match openssl::rand::rand_bytes(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

/// A failed attempt: worth another try, or not. `send` hands the last one to its caller,
/// which reports a transient one as "unavailable" (503) and a fatal one as a failure (502).
pub enum Attempt {
    Transient(String),
    Fatal(String),
}

impl Http {
    pub fn new(client: reqwest::Client, retries: u32, clock: Arc<dyn Clock>) -> Http {
        Http {
            client,
            retries,
            clock,
        }
    }

    /// Sends the request `build` makes (once per attempt), retrying transient failures.
    /// `target` is what the log calls the request after its method: the URL's path (or, for
    /// a metadata server, the URL), without the query.
    /// `Err` says why the last attempt failed when all were transient, or why the request
    /// cannot succeed (it could not be built, or the server's certificate is not trusted);
    /// every other answer is a `Reply` for the caller to classify.
    pub async fn send(
        &self,
        target: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, Attempt> {
        let mut attempt = 0;
        loop {
            let (client, request) = build().build_split();
            let request = request.map_err(describe)?;
            let route = format!("{} {target}", request.method());
            // `cause` finishes the sentence "<route> ..." for people; `why` is the detail.
            let (cause, why, server_wait, limited) = match self.attempt(&client, request).await {
                Ok(reply) if reply.class() != Class::Transient => return Ok(reply),
                Ok(reply) => {
                    let wait = reply
                        .retry_after
                        .as_deref()
                        .and_then(|v| retry_after(v, self.clock.now()));
                    let err = reply.api_error();
                    let cause = match (err.status, err.error.as_str()) {
                        (429, _) => "was rate-limited (HTTP 429)".to_owned(),
                        (status, "") => format!("failed (HTTP {status})"),
                        (status, error) => format!("failed (HTTP {status} {error})"),
                    };
                    (cause, err.to_string(), wait, err.status == 429)
                }
                Err(fatal @ Attempt::Fatal(_)) => return Err(fatal),
                Err(Attempt::Transient(why)) => (format!("failed ({why})"), why, None, false),
            };
            if attempt >= self.retries {
                return Err(Attempt::Transient(match attempt {
                    0 => why,
                    n => format!("{why} (gave up after {} attempts)", n + 1),
                }));
            }
            let (wait, source) = match server_wait {
                Some(wait) => (wait, "Retry-After"),
                None => (backoff(attempt, jitter_unit()), "backoff"),
            };
            tracing::warn!(
                route = %route,
                reason = %why,
                wait_ms = wait.as_millis() as u64,
                attempt = attempt + 1,
                "{route} {cause}; waiting {} ({source}) before retry {} of {}",
                seconds(wait),
                attempt + 1,
                self.retries
            );
            crate::metrics::METRICS
                .provider(super::NAME)
                .retry(wait, limited);
            self.clock.sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        request: reqwest::Request,
    ) -> Result<Reply, Attempt> {
        let mut response = client.execute(request).await.map_err(describe)?;
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header(reqwest::header::ETAG);
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let status = response.status().as_u16();
        // Read into one zeroizing buffer sized up front, so growth leaves no stray copies.
        let too_large = || {
            Attempt::Fatal(format!(
                "reply larger than {}, psi's limit",
                crate::fsutil::human(MAX_REPLY)
            ))
        };
        let declared = response.content_length().unwrap_or(0);
        if declared > MAX_REPLY as u64 {
            return Err(too_large());
        }
        let mut body = Zeroizing::new(Vec::with_capacity(declared as usize));
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            crate::fsutil::extend_bounded(&mut body, &chunk, MAX_REPLY).map_err(|_| too_large())?;
        }
        Ok(Reply {
            status,
            etag,
            retry_after,
            body,
        })
    }
}

impl Attempt {
    /// The error for a request that did not get an answer, `what` saying which one.
    pub fn into_error(self, what: impl std::fmt::Display) -> crate::error::Error {
        match self {
            Attempt::Transient(why) => crate::error::Error::ProviderUnavailable {
                provider: super::NAME,
                detail: format!("{what}: {why}"),
            },
            Attempt::Fatal(why) => crate::error::Error::Provider {
                provider: super::NAME,
                detail: format!("{what}: {why}"),
            },
        }
    }
}

/// reqwest's `Display` stops at "error sending request"; the cause (connection refused,
/// certificate verify failed) is further down the source chain. The URL is left out: its
/// query names the folder, and every caller says which request failed.
fn describe(err: reqwest::Error) -> Attempt {
    let err = err.without_url();
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if err.is_builder() {
        Attempt::Fatal(text)
    } else if text.contains("certificate verify failed") {
        // An untrusted certificate stays untrusted: waiting and retrying only delays the
        // answer the user needs.
        text.push_str(
            " (trust the server's CA with providers.infisical.ca_cert, or check api_url)",
        );
        Attempt::Fatal(text)
    } else {
        Attempt::Transient(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// A server that answers every request with `head` and then zeros, 64 KiB at a time,
    /// until the client hangs up.
    async fn endless_server(head: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("10000\r\n{}\r\n", "\0".repeat(0x10000));
            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        url
    }

    #[tokio::test]
    async fn replies_over_the_cap_are_refused_not_buffered() {
        for head in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 68719476736\r\n\r\n",
        ] {
            let url = endless_server(head).await;
            let http = Http::new(
                reqwest::Client::new(),
                0,
                Arc::new(super::super::SystemClock),
            );
            let client = reqwest::Client::new();
            let err = match http.send("test", || client.get(&url)).await {
                Err(Attempt::Fatal(why)) => why,
                Err(Attempt::Transient(why)) => panic!("transient: {why}"),
                Ok(reply) => panic!("{} bytes accepted", reply.body.len()),
            };
            assert!(err.contains("larger than 16 MiB"), "{err}");
        }
    }

    #[test]
    fn classes_across_generations() {
        use Class::*;
        // 2024: expired/revoked token 403, permission 401, validation 403, not found 400.
        assert_eq!(classify(403, "UnauthorizedError", "Token missing"), Expired);
        assert_eq!(classify(403, "Unauthorized access", "x"), Expired);
        assert_eq!(classify(401, "PermissionDenied", "not allowed"), Denied);
        assert_eq!(classify(403, "ValidationFailure", "bad"), Rejected);
        assert_eq!(classify(400, "BadRequest", "Secret not found"), NotFound);
        assert_eq!(
            classify(400, "BadRequest", "Secret already exist"),
            Rejected
        );
        assert_eq!(
            classify(500, "Internal Server Error", "jwt expired"),
            Expired
        );
        assert_eq!(
            classify(500, "Internal Server Error", "invalid signature"),
            Expired
        );
        assert_eq!(
            classify(500, "Internal Server Error", "jwt malformed"),
            Expired
        );
        // Newest: token 401, permission 403, validation 422, not found 404.
        assert_eq!(classify(401, "UnauthorizedError", "expired"), Expired);
        assert_eq!(classify(403, "PermissionDenied", "no"), Denied);
        assert_eq!(classify(422, "ValidationFailure", "bad"), Rejected);
        assert_eq!(
            classify(404, "NotFound", "Secret with name 'X' not found"),
            NotFound
        );
        assert_eq!(
            classify(404, "Not Found", "Route GET:/api/v4/secrets?x=1 not found"),
            RouteMissing
        );
        for status in [429, 500, 502, 503, 504] {
            assert_eq!(classify(status, "", "busy"), Transient, "{status}");
        }
        assert_eq!(classify(200, "", ""), Success);
        assert_eq!(classify(304, "", ""), Success);
        assert_eq!(classify(501, "", ""), Rejected);
    }

    #[test]
    fn api_error_text() {
        let reply = |status, body: &str| Reply {
            status,
            etag: None,
            retry_after: None,
            body: Zeroizing::new(body.as_bytes().to_vec()),
        };
        let err = reply(
            403,
            r#"{"statusCode":403,"message":[{"code":"x","message":"Required","path":["a"]},{"message":"Too long"}],"error":"ValidationFailure"}"#,
        )
        .api_error();
        assert_eq!(
            err.to_string(),
            "HTTP 403 ValidationFailure: Required; Too long"
        );
        let err = reply(502, "<html>bad gateway</html>\n").api_error();
        assert_eq!(err.to_string(), "HTTP 502: <html>bad gateway</html>");
        let long = format!(r#"{{"message":"{}","error":"E"}}"#, "é".repeat(300));
        let err = reply(400, &long).api_error();
        assert_eq!(err.message.chars().count(), MESSAGE_LIMIT + 1);
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        for attempt in 0..10 {
            let nominal = (2f64.powi(attempt as i32)).min(30.0);
            let low = backoff(attempt, 0.0).as_secs_f64();
            let high = backoff(attempt, 0.999_999).as_secs_f64();
            assert!((low - nominal * 0.8).abs() < 1e-6, "{attempt}: {low}");
            assert!(
                high <= 30.0 + 1e-9 && high >= nominal.min(30.0) * 0.99,
                "{attempt}: {high}"
            );
            assert!((backoff(attempt, 0.5).as_secs_f64() - nominal).abs() < 1e-6);
        }
        assert_eq!(backoff(100, 1.0), BACKOFF_CAP);
        let unit = jitter_unit();
        assert!((0.0..1.0).contains(&unit));
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("59", now), Some(Duration::from_secs(59)));
        assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("100000", now), Some(RETRY_AFTER_CAP));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(42)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn waits_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(51)), "51 s");
        assert_eq!(seconds(Duration::ZERO), "0 s");
        assert_eq!(seconds(Duration::from_millis(1_940)), "1.9 s");
        assert_eq!(seconds(Duration::from_millis(960)), "1.0 s");
    }
}
