//! Framing: every message is a big-endian `u32` byte length followed by that many bytes of
//! UTF-8 JSON. The length is bounded by [`MAX_FRAME_SIZE`] so a peer cannot make the other
//! side allocate without limit.

use std::io::{self, Read, Write};

use thiserror::Error;

/// Largest frame body either side accepts, in bytes (4 MiB). An OCI spec is a few KiB; the bound
/// leaves room for large specs and `write_stdin` payloads while keeping a rogue length harmless.
pub const MAX_FRAME_SIZE: usize = 4 * 1024 * 1024;

/// Size of the length prefix in bytes.
pub const HEADER_SIZE: usize = 4;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes read)")]
    Truncated { expected: usize, got: usize },
    #[error("i/o error on the connection")]
    Io(#[from] io::Error),
}

/// Reads as many bytes as are available up to `buf.len()`; returns how many were read before EOF.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one frame body. Returns `Ok(None)` on a clean end of stream (EOF exactly at a frame
/// boundary).
pub fn read_frame(reader: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER_SIZE];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_SIZE {
        return Err(FrameError::Truncated {
            expected: HEADER_SIZE,
            got,
        });
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_SIZE,
        });
    }
    let mut body = vec![0u8; len];
    let got = read_full(reader, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated {
            expected: HEADER_SIZE + len,
            got: HEADER_SIZE + got,
        });
    }
    Ok(Some(body))
}

/// Writes one frame (header and body in a single `write_all`, so that concurrent writers
/// serialised by a lock never interleave partial frames).
pub fn write_frame(writer: &mut impl Write, body: &[u8]) -> Result<(), FrameError> {
    if body.len() > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_FRAME_SIZE,
        });
    }
    let mut buf = Vec::with_capacity(HEADER_SIZE + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    writer.write_all(&buf)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, body).expect("write to a Vec");
        out
    }

    #[test]
    fn round_trip() {
        let mut bytes = framed(b"{\"a\":1}");
        bytes.extend(framed(b"[]"));
        let mut cur = Cursor::new(bytes);
        assert_eq!(read_frame(&mut cur).unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(read_frame(&mut cur).unwrap().unwrap(), b"[]");
        assert!(read_frame(&mut cur).unwrap().is_none());
    }

    #[test]
    fn header_is_big_endian_length() {
        assert_eq!(framed(b"xyz")[..4], [0, 0, 0, 3]);
    }

    #[test]
    fn truncated_header() {
        let mut cur = Cursor::new(vec![0u8, 0]);
        let err = read_frame(&mut cur).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    expected: 4,
                    got: 2
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_body() {
        let mut bytes = framed(b"0123456789");
        bytes.truncate(9);
        let err = read_frame(&mut Cursor::new(bytes)).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    expected: 14,
                    got: 9
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn oversized_length_is_refused_without_allocating() {
        let bytes = u32::MAX.to_be_bytes().to_vec();
        let err = read_frame(&mut Cursor::new(bytes)).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("exceeds the limit"));
    }

    #[test]
    fn largest_allowed_frame_passes() {
        let body = vec![b' '; MAX_FRAME_SIZE];
        let bytes = framed(&body);
        assert_eq!(
            read_frame(&mut Cursor::new(bytes)).unwrap().unwrap().len(),
            MAX_FRAME_SIZE
        );
    }

    #[test]
    fn oversized_write_is_refused() {
        let body = vec![0u8; MAX_FRAME_SIZE + 1];
        let mut out = Vec::new();
        assert!(matches!(
            write_frame(&mut out, &body),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty());
    }
}
