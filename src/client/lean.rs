//! The driver client itself: `store|lookup|delete|list` as a minimal HTTP/1.1 client on
//! psi serve's Unix socket, in place of curl. Both `psi client` (the main binary dispatches
//! here before clap, logging or anything else) and the small `psi-client` binary run this
//! code.
//!
//! Podman runs the `lookup` command once per secret on every container start, so what this
//! costs is mostly process start-up: it builds no async runtime, initialises no TLS, reads no
//! configuration file and sets up no tracing: one `connect`, one `write`, reads until the
//! server closes, one `write` to stdout.
//!
//! It behaves like the curl commands it replaces: the same routes, `SECRET_ID` from the
//! environment, stdin as the store body, the exact response bytes on stdout for a 2xx.
//! Exit codes: `0` for a 2xx; `1` for any other status (psi's JSON `detail` goes to stderr,
//! which Podman shows for a refused store) or when psi serve cannot be reached; `2` for a
//! usage error (bad arguments, `SECRET_ID` unset, an unreadable or invalid token file).
//!
//! The socket token comes from a file (`--token-file`), not argv: curl's `-H` puts it in
//! `/proc/<pid>/cmdline`, readable by every local user while curl runs.
//!
//! Self-contained, because `psi-client` compiles this file without the rest of psi: std,
//! zeroize, and of psi only `crate::fsutil`'s capped reads and `crate::encoding`'s
//! percent-encoding, two files that binary compiles under the same paths. The driver
//! protocol's own rules live here for the same reason: the socket token's alphabet
//! ([`validate_socket_token`], which the config loader applies too) and how `SECRET_ID` is
//! read ([`secret_id_from_env`], shared with `psi secret`).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::encoding::uri_component;
use crate::fsutil::{read_bounded, read_capped, Bounded, TOKEN};

/// How long the client waits on the socket. psi answers a stalled provider with a 503
/// after 30 seconds (`resolver::LOOKUP_DEADLINE`); this only stops a wedged server from
/// holding a container start forever.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest request body psi serve takes (`server::routes::MAX_BODY`, which a test holds
/// equal to this): a store above it is refused before it is sent.
pub const MAX_BODY: usize = 1024 * 1024;

/// The usage text after `usage: <program> `.
const USAGE: &str = "store|lookup|delete|list --socket PATH [--token-file PATH]

Podman's shell-driver operations against psi serve, for SECRET_ID from the environment.
store sends stdin; lookup and list print the answer byte for byte.
The socket defaults to $PSI_SOCKET; --token-file names a file holding the socket token.";

/// The four driver operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Store,
    Lookup,
    Delete,
    List,
}

impl Op {
    fn parse(word: &str) -> Option<Op> {
        Some(match word {
            "store" => Op::Store,
            "lookup" => Op::Lookup,
            "delete" => Op::Delete,
            "list" => Op::List,
            _ => return None,
        })
    }

    /// Name, method and route prefix, as the curl commands send them.
    fn request(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Op::Store => ("store", "POST", "/store/"),
            Op::Lookup => ("lookup", "GET", "/lookup/"),
            Op::Delete => ("delete", "DELETE", "/delete/"),
            Op::List => ("list", "GET", "/list"),
        }
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub op: Op,
    pub socket: PathBuf,
    pub token_file: Option<PathBuf>,
}

/// What went wrong, with the exit code it maps to.
pub enum Failure {
    /// Bad arguments or environment: exit 2.
    Usage(String),
    /// psi serve unreachable, a non-2xx answer, a broken reply: exit 1.
    Serve(String),
}

/// Runs the client on `args` (the words after `psi client`, or after `psi-client`) and
/// returns the exit code. `program` names the command in the usage text; `socket` is the
/// socket when `--socket` is not given (`$PSI_SOCKET`, or `psi`'s global flag).
pub fn main(
    program: &str,
    args: impl IntoIterator<Item = OsString>,
    socket: Option<PathBuf>,
) -> u8 {
    let invocation = match parse(args, socket) {
        Ok(Some(invocation)) => invocation,
        Ok(None) => {
            println!("usage: {program} {USAGE}");
            return 0;
        }
        Err(message) => {
            eprintln!("psi: {message}\nusage: {program} {USAGE}");
            return 2;
        }
    };
    match run(&invocation) {
        Ok(()) => 0,
        Err(Failure::Usage(message)) => {
            eprintln!("psi: {message}");
            2
        }
        Err(Failure::Serve(message)) => {
            eprintln!("psi: {message}");
            1
        }
    }
}

