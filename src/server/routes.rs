//! The HTTP surface as pure functions: request line to [`Route`], bearer-token check, and
//! error to response. No I/O, so every status code is testable without a socket.
//!
//! Routes are the original's (`/healthz`, `/lookup/{id}`, `/store/{id}`, `/delete/{id}`,
//! `/list`) and psi's own (`/healthz/cache`, `/metrics`), because existing Podman secrets carry those curl commands in their driver
//! options. Unlike the original, the path is percent-decoded, a query string is ignored, and
//! an empty or unsafe ID is a 400 rather than a file name.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use openssl::sha::sha256;
use serde_json::json;

use crate::error::Error;
use crate::pyjson;
use crate::secret::{SecretId, SecretString};

/// The body of a `200` from `/healthz`.
pub const HEALTHY: &[u8] = b"ok";

/// Largest request body accepted (a mapping or a raw value to seal).
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Healthz,
    /// `/healthz/cache`: the encrypted cache's state, 503 when it is configured but unusable.
    HealthzCache,
    Lookup(SecretId),
    Store(SecretId),
    Delete(SecretId),
    List,
    /// `POST /cache/reload`: load `cache.enc` now (`psi setup`, before it restarts a
    /// workload whose secrets changed).
    CacheReload,
    /// `/metrics`: Prometheus text exposition ([`crate::metrics`]); needs the token like
    /// `/list`.
    Metrics,
}

/// Maps a method and a path (without query; `Uri::path`) to a route.
pub fn route(method: &Method, path: &str) -> Result<Route, Error> {
    // One trailing slash is tolerated on the fixed routes, as clients of the original sent it.
    let fixed = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let (allow, found) = match fixed {
        "/healthz" => (
            "GET, HEAD",
            (method == Method::GET || method == Method::HEAD).then_some(Route::Healthz),
        ),
        "/healthz/cache" => (
            "GET, HEAD",
            (method == Method::GET || method == Method::HEAD).then_some(Route::HealthzCache),
        ),
        "/list" => ("GET", (method == Method::GET).then_some(Route::List)),
        "/cache/reload" => (
            "POST",
            (method == Method::POST).then_some(Route::CacheReload),
        ),
        "/metrics" => (
            "GET, HEAD",
            (method == Method::GET || method == Method::HEAD).then_some(Route::Metrics),
        ),
        _ => {
            let (allow, expected, prefix) = if path.starts_with("/lookup/") {
                ("GET", Method::GET, "/lookup/")
            } else if path.starts_with("/store/") {
                ("POST", Method::POST, "/store/")
            } else if path.starts_with("/delete/") {
                ("DELETE", Method::DELETE, "/delete/")
            } else {
                return Err(Error::NoRoute);
            };
            if *method != expected {
                (allow, None)
            } else {
                let id = secret_id(&path[prefix.len()..])?;
                let route = match prefix {
                    "/lookup/" => Route::Lookup(id),
                    "/store/" => Route::Store(id),
                    _ => Route::Delete(id),
                };
                (allow, Some(route))
            }
        }
    };
    found.ok_or_else(|| Error::MethodNotAllowed {
        method: method.to_string(),
        allow,
    })
}

fn secret_id(encoded: &str) -> Result<SecretId, Error> {
    let decoded = percent_decode(encoded)
        .ok_or_else(|| Error::InvalidId("malformed percent-encoding".into()))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| Error::InvalidId("not UTF-8 after percent-decoding".into()))?;
    SecretId::parse(&text).map_err(Error::InvalidId)
}

