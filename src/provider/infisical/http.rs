//! Transport: the one `reqwest` client (one connection pool for every call, Infisical and
//! cloud metadata servers alike), retries of transient failures, and what Infisical's error
//! replies mean.
//!
//! Retried: connection failures, timeouts, 429, 500 (except the JWT errors that mean "log in
//! again"), 502, 503, 504, with exponential backoff (1 s, x2, at most 30 s, ±20 % jitter so a
//! fleet does not retry in step) or the server's `Retry-After` (at most 120 s). Never retried:
//! 400, 401, 403, 404, 422: asking again cannot change those answers.
//!
//! Rate limits are shared by every request of one client (one `psi setup` run, all its
//! workloads and sources; or `psi serve`'s lookups). Infisical counts per client IP and per
//! route (method and URL pattern, 60 s windows; fixture 92: a limited route leaves the others
//! alone), so psi keys its [`Limits`] by server, method and route pattern. When a reply says
//! the budget is spent (`x-ratelimit-remaining: 0` with `x-ratelimit-reset`) or a 429 says
//! `Retry-After`, every later request to that route waits until then instead of each one
//! collecting its own 429. That wait is not a retry: the retry cap counts failed attempts.
//!
//! Every wait is a warning (route, reason, wait), so a long `Retry-After` is never a silent
//! pause at the default log level: on a terminal the warning is one plain line, in a journal
//! or a pipe a JSON event. The route is the method and the path, never the query (it names
//! the project, environment and folder) and never a header (the token). [`Http::pause`] is
//! the one place a request waits.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
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
    limits: Limits,
}