/// Parses the words after `client`; `Ok(None)` for `--help`. A String error: [`main`]
/// prints it above the usage and exits 2.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    socket: Option<PathBuf>,
) -> Result<Option<Invocation>, String> {
    let mut op = None;
    let mut socket = socket;
    let mut token_file = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(OsString::from(value))),
            _ => (text.as_ref(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--socket" => socket = Some(value("--socket")?),
            "--token-file" => token_file = Some(value("--token-file")?),
            word if op.is_none() && !word.starts_with('-') => {
                op = Some(Op::parse(word).ok_or_else(|| format!("unknown operation '{word}'"))?)
            }
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    Ok(Some(Invocation {
        op: op.ok_or("which operation: store, lookup, delete or list?")?,
        socket: socket.ok_or("no socket: pass --socket PATH or set PSI_SOCKET")?,
        token_file,
    }))
}

fn run(invocation: &Invocation) -> Result<(), Failure> {
    let (name, method, route) = invocation.op.request();
    let mut target = String::from(route);
    let mut id = String::new();
    if invocation.op != Op::List {
        id = secret_id_from_env()
            .map_err(Failure::Usage)?
            .ok_or_else(|| Failure::Usage("SECRET_ID is not set".into()))?;
        target.extend(uri_component(&id));
    }
    let token = match &invocation.token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let body = match invocation.op {
        Op::Store => Some(read_stdin()?),
        _ => None,
    };
    let request = build_request(
        method,
        &target,
        token.as_deref().map(String::as_str),
        body.as_deref().map(Vec::as_slice),
    );

    let reply = exchange(&invocation.socket, &request)?;
    let response = parse_response(&reply).map_err(|why| {
        Failure::Serve(format!(
            "{}: malformed reply from psi serve: {why}",
            invocation.socket.display()
        ))
    })?;
    if (200..300).contains(&response.status) {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(&response.body)
            .and_then(|()| out.flush())
            .map_err(|err| Failure::Serve(format!("cannot write to stdout: {err}")));
    }
    let what = if id.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {id}")
    };
    Err(Failure::Serve(format!(
        "{what}: HTTP {}: {}",
        response.status,
        error_detail(&response.body)
    )))
}

/// `SECRET_ID` from the environment, where Podman's shell driver puts it: `Ok(None)` when it
/// is unset or empty (each caller says so in its own words), an error when it is not UTF-8,
/// which no secret ID can be.
pub fn secret_id_from_env() -> Result<Option<String>, String> {
    match std::env::var_os("SECRET_ID") {
        None => Ok(None),
        Some(raw) if raw.is_empty() => Ok(None),
        Some(raw) => raw
            .into_string()
            .map(Some)
            .map_err(|_| "SECRET_ID is not valid UTF-8".to_owned()),
    }
}

/// Connects, sends `request`, and reads the reply until psi closes the connection.
pub fn exchange(socket: &Path, request: &[u8]) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let failed = |what: &str, err: std::io::Error| {
        Failure::Serve(format!("{what} {}: {err}", socket.display()))
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| failed("cannot connect to", e))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| failed("cannot set timeouts on", e))?;
    stream
        .write_all(request)
        .map_err(|e| failed("cannot send the request to", e))?;
    // A value is at most MAX_BODY (psi serve refuses larger stores); the head is small.
    const MAX_REPLY: usize = MAX_BODY + 64 * 1024;
    read_bounded(stream, 4096, MAX_REPLY).map_err(|err| match err {
        Bounded::Over => Failure::Serve(format!(
            "the answer from {} is larger than {MAX_REPLY} bytes",
            socket.display()
        )),
        Bounded::Io(e) => failed("cannot read the answer from", e),
    })
}

