//! The fast path: plain requests (the ones Podman's driver makes at every container start,
//! and every other GET) read, answered and written by psi itself, with hyper kept for the
//! rest: requests with a body (`store`), unusual framing, anything incomplete in the first
//! read.
//!
//! A driver command connects, writes one `GET /lookup/{id}` and waits. When that request is
//! whole in the first read and is plain (HTTP/1.1, GET or HEAD, no body, nothing after it),
//! it is routed and its token checked here ([`reply`]); `/healthz`, a refusal, and a cache
//! hit for a mapping file read before
//! ([`Resolver::lookup_cached`](crate::resolver::Resolver::lookup_cached)) are answered at
//! once with one `writev`, without a task, the blocking pool or hyper. Any other route is
//! answered later by the same code hyper's requests go through (`server::answer`).
//!
//! Answers are the bytes hyper writes for the same response (status line, `connection:
//! close` when the client asked for it, the response's headers, `content-length`, `date`),
//! which a test checks by sending the same requests both ways.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::header::HeaderMap;
use hyper::{Method, Response, StatusCode};
use zeroize::Zeroizing;

use super::routes::{self, Route};
use super::App;
use crate::secret::SecretValue;

/// Bytes the fast path reads at once. Driver requests are under 300 bytes; a request that
/// fills the buffer may go on and is left to hyper.
pub const READ_BUFFER: usize = 2048;

/// Answers larger than this go to hyper, which writes them as the socket drains: the fast
/// path writes once and keeps nothing for later.
const MAX_FAST_BODY: usize = 64 * 1024;

/// A request the fast path can answer by itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain<'a> {
    pub method: Method,
    /// The target's path, without its query.
    pub path: &'a str,
    pub authorization: Option<&'a [u8]>,
    /// The client said `Connection: close`: the answer says so too, and the connection ends.
    pub close: bool,
}

/// `bytes` as one plain request, or `None` when it is not whole, not plain, or followed by
/// more bytes (a pipelined request): hyper takes those.
pub fn parse(bytes: &[u8]) -> Option<Plain<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len == bytes.len() => {}
        _ => return None,
    }
    if request.version != Some(1) {
        return None;
    }
    let method = match request.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    // Origin form with visible ASCII only, so the path is the one hyper's URI parser would
    // give `routes::route`; anything unusual takes hyper's way.
    let target = request.path?;
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return None;
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut authorization = None;
    let mut close = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("authorization") {
            // Two of them: hyper's first-one rule decides, not a second parser.
            if authorization.replace(header.value).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in header.value.split(|&b| b == b',') {
                let option = option.trim_ascii();
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !option.eq_ignore_ascii_case(b"keep-alive") {
                    return None;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // An empty body, as some clients declare on every request, is no body.
            if header.value != b"0" {
                return None;
            }
        } else if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|framing| name.eq_ignore_ascii_case(framing))
        {
            return None;
        }
    }
    Some(Plain {
        method,
        path,
        authorization,
        close,
    })
}

/// An answer as bytes on the wire: the head hyper would write for the same response, and the
/// body (none for `HEAD`, whose head still gives the length).
pub struct Answer {
    head: Vec<u8>,
    body: Body,
}

enum Body {
    Static(&'static [u8]),
    Secret(SecretValue),
    /// A response's body (a looked-up value in it zeroizes when dropped).
    Bytes(Bytes),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Static(bytes) => bytes,
            Body::Secret(value) => value.expose(),
            Body::Bytes(bytes) => bytes,
        }
    }
}

impl Answer {
    /// `status`, `headers` and `body` as hyper writes them for `request`: status line,
    /// `connection: close` when the client asked for it, the response's headers,
    /// `content-length`, `date`.
    fn new(request: &Ask, status: StatusCode, headers: &HeaderMap, body: Body) -> Answer {
        let mut head = Vec::with_capacity(192);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        head.extend_from_slice(b"\r\n");
        if request.close {
            head.extend_from_slice(b"connection: close\r\n");
        }
        for (name, value) in headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(decimal(body.bytes().len(), &mut [0u8; 20]));
        head.extend_from_slice(b"\r\ndate: ");
        head.extend_from_slice(&http_date());
        head.extend_from_slice(b"\r\n\r\n");
        let body = if request.head_only {
            Body::Static(b"")
        } else {
            body
        };
        Answer { head, body }
    }

