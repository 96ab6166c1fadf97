//! HTTP bodies that may carry secret bytes (a store request to `psi serve`, a Podman reply
//! with a revealed value), collected frame by frame into one zeroizing buffer with a cap.
//! `http_body_util`'s `collect().to_bytes()` would concatenate the frames into a plain
//! buffer that nothing wipes.

use bytes::Buf;
use http_body_util::BodyExt;
use zeroize::Zeroizing;

use crate::fsutil;

/// Why [`collect_capped`] stopped.
#[derive(Debug)]
pub enum Collect<E> {
    /// More than the cap arrived.
    TooLarge,
    /// The body failed (connection reset, malformed chunking).
    Failed(E),
}

/// The whole body, refused past `cap` bytes; `hint` (a declared length) sizes the buffer.
pub async fn collect_capped<B>(
    body: B,
    hint: usize,
    cap: usize,
) -> Result<Zeroizing<Vec<u8>>, Collect<B::Error>>
where
    B: hyper::body::Body,
{
    let mut body = std::pin::pin!(body);
    let mut out = Zeroizing::new(Vec::with_capacity(hint.min(cap)));
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(Collect::Failed)?.into_data() else {
            continue; // trailers
        };
        while data.has_remaining() {
            let chunk = data.chunk();
            let len = chunk.len();
            fsutil::extend_bounded(&mut out, chunk, cap).map_err(|_| Collect::TooLarge)?;
            data.advance(len);
        }
    }
    Ok(out)
}
