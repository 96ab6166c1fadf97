//! A raw HTTP/1.1 client over a Unix socket, so tests see the exact bytes psi sends.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method target` with `headers` and `body` (`Connection: close`) and reads the reply.
pub async fn request(
    socket: &Path,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = UnixStream::connect(socket)
        .await
        .expect("connect to psi socket");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // psi may answer (413) and close before the whole body is sent: keep going to the reply.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    parse(&raw)
}

pub async fn get(socket: &Path, target: &str) -> Reply {
    request(socket, "GET", target, &[], b"").await
}

pub fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Sends `raw` as it is on a new connection, shuts the sending side and returns every byte
/// psi answers until it closes: for comparing answers byte for byte.
pub fn exchange(socket: &Path, raw: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).expect("connect to psi socket");
    stream.write_all(raw).expect("send the request");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shut the sending side");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read the answer");
    reply
}

/// The answers of `exchange` to `fast` and to `slow`, taken within the same second (their
/// `date` headers then agree): `slow` is the same request in a form psi's fast path leaves
/// to hyper, so equal answers mean both ways give the client the same bytes.
pub fn both_ways(socket: &Path, fast: &[u8], slow: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let date = |reply: &[u8]| {
        let text = String::from_utf8_lossy(reply).into_owned();
        text.lines()
            .find(|l| l.starts_with("date: "))
            .map(str::to_owned)
    };
    loop {
        let (a, b) = (exchange(socket, fast), exchange(socket, slow));
        if date(&a) == date(&b) {
            return (a, b);
        }
    }
}