/// Per rate-limit bucket ([`bucket`]): the time before which the server said not to ask
/// again, and what said so (for the warning).
#[derive(Default)]
struct Limits(Mutex<HashMap<String, (SystemTime, &'static str)>>);

impl Limits {
    /// How long a request to `bucket` must wait at `now`, and why; `None` when it may go.
    fn wait(&self, bucket: &str, now: SystemTime) -> Option<(Duration, &'static str)> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (until, why) = *held.get(bucket)?;
        match until.duration_since(now) {
            Ok(wait) if !wait.is_zero() => Some((wait, why)),
            _ => {
                held.remove(bucket);
                None
            }
        }
    }

    /// Closes `bucket` until `now + hold`, never shortening an earlier, longer hold.
    fn hold(&self, bucket: String, now: SystemTime, (hold, why): (Duration, &'static str)) {
        let until = now + hold;
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = held.entry(bucket).or_insert((until, why));
        if entry.0 < until {
            *entry = (until, why);
        }
    }
}

/// Routes whose URL holds a parameter, as the server's limiter names them (a rate-limit
/// bucket is per pattern, not per URL). A literal route must come before a parameter that
/// would match it.
const ROUTES: &[&str] = &[
    "/api/v3/secrets/raw/:secretName",
    "/api/v4/secrets/batch",
    "/api/v4/secrets/:secretName",
    "/api/v1/cert-manager/certificates/certificate-requests/:requestId",
    "/api/v1/cert-manager/certificates/:certificateId/renew",
    "/api/v1/cert-manager/certificates/:certificateId/bundle",
    "/api/v1/pki/ca/:caId/issue-certificate",
];

/// The rate-limit bucket of a request: the server (scheme, host, port), the method and the
/// route pattern. The path is matched at its end, since the API URL may have a path of its
/// own; a path no pattern matches is its own bucket.
fn bucket(method: &str, url: &reqwest::Url) -> String {
    let path = url.path();
    let segments: Vec<&str> = path.split('/').collect();
    let route = ROUTES
        .iter()
        .find_map(|pattern| {
            let want: Vec<&str> = pattern[1..].split('/').collect();
            let at = segments.len().checked_sub(want.len())?;
            let matches = want
                .iter()
                .zip(&segments[at..])
                .all(|(w, s)| (w.starts_with(':') && !s.is_empty()) || w == s);
            matches.then(|| format!("{}{pattern}", segments[..at].join("/")))
        })
        .unwrap_or_else(|| path.to_owned());
    format!("{method} {}{route}", url.origin().ascii_serialization())
}

/// How long a reply closes its bucket, and why: a 429's `Retry-After`, or a spent budget
/// (`x-ratelimit-remaining: 0`) until `x-ratelimit-reset` (seconds), whichever is longer;
/// capped like `Retry-After`.
fn hold(
    status: u16,
    retry_after: Option<Duration>,
    remaining: Option<&str>,
    reset: Option<&str>,
) -> Option<(Duration, &'static str)> {
    let spent = (remaining.map(str::trim) == Some("0"))
        .then(|| reset?.trim().parse::<u64>().ok())
        .flatten()
        .map(|secs| {
            (
                Duration::from_secs(secs).min(RETRY_AFTER_CAP),
                "x-ratelimit-reset",
            )
        });
    let told = retry_after
        .filter(|_| status == 429)
        .map(|wait| (wait, "Retry-After"));
    match (told, spent) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// What a wait is for, as the warning (and metrics) tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Before retry number `n` (1-based) of a failed attempt.
    Retry(u32),
    /// Before a request to a route whose rate-limit budget is spent.
    RateLimit,
}

/// A final answer: success, or a failure that retrying would not change.
pub(crate) struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    retry_after: Option<String>,
    /// `x-ratelimit-remaining` and `x-ratelimit-reset`, as sent.
    limit: (Option<String>, Option<String>),
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
            limits: Limits::default(),
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
            let bucket = bucket(request.method().as_str(), request.url());
            if let Some((wait, why)) = self.limits.wait(&bucket, self.clock.now()) {
                let line = format!(
                    "{route}: Infisical's rate limit for this route is used up ({why}); waiting {} before sending",
                    seconds(wait)
                );
                crate::metrics::METRICS
                    .provider(super::NAME)
                    .rate_limit_wait(wait);
                self.pause(Pause::RateLimit, &route, why, wait, &line).await;
            }
            // `cause` finishes the sentence "<route> ..." for people; `why` is the detail.
            let (cause, why, server_wait, limited) = match self.attempt(&client, request).await {
                Ok(reply) => {
                    let now = self.clock.now();
                    let wait = reply
                        .retry_after
                        .as_deref()
                        .and_then(|v| retry_after(v, now));
                    let (remaining, reset) = &reply.limit;
                    if let Some(held) =
                        hold(reply.status, wait, remaining.as_deref(), reset.as_deref())
                    {
                        self.limits.hold(bucket, now, held);
                    }
                    if reply.class() != Class::Transient {
                        return Ok(reply);
                    }
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
            let line = format!(
                "{route} {cause}; waiting {} ({source}) before retry {} of {}",
                seconds(wait),
                attempt + 1,
                self.retries
            );
            crate::metrics::METRICS
                .provider(super::NAME)
                .retry(wait, limited);
            attempt += 1;
            self.pause(Pause::Retry(attempt), &route, &why, wait, &line)
                .await;
        }
    }

    /// Waits `wait` on the client's clock after saying so at warn (`line` for people; route,
    /// reason and wait as fields). Every wait of a request goes through here.
    async fn pause(&self, pause: Pause, route: &str, reason: &str, wait: Duration, line: &str) {
        match pause {
            Pause::Retry(attempt) => tracing::warn!(
                route = %route,
                reason = %reason,
                wait_ms = wait.as_millis() as u64,
                attempt,
                "{line}"
            ),
            Pause::RateLimit => tracing::warn!(
                route = %route,
                reason = %reason,
                wait_ms = wait.as_millis() as u64,
                "{line}"
            ),
        }
        self.clock.sleep(wait).await;
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
        let limit = (
            header(reqwest::header::HeaderName::from_static(
                "x-ratelimit-remaining",
            )),
            header(reqwest::header::HeaderName::from_static(
                "x-ratelimit-reset",
            )),
        );
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
            limit,
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
            limit: (None, None),
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
    fn buckets_are_server_method_and_route_pattern() {
        let b = |method, url: &str| bucket(method, &reqwest::Url::parse(url).unwrap());
        let base = "https://infisical.test";
        assert_eq!(
            b(
                "GET",
                &format!("{base}/api/v3/secrets/raw?workspaceId=p&secretPath=%2Fapp")
            ),
            "GET https://infisical.test/api/v3/secrets/raw"
        );
        // Fixture 92: one secret's route is its own bucket, shared by every name.
        assert_eq!(
            b("GET", &format!("{base}/api/v3/secrets/raw/APP_PORT?x=1")),
            b("GET", &format!("{base}/api/v3/secrets/raw/DB_HOST"))
        );
        assert_eq!(
            b("GET", &format!("{base}/api/v4/secrets/DB_HOST")),
            "GET https://infisical.test/api/v4/secrets/:secretName"
        );
        assert_eq!(
            b("POST", &format!("{base}/api/v4/secrets/batch")),
            "POST https://infisical.test/api/v4/secrets/batch"
        );
        assert_ne!(
            b("POST", &format!("{base}/api/v4/secrets/batch")),
            b("GET", &format!("{base}/api/v4/secrets/batch"))
        );
        // An API URL with a path of its own; another server is another bucket.
        assert_eq!(
            b("POST", "http://10.0.0.1:8080/infisical/api/v1/cert-manager/certificates/c1/renew"),
            "POST http://10.0.0.1:8080/infisical/api/v1/cert-manager/certificates/:certificateId/renew"
        );
        assert_ne!(
            b("GET", "https://a.test/api/v1/folders"),
            b("GET", "https://b.test/api/v1/folders")
        );
        assert_eq!(
            b("GET", "http://169.254.169.254/latest/meta-data/x"),
            "GET http://169.254.169.254/latest/meta-data/x"
        );
    }

    #[test]
    fn holds_from_retry_after_and_spent_budgets() {
        let secs = |n| Some((Duration::from_secs(n), "x-ratelimit-reset"));
        // Fixture 90: the last allowed request closes the route until the window resets.
        assert_eq!(hold(200, None, Some("0"), Some("59")), secs(59));
        assert_eq!(hold(200, None, Some("51"), Some("4")), None);
        assert_eq!(hold(200, None, None, None), None);
        assert_eq!(hold(200, None, Some("0"), Some("soon")), None);
        // Fixture 91: 429 with both; the longer wins. Retry-After of a 503 is no budget.
        let after = |n| Some(Duration::from_secs(n));
        assert_eq!(
            hold(429, after(59), Some("0"), Some("59")),
            Some((Duration::from_secs(59), "Retry-After"))
        );
        assert_eq!(hold(429, after(3), Some("0"), Some("50")), secs(50));
        assert_eq!(
            hold(429, after(7), None, None),
            Some((Duration::from_secs(7), "Retry-After"))
        );
        assert_eq!(hold(503, after(7), None, None), None);
        assert_eq!(
            hold(200, None, Some("0"), Some("100000")),
            Some((RETRY_AFTER_CAP, "x-ratelimit-reset"))
        );
    }

    #[test]
    fn limits_hold_a_bucket_until_then_and_never_shorten() {
        let limits = Limits::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(limits.wait("GET a", t0), None);
        limits.hold("GET a".into(), t0, (Duration::from_secs(30), "Retry-After"));
        limits.hold(
            "GET a".into(),
            t0,
            (Duration::from_secs(10), "x-ratelimit-reset"),
        );
        assert_eq!(
            limits.wait("GET a", at(5)),
            Some((Duration::from_secs(25), "Retry-After"))
        );
        assert_eq!(limits.wait("GET b", at(5)), None);
        assert_eq!(limits.wait("GET a", at(30)), None);
        assert_eq!(
            limits.wait("GET a", at(5)),
            None,
            "expired holds are dropped"
        );
    }

    #[test]
    fn waits_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(51)), "51 s");
        assert_eq!(seconds(Duration::ZERO), "0 s");
        assert_eq!(seconds(Duration::from_millis(1_940)), "1.9 s");
        assert_eq!(seconds(Duration::from_millis(960)), "1.0 s");
    }
}