    /// A `200` with `body`.
    fn ok(request: &Ask, body: Body) -> Answer {
        Answer::new(request, StatusCode::OK, &HeaderMap::new(), body)
    }

    /// `response` (whose body is whole in memory: psi's answers are) as an answer.
    pub fn of(request: &Ask, response: Response<Full<Bytes>>) -> Answer {
        let (parts, mut body) = response.into_parts();
        // A `Full` body gives its one frame at once, with no waker needed.
        let mut cx = Context::from_waker(Waker::noop());
        let bytes = match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        };
        Answer::new(request, parts.status, &parts.headers, Body::Bytes(bytes))
    }

    /// Writes the answer with one vectored `write`. What the socket did not take comes back,
    /// for the caller to write when it drains (it never does for a fresh connection, whose
    /// buffer holds far more than [`MAX_FAST_BODY`]; a client that sends request after request
    /// without reading the answers could get there).
    pub fn write(
        &self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
        let (head, body) = (&self.head[..], self.body.bytes());
        let written = loop {
            match write(&[IoSlice::new(head), IoSlice::new(body)]) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break 0,
                Err(err) => return Err(err),
            }
        };
        if written == head.len() + body.len() {
            return Ok(None);
        }
        let mut rest = Zeroizing::new(Vec::with_capacity(head.len() + body.len() - written));
        rest.extend_from_slice(head.get(written..).unwrap_or_default());
        rest.extend_from_slice(&body[written.saturating_sub(head.len())..]);
        Ok(Some(rest))
    }
}

/// What of a plain request its answer needs once the read buffer is gone.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    head_only: bool,
    /// The client said `Connection: close`: the answer says so too, and the connection ends.
    pub close: bool,
}

/// How a plain request is answered.
pub enum Reply {
    /// At once: `/healthz`, a cache hit for a mapping file read before, a refusal.
    Now(Answer),
    /// After `answer` (a provider, the state directory): the route, admitted.
    Later(Route),
}

/// The reply to `request`, admitted (route and token) once, with its audit line.
pub fn reply(app: &App, request: &Plain<'_>) -> (Ask, Reply) {
    let ask = Ask {
        head_only: request.method == Method::HEAD,
        close: request.close,
    };
    let route = match super::admit(app, &request.method, request.path, request.authorization) {
        Ok(route) => route,
        Err(refused) => {
            let refusal = routes::error_response(&refused);
            return (ask, Reply::Now(Answer::of(&ask, refusal)));
        }
    };
    let reply = match route {
        Route::Healthz => {
            tracing::debug!(event = "healthz", outcome = "success");
            Reply::Now(Answer::ok(&ask, Body::Static(routes::HEALTHY)))
        }
        Route::Lookup(id) => match app.resolver.lookup_cached(&id) {
            // A large value goes the long way, which writes it as the socket drains.
            Some((value, hit)) if value.expose().len() <= MAX_FAST_BODY => {
                hit.count();
                Reply::Now(Answer::ok(&ask, Body::Secret(value)))
            }
            _ => Reply::Later(Route::Lookup(id)),
        },
        other => Reply::Later(other),
    };
    (ask, reply)
}

/// `n` in decimal, in `buf`.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The `date` header's value (IMF-fixdate, 29 bytes), formatted once a second per thread,
/// as hyper caches its own.
fn http_date() -> [u8; 29] {
    thread_local! {
        static DATE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let (at, text) = cached.get();
        if at == second {
            return text;
        }
        let mut text = [0u8; 29];
        text.copy_from_slice(&httpdate::fmt_http_date(now).as_bytes()[..29]);
        cached.set((second, text));
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_are_recognised_and_everything_else_is_left_to_hyper() {
        let plain = parse(b"GET /lookup/a%20b?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(plain.method, Method::GET);
        assert_eq!(plain.path, "/lookup/a%20b");
        assert_eq!(plain.authorization, Some(&b"Bearer t"[..]));
        assert!(plain.close);
        assert!(!parse(b"HEAD /healthz HTTP/1.1\r\n\r\n").unwrap().close);
        assert!(parse(b"GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
        for other in [
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /healthz HTTP/1.0\r\n\r\n",
            b"POST /store/a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nConnection: close, x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
            b"GET http://x/healthz HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
            b"GET /a#b HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert_eq!(parse(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 64, 65_536, usize::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }
}
