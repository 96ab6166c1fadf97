//! A small blocking HTTP/1.1 client (plain or TLS through OpenSSL) for talking to the fake
//! from synchronous tests, seeing status, headers and body exactly as the fake sent them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The parsed JSON body; `None` when the body is empty (304).
    pub body: Option<serde_json::Value>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends `method target` (`target` = path and encoded query) to `base_url` with `headers` and
/// an optional JSON body. For `https` the server must present a certificate for 127.0.0.1
/// signed by `ca` (with `None`, only the system roots are trusted). Errors are connection,
/// TLS or protocol failures, as text.
pub fn send(
    base_url: &str,
    ca: Option<&Path>,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> Result<Reply, String> {
    let (tls, host) = match base_url.split_once("://") {
        Some(("https", host)) => (true, host),
        Some(("http", host)) => (false, host),
        _ => return Err(format!("not an http(s) URL: {base_url}")),
    };
    let tcp = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    // A hung exchange ends after 30 s by a shutdown from a watchdog thread, not by a socket
    // timeout: with one set, a signal (SIGCHLD from any test's child) ends a blocked read
    // with EINTR whatever SA_RESTART says (signal(7)), and OpenSSL's handshake gives up on it.
    let watchdog = tcp
        .try_clone()
        .map_err(|e| format!("connect {host}: {e}"))?;
    let (_done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(30)) == Err(RecvTimeoutError::Timeout) {
            let _ = watchdog.shutdown(std::net::Shutdown::Both);
        }
    });
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = Vec::new();
    if tls {
        let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
        connector.set_verify(SslVerifyMode::PEER);
        if let Some(ca) = ca {
            connector.set_ca_file(ca).map_err(|e| e.to_string())?;
        }
        let ip = host.rsplit_once(':').map_or(host, |(ip, _)| ip);
        let mut stream = connector
            .build()
            .connect(ip, tcp)
            .map_err(|e| format!("TLS handshake: {e}"))?;
        exchange(&mut stream, head.as_bytes(), &body, &mut raw)?;
    } else {
        let mut stream = tcp;
        exchange(&mut stream, head.as_bytes(), &body, &mut raw)?;
    }
    parse(&raw)
}

fn exchange(
    stream: &mut impl ReadWrite,
    head: &[u8],
    body: &[u8],
    raw: &mut Vec<u8>,
) -> Result<(), String> {
    stream.write_all(head).map_err(|e| e.to_string())?;
    stream.write_all(body).map_err(|e| e.to_string())?;
    stream.read_to_end(raw).map_err(|e| e.to_string())?;
    Ok(())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn parse(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = &raw[split + 4..];
    let body = if body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?)
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}
