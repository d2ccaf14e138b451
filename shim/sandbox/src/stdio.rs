//! Copying a process's stdio stream between the agent and the host (the CLI's own fds, or
//! containerd's FIFOs).

use std::io::{self, Read, Write};

/// Copies `from` to `to` until `from` ends, flushing after each chunk. When `to` fails (a
/// reader went away for good) the rest is still read and dropped, so the process writing on the
/// other side never blocks on a stream nobody copies. Returns the bytes delivered to `to`.
pub fn relay(mut from: impl Read, to: impl Write, label: &str) -> u64 {
    let mut to = Some(to);
    let mut buf = vec![0u8; 64 * 1024];
    let mut delivered = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return delivered,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                log::debug!("{label}: reading: {err}");
                return delivered;
            }
        };
        if let Some(sink) = to.as_mut() {
            match sink.write_all(&buf[..n]).and_then(|()| sink.flush()) {
                Ok(()) => delivered += n as u64,
                Err(err) => {
                    log::debug!("{label}: the output failed, draining the rest: {err}");
                    to = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn copies_everything_and_drains_after_a_failed_output() {
        let mut out = Vec::new();
        assert_eq!(relay(&b"hello"[..], &mut out, "t"), 5);
        assert_eq!(out, b"hello");
        let mut source = io::Cursor::new(vec![7u8; 200_000]);
        assert_eq!(relay(&mut source, Broken, "t"), 0);
        assert_eq!(source.position(), 200_000, "the rest was read and dropped");
    }
}
