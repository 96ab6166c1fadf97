//! One connection after `accept`: psi's own HTTP/1.1 loop ([`fast`]) for as long as the
//! client sends plain requests, hyper from the first one that is not, and the limits on
//! connections that stay silent or idle.
//!
//! The accept loop makes the first [`attempt`] itself, on the socket as accepted: a driver
//! command's request is usually there already, and when its answer is too, the connection
//! is answered and closed with no task, no registration with the reactor and no hand-off to
//! another thread, which is most of what a request used to cost. Only a connection that has
//! more to do gets a task ([`serve`]).

use std::io::{self, IoSlice};
use std::os::unix::net::UnixStream as StdStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use zeroize::Zeroizing;

use super::fast::Reply;
use super::routes::Route;
use super::{answer, fast, handle, App, Slots};

/// What a connection needs next.
pub(super) enum Step {
    /// Nothing: close it.
    Close,
    /// A request was answered; another may follow on the same connection.
    Again,
    /// Nothing to read yet.
    Wait,
    /// The socket took only part of an answer: the rest, then close or wait for more.
    Flush {
        rest: Zeroizing<Vec<u8>>,
        close: bool,
    },
    /// A plain request whose answer has to wait (a provider, the state directory).
    Later { ask: fast::Ask, route: Route },
    /// A request the fast path leaves to hyper: the bytes read so far, for hyper to start
    /// from.
    Hyper(Vec<u8>),
}

/// Reads what the connection has (`read`, non-blocking) and answers it with `write` when
/// the answer is ready at once.
pub(super) fn attempt(
    app: &App,
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> Step {
    let mut buffer = [0u8; fast::READ_BUFFER];
    let n = match read(&mut buffer) {
        Ok(0) => return Step::Close,
        Ok(n) => n,
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            return Step::Wait
        }
        Err(_) => return Step::Close,
    };
    let read = &buffer[..n];
    let Some(request) = (n < buffer.len()).then(|| fast::parse(read)).flatten() else {
        return Step::Hyper(read.to_vec());
    };
    match fast::reply(app, &request) {
        (ask, Reply::Later(route)) => Step::Later { ask, route },
        (ask, Reply::Now(answer)) => written(answer.write(write), ask.close),
    }
}

/// The step after writing an answer.
fn written(result: io::Result<Option<Zeroizing<Vec<u8>>>>, close: bool) -> Step {
    match result {
        Ok(None) if close => Step::Close,
        Ok(None) => Step::Again,
        Ok(Some(rest)) => Step::Flush { rest, close },
        Err(_) => Step::Close,
    }
}

/// What a connection's task shares with the server.
pub(super) struct Shared {
    pub slots: Arc<Slots>,
    pub app: Arc<App>,
    /// Counts the connection for the drain at shutdown, and tells hyper to finish.
    pub graceful: Watcher,
    /// Becomes true at shutdown: an idle connection then closes at once.
    pub stop: watch::Receiver<bool>,
}

/// Serves `stream` from `step` until it closes. `slot` is held until then.
pub(super) async fn serve(
    stream: StdStream,
    mut step: Step,
    slot: OwnedSemaphorePermit,
    mut shared: Shared,
) {
    let Ok(mut stream) = UnixStream::from_std(stream) else {
        return;
    };
    let limits = shared.app.limits;
    // Until a first request is answered, the first-byte limit (and eviction) applies;
    // after, the keep-alive idle limit.
    let mut spoke = !matches!(step, Step::Wait);
    loop {
        step = match step {
            Step::Close => break,
            Step::Hyper(start) => {
                with_hyper(stream, start, shared.app, shared.graceful).await;
                break;
            }
            Step::Later { ask, route } => {
                let answer = fast::Answer::of(&ask, answer(&shared.app, route).await);
                written(
                    answer.write(|parts| stream.try_write_vectored(parts)),
                    ask.close,
                )
            }
            Step::Flush { rest, close } => {
                if stream.write_all(&rest).await.is_err() || close {
                    break;
                }
                Step::Again
            }
            Step::Again | Step::Wait => {
                let wait = async {
                    if spoke {
                        // A spurious wake-up reads nothing and waits again.
                        tokio::time::timeout(limits.header, stream.readable())
                            .await
                            .is_ok_and(|ready| ready.is_ok())
                    } else {
                        shared.slots.first_byte(&stream, limits.first_byte).await
                    }
                };
                let ready = tokio::select! {
                    ready = wait => ready,
                    () = stopped(&mut shared.stop) => false,
                };
                if !ready {
                    break;
                }
                let next = attempt(
                    &shared.app,
                    |buf| stream.try_read(buf),
                    |parts| stream.try_write_vectored(parts),
                );
                spoke |= !matches!(next, Step::Wait);
                next
            }
        };
    }
    drop(slot);
}

/// Waits for `stop` to become true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the server is gone: stop too.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// HTTP/1.1 by hyper until the connection ends, starting with the bytes `start` the fast
/// path read.
async fn with_hyper(stream: UnixStream, start: Vec<u8>, app: Arc<App>, graceful: Watcher) {
    let limits = app.limits;
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header)
        // A client may shut its write side down once the request is out (`nc -N`, some
        // proxies); it still wants the answer.
        .half_close(true)
        // The read buffer a connection may grow to (hyper's default is ~400 KiB): request
        // heads are small, and bodies are copied out as they arrive.
        .max_buf_size(MAX_READ_BUFFER)
        .serve_connection(
            Rewind {
                start,
                at: 0,
                io: TokioIo::new(stream),
            },
            service_fn(move |req| {
                let app = Arc::clone(&app);
                async move { Ok::<_, std::convert::Infallible>(handle(&app, req).await) }
            }),
        );
    if let Err(err) = graceful.watch(connection).await {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Largest read buffer of one connection.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// A socket that first yields the bytes already read from it.
struct Rewind {
    start: Vec<u8>,
    at: usize,
    io: TokioIo<UnixStream>,
}

impl hyper::rt::Read for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.start.len() {
            let n = buf.remaining().min(this.start.len() - this.at);
            buf.put_slice(&this.start[this.at..this.at + n]);
            this.at += n;
            if this.at == this.start.len() {
                this.start = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
