//! Async helpers: read whole frames from a byte stream, write frames to it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::claimed_len;
use crate::{Envelope, FrameError, MAX_FRAME_LEN, decode_frame, encode_frame};
use serde::{Serialize, de::DeserializeOwned};

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("control channel read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("control channel closed in the middle of a frame")]
    Truncated,
}

/// Buffers a byte stream and yields whole frames.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The next frame, or `None` on a clean end of stream between frames.
    pub async fn read<M: DeserializeOwned>(&mut self) -> Result<Option<Envelope<M>>, ReadError> {
        loop {
            let pending = &self.buf[self.start..];
            if let Some((env, used)) = decode_frame::<M>(pending)? {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(Some(env));
            }
            // Need more bytes: compact, make room for the claimed frame, read.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let want = claimed_len(&self.buf).map_or(4, |l| 4 + l.min(MAX_FRAME_LEN));
            let room = want.saturating_sub(self.buf.len()).max(16 * 1024);
            let old = self.buf.len();
            self.buf.resize(old + room, 0);
            let n = self.inner.read(&mut self.buf[old..]).await;
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e.into());
                }
            };
            self.buf.truncate(old + n);
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }
}

/// Encodes and writes one frame (not flushed beyond the writer's own policy).
pub async fn write_frame<W, M>(w: &mut W, env: &Envelope<M>) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    M: Serialize,
{
    let mut buf = Vec::new();
    encode_frame(env, &mut buf).map_err(std::io::Error::other)?;
    w.write_all(&buf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostMsg;

    #[tokio::test]
    async fn reads_frames_split_across_reads_and_ends_cleanly() {
        let (mut a, b) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            for id in 0..50u64 {
                let msg = HostMsg::Stdin {
                    process: id,
                    data: vec![id as u8; id as usize * 31],
                };
                write_frame(&mut a, &Envelope { id, msg }).await.unwrap();
            }
        });
        let mut r = FrameReader::new(b);
        for id in 0..50u64 {
            let env = r.read::<HostMsg>().await.unwrap().unwrap();
            assert_eq!(env.id, id);
        }
        writer.await.unwrap();
        assert!(r.read::<HostMsg>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_stream_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        let mut r = FrameReader::new(b);
        assert!(matches!(
            r.read::<HostMsg>().await,
            Err(ReadError::Truncated)
        ));
    }
}