/// One request, `Connection: close` (one request per connection, as curl makes it).
pub fn build_request(
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Zeroizing<Vec<u8>> {
    let mut request = Zeroizing::new(Vec::with_capacity(256 + body.map_or(0, <[u8]>::len)));
    let mut push = |part: &[u8]| request.extend_from_slice(part);
    for part in [method, " ", target, " HTTP/1.1\r\nHost: localhost\r\n"] {
        push(part.as_bytes());
    }
    if let Some(token) = token {
        push(b"Authorization: Bearer ");
        push(token.as_bytes());
        push(b"\r\n");
    }
    if let Some(body) = body {
        push(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    push(b"Connection: close\r\n\r\n");
    if let Some(body) = body {
        push(body);
    }
    request
}

/// The token from `path`, surrounding whitespace removed, checked against the token
/// alphabet (which also keeps CR/LF out of the request head).
fn read_token(path: &Path) -> Result<Zeroizing<String>, Failure> {
    let text = read_capped(path, TOKEN)
        .map_err(|err| Failure::Usage(format!("cannot read {}: {err}", path.display())))?;
    let token = std::str::from_utf8(&text)
        .map(|t| Zeroizing::new(t.trim().to_owned()))
        .map_err(|_| Failure::Usage(format!("{} is not UTF-8", path.display())))?;
    validate_socket_token(&token)
        .map_err(|why| Failure::Usage(format!("{}: {why}", path.display())))?;
    Ok(token)
}

/// The socket token must be at least 8 characters of `[A-Za-z0-9._~+/=-]`, the whole string:
/// that alphabet is what makes embedding it in single quotes in `psi.conf` safe, and keeps
/// CR and LF out of a request head.
/// A String error: the config loader makes it an `Error::Config`, the client a usage error.
pub fn validate_socket_token(token: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b);
    if token.len() >= 8 && token.bytes().all(allowed) {
        Ok(())
    } else {
        Err("invalid socket token: it must be at least 8 characters from [A-Za-z0-9._~+/=-]".into())
    }
}

/// All of stdin, refused above the server's body limit (psi would answer 413 anyway).
fn read_stdin() -> Result<Zeroizing<Vec<u8>>, Failure> {
    read_bounded(std::io::stdin().lock(), 0, MAX_BODY).map_err(|err| match err {
        Bounded::Over => Failure::Serve(format!(
            "stdin holds more than {MAX_BODY} bytes, psi's limit"
        )),
        Bounded::Io(err) => Failure::Serve(format!("cannot read stdin: {err}")),
    })
}

/// A whole reply: its status and its body, unframed.
pub struct Response {
    pub status: u16,
    pub body: Zeroizing<Vec<u8>>,
}

/// Parses a whole HTTP/1.1 reply: status line, headers, and a body framed by
/// `Content-Length`, chunked encoding, or the end of the connection.
/// A String error: the caller puts it into its own message after the route.
pub fn parse_response(reply: &[u8]) -> Result<Response, String> {
    let head_end = find(reply, b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&reply[..head_end]).map_err(|_| "headers are not UTF-8")?;
    let rest = &reply[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("bad header line")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        Zeroizing::new(
            rest.get(..length)
                .ok_or("body shorter than Content-Length")?
                .to_vec(),
        )
    } else {
        Zeroizing::new(rest.to_vec())
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body (psi sends `Content-Length` today; a streamed body would be
/// chunked).
fn dechunk(mut data: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut body = Zeroizing::new(Vec::with_capacity(data.len()));
    loop {
        let line_end = find(data, b"\r\n").ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        body.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// psi's `{"error": ..., "detail": ...}` detail, or the body as text for anything else.
pub fn error_detail(body: &[u8]) -> String {
    std::str::from_utf8(body)
        .ok()
        .and_then(json_detail)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// The `"detail"` member of a JSON object whose members are all strings, as psi serve's
/// error bodies are (`server::routes`); `None` for anything else. Read by hand so that the
/// client carries no JSON library.
fn json_detail(text: &str) -> Option<String> {
    let mut rest = text.trim_start().strip_prefix('{')?;
    loop {
        let (key, after) = json_string(rest.trim_start())?;
        let after = after.trim_start().strip_prefix(':')?;
        let (value, after) = json_string(after.trim_start())?;
        if key == "detail" {
            return Some(value);
        }
        rest = after.trim_start().strip_prefix(',')?;
    }
}

/// The JSON string at the start of `text`, unescaped, and the text after it.
fn json_string(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix('"')?;
    let mut chars = inner.char_indices();
    let mut out = String::new();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((out, &inner[at + 1..])),
            '\\' => out.push(match chars.next()?.1 {
                e @ ('"' | '\\' | '/') => e,
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let first = hex4(&mut chars)?;
                    let mut units = vec![first];
                    // A high surrogate: the low half follows as another `\u` escape.
                    if (0xD800..0xDC00).contains(&first) {
                        (chars.next()?.1 == '\\' && chars.next()?.1 == 'u').then_some(())?;
                        units.push(hex4(&mut chars)?);
                    }
                    char::decode_utf16(units).next()?.ok()?
                }
                _ => return None,
            }),
            c if c < ' ' => return None,
            c => out.push(c),
        }
    }
    None
}

/// Four hex digits of a `\u` escape.
fn hex4(chars: &mut impl Iterator<Item = (usize, char)>) -> Option<u16> {
    (0..4).try_fold(0u16, |n, _| {
        Some(n * 16 + chars.next()?.1.to_digit(16)? as u16)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn parses_operation_socket_and_token_file_in_any_order() {
        let parsed = parse(words("lookup --socket /s --token-file /t"), None).unwrap();
        assert_eq!(
            parsed,
            Some(Invocation {
                op: Op::Lookup,
                socket: "/s".into(),
                token_file: Some("/t".into()),
            })
        );
        let parsed = parse(words("--socket=/s store"), Some("/env".into())).unwrap();
        assert_eq!(parsed.unwrap().socket, PathBuf::from("/s"));
        let parsed = parse(words("list"), Some("/env".into())).unwrap();
        assert_eq!(parsed.unwrap().socket, PathBuf::from("/env"));
        assert_eq!(parse(words("lookup --help"), None).unwrap(), None);
        assert!(parse(words("lookup"), None).is_err());
        assert!(parse(words("fetch --socket /s"), None).is_err());
        assert!(parse(words("lookup list --socket /s"), None).is_err());
        assert!(parse(words("lookup --socket"), None).is_err());
    }

    #[test]
    fn requests_are_what_curl_sends() {
        let request = build_request("POST", "/store/a%20b", Some("tok"), Some(b"x\0y"));
        assert_eq!(
            &request[..],
            b"POST /store/a%20b HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer tok\r\nContent-Length: 3\r\nConnection: close\r\n\r\nx\0y"
        );
        assert_eq!(
            uri_component("3f2a-b.c~d/e f").to_string(),
            "3f2a-b.c~d%2Fe%20f"
        );
    }

    #[test]
    fn responses_by_length_chunks_or_end_of_stream() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\na\0b").unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"a\0b"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\n\r\n\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(&r.body[..], b"abc\r\n");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n{\"detail\": \"gone\"}").unwrap();
        assert_eq!((r.status, error_detail(&r.body)), (404, "gone".to_owned()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn error_detail_reads_psis_error_bodies_and_falls_back_to_the_text() {
        let detail = |body: &str| error_detail(body.as_bytes());
        assert_eq!(
            detail(r#"{"error": "unauthorized", "detail": "invalid or missing token"}"#),
            "invalid or missing token"
        );
        // serde_json's and Python's escapes, surrogate pairs included.
        assert_eq!(
            detail(r#"{"error":"x","detail":"a \"q\" \\ \/ \n\t\u00e9 \ud83d\ude00 ü"}"#),
            "a \"q\" \\ / \n\té 😀 ü"
        );
        // Anything else is shown as it came, trimmed.
        for other in [
            "not json\n",
            r#"{"detail": 5}"#,
            r#"{"error": "x"}"#,
            r#"{"detail": "\ud83d"}"#,
            r#"{"detail": "open"#,
        ] {
            assert_eq!(detail(other), other.trim(), "{other}");
        }
    }

    #[test]
    fn socket_tokens_are_long_enough_and_header_safe() {
        assert!(validate_socket_token("abcDEF12._~+/=-").is_ok());
        assert!(validate_socket_token("short").is_err());
        assert!(validate_socket_token("token-1\r\nX-Other: 1").is_err());
        assert!(validate_socket_token("with space 123").is_err());
    }
}