/// RFC 3986 percent-decoding; `None` for a `%` not followed by two hex digits.
pub fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The `/healthz/cache` answer: JSON for people and scripts, and a status a health check can
/// use alone (`curl -sf`): 200 when the cache is disabled or loaded, 503 when it is
/// configured but unusable (lookups then all go to the providers). Error texts name files by
/// their name only ([`without_paths`]): the journal has the full story.
pub fn cache_health(
    health: Option<&crate::cache::live::Health>,
    unavailable: Option<&str>,
) -> Response<Full<Bytes>> {
    let (status, body) = match (health, unavailable) {
        (_, Some(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"cache": "unavailable", "error": without_paths(error)}),
        ),
        (None, None) => (StatusCode::OK, json!({"cache": "disabled"})),
        (Some(h), None) if h.loaded => (
            StatusCode::OK,
            json!({"cache": "loaded", "entries": h.entries, "version": h.version, "error": h.error.as_deref().map(without_paths)}),
        ),
        (Some(h), None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"cache": if h.error.is_some() { "unavailable" } else { "loading" }, "entries": 0, "error": h.error.as_deref().map(without_paths)}),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(pyjson::dumps(
        &body,
        pyjson::Style::DEFAULT,
    ))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The `POST /cache/reload` answer: the `/healthz/cache` body, 200 when this load worked,
/// 503 with why when it did not (the snapshot in use is then an older one).
pub fn cache_reloaded(health: &crate::cache::live::Health) -> Response<Full<Bytes>> {
    match &health.error {
        None => cache_health(Some(health), None),
        Some(error) => cache_health(None, Some(error)),
    }
}

/// `text` with every absolute path replaced by its file name, for answers to clients: where
/// psi keeps its files is the host's business. A path runs to the next space, quote or
/// parenthesis; a trailing `:`, `,` or `.` is punctuation.
pub fn without_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('/') {
        let at_word_start = match rest[..start].chars().next_back() {
            None => true,
            Some(c) => c.is_whitespace() || "'\"(=".contains(c),
        };
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || "'\"()".contains(c))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        let path = word.trim_end_matches([':', ',', '.']);
        if at_word_start {
            out.push_str(
                path.rsplit('/')
                    .find(|part| !part.is_empty())
                    .unwrap_or("/"),
            );
            out.push_str(&word[path.len()..]);
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Checks `Authorization: Bearer <token>` when a token is configured; the scheme is
/// case-insensitive (RFC 9110), the token exact. `/healthz` is always open (health checks
/// carry no token); everything else, `/healthz/cache` included, needs it. Both tokens are
/// hashed first so the comparison is constant time and does not even reveal the length.
pub fn authorize(
    route: Result<&Route, &Error>,
    token: Option<&SecretString>,
    header: Option<&[u8]>,
) -> Result<(), Error> {
    let Some(token) = token else { return Ok(()) };
    if matches!(route, Ok(Route::Healthz)) {
        return Ok(());
    }
    let presented = header.unwrap_or_default();
    let (scheme, credentials) = presented.split_at(presented.len().min(b"Bearer ".len()));
    let equal = openssl::memcmp::eq(&sha256(credentials), &sha256(token.expose().as_bytes()));
    if equal && scheme.eq_ignore_ascii_case(b"Bearer ") {
        Ok(())
    } else {
        Err(Error::Unauthorized)
    }
}

/// A scrape's answer: the exposition with its content type.
pub fn metrics(text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::text::CONTENT_TYPE),
    );
    response
}

/// A 200 with a raw body and no content type, as the original answered (curl writes the
/// bytes straight to Podman).
pub fn ok(body: Bytes) -> Response<Full<Bytes>> {
    Response::new(Full::new(body))
}

/// The JSON error response for `err`: `{"error": code, "detail": text}` with the original's
/// separators. Error texts carry IDs and provider replies, never values.
pub fn error_response(err: &Error) -> Response<Full<Bytes>> {
    let (status, code) = err.http_status();
    let detail = match err.root() {
        // Keep the original's exact 401 body; clients may match it.
        Error::Unauthorized => "invalid or missing token".to_owned(),
        Error::NoRoute => "not found".to_owned(),
        _ => err.to_string(),
    };
    let body = pyjson::dumps(
        &json!({"error": code, "detail": detail}),
        pyjson::Style::DEFAULT,
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Error::MethodNotAllowed { allow, .. } = err.root() {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}
