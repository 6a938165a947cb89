//! Frame encoding and decoding. The decoder is the first thing untrusted
//! bytes meet, so it checks the length before allocating, rejects unknown
//! wire versions and trailing garbage, and never panics (see `fuzz/`).

use serde::{Serialize, de::DeserializeOwned};

use crate::{Envelope, MAX_FRAME_LEN, WIRE_VERSION};

/// Why bytes could not be turned into a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame (no version byte)")]
    Empty,
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("malformed frame body: {0}")]
    Malformed(String),
    #[error("frame body has {0} trailing bytes")]
    Trailing(usize),
}

/// Appends one encoded frame to `out`.
pub fn encode_frame<M: Serialize>(env: &Envelope<M>, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, WIRE_VERSION]);
    if let Err(e) = postcard::to_extend(env, VecSink(out)) {
        out.truncate(start);
        return Err(FrameError::Malformed(e.to_string()));
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Lets postcard append straight into the caller's buffer.
struct VecSink<'a>(&'a mut Vec<u8>);

impl Extend<u8> for VecSink<'_> {
    fn extend<T: IntoIterator<Item = u8>>(&mut self, iter: T) {
        self.0.extend(iter);
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame, else the
/// envelope and how many bytes it used. An error means the stream is no
/// longer trustworthy and should be closed.
pub fn decode_frame<M: DeserializeOwned>(
    buf: &[u8],
) -> Result<Option<(Envelope<M>, usize)>, FrameError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    if body[0] != WIRE_VERSION {
        return Err(FrameError::Version(body[0]));
    }
    let (env, rest) = postcard::take_from_bytes::<Envelope<M>>(&body[1..])
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(Some((env, 4 + len)))
}

/// The length a frame claims, once its header is in `buf` (used by readers
/// to size their buffer and reject oversized frames before reading them).
pub(crate) fn claimed_len(buf: &[u8]) -> Option<usize> {
    let h = buf.get(..4)?;
    Some(u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExecRequest, GuestMsg, HostMsg, MAX_DATA_CHUNK, Stream, WriteFile};

    fn round_trip<M>(msg: M)
    where
        M: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
    {
        let env = Envelope { id: 42, msg };
        let mut buf = Vec::new();
        encode_frame(&env, &mut buf).unwrap();
        let (back, used) = decode_frame::<M>(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(back, env);
        // Every strict prefix is "need more bytes", never an error.
        for cut in 0..buf.len() {
            assert!(
                decode_frame::<M>(&buf[..cut]).unwrap().is_none(),
                "prefix {cut}"
            );
        }
    }

    #[test]
    fn messages_round_trip() {
        round_trip(HostMsg::Exec(ExecRequest::new(["sh", "-c", "echo hi"])));
        round_trip(HostMsg::WriteFile(WriteFile {
            path: "/workspace/a".into(),
            offset: 7,
            data: vec![0, 255, 10, 13],
            mode: 0o644,
            truncate: true,
        }));
        round_trip(GuestMsg::Output {
            stream: Stream::Stderr,
            data: b"oops\n".to_vec(),
        });
    }

    #[test]
    fn largest_chunk_fits_in_a_frame() {
        let msg = HostMsg::WriteFile(WriteFile {
            path: "/".repeat(crate::MAX_PATH_LEN),
            offset: u64::MAX,
            data: vec![0xff; MAX_DATA_CHUNK],
            mode: 0o777,
            truncate: true,
        });
        let mut buf = Vec::new();
        encode_frame(&Envelope { id: u64::MAX, msg }, &mut buf).unwrap();
    }

    #[test]
    fn oversized_frames_are_rejected_before_reading_them() {
        let mut buf = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        buf.push(WIRE_VERSION);
        assert!(matches!(
            decode_frame::<HostMsg>(&buf),
            Err(FrameError::TooLarge { .. })
        ));
        let env = Envelope {
            id: 1,
            msg: HostMsg::Ping,
        };
        let huge = HostMsg::Stdin {
            process: 1,
            data: vec![0; MAX_FRAME_LEN],
        };
        let mut out = Vec::new();
        encode_frame(&env, &mut out).unwrap();
        let before = out.clone();
        assert!(matches!(
            encode_frame(&Envelope { id: 2, msg: huge }, &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(out, before, "a refused frame leaves the buffer as it was");
    }

    #[test]
    fn bad_version_empty_trailing_and_garbage() {
        assert_eq!(
            decode_frame::<HostMsg>(&[0, 0, 0, 0]),
            Err(FrameError::Empty)
        );
        assert_eq!(
            decode_frame::<HostMsg>(&[0, 0, 0, 1, 9]),
            Err(FrameError::Version(9))
        );
        let mut buf = Vec::new();
        encode_frame(
            &Envelope {
                id: 3,
                msg: HostMsg::Ping,
            },
            &mut buf,
        )
        .unwrap();
        buf.push(0);
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode_frame::<HostMsg>(&buf), Err(FrameError::Trailing(1)));
        let garbage = [0, 0, 0, 3, WIRE_VERSION, 0xff, 0xff];
        assert!(matches!(
            decode_frame::<HostMsg>(&garbage),
            Err(FrameError::Malformed(_))
        ));
    }

    /// A cheap, deterministic stand-in for the fuzzer that runs on every
    /// `cargo test`: random and mutated frames never panic the decoder.
    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut valid = Vec::new();
        encode_frame(
            &Envelope {
                id: 9,
                msg: HostMsg::Exec(ExecRequest::new(["a", "b"])),
            },
            &mut valid,
        )
        .unwrap();
        for _ in 0..20_000 {
            let mut buf = valid.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % buf.len();
                buf[i] = next() as u8;
            }
            let _ = decode_frame::<HostMsg>(&buf);
            let _ = decode_frame::<GuestMsg>(&buf);
            let len = (next() % 64) as usize;
            let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode_frame::<HostMsg>(&noise);
        }
    }
}
