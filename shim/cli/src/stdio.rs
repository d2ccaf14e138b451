//! Relaying a container process's stdio between our own fds 0/1/2 and the agent's stream
//! connections (one Unix stream per stdio stream; see docs/protocol.md).

use std::fs::File;

use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rust_vm_sandbox::protocol::{attach_within, Address, StreamKind};
use rust_vm_sandbox::stdio::relay;

/// Our fd `fd`, borrowed for the life of the process (never closed by us).
fn own_fd(fd: i32) -> ManuallyDrop<File> {
    // SAFETY: fds 0-2 stay open for the life of the process; ManuallyDrop never closes them.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// Output relays that finish when the agent closes the streams (after the process exits).
pub struct Relay {
    done: mpsc::Receiver<()>,
    outputs: usize,
}

impl Relay {
    /// Attaches the process's streams and starts relaying; call before `start` so no output is
    /// lost. With a terminal the agent sends the terminal's output on stdout only. The agent
    /// must take each stream within `timeout`.
    pub fn attach(
        address: &Address,
        container_id: &str,
        exec_id: Option<&str>,
        terminal: bool,
        with_stdin: bool,
        timeout: Option<Duration>,
    ) -> Result<Relay> {
        let (tx, done) = mpsc::channel();
        let mut kinds = vec![(StreamKind::Stdout, 1)];
        if !terminal {
            kinds.push((StreamKind::Stderr, 2));
        }
        let outputs = kinds.len();
        for (kind, fd) in kinds {
            let stream = attach_within(address, container_id, exec_id, kind, timeout)
                .with_context(|| format!("attaching the container's {kind}"))?;
            let tx = tx.clone();
            thread::Builder::new()
                .name(format!("relay-{kind}"))
                .spawn(move || {
                    relay(&stream, &*own_fd(fd), &format!("relaying {kind}"));
                    let _ = tx.send(());
                })
                .context("starting a relay thread")?;
        }
        if with_stdin {
            let stream = attach_within(address, container_id, exec_id, StreamKind::Stdin, timeout)
                .context("attaching the container's stdin")?;
            thread::Builder::new()
                .name("relay-stdin".into())
                .spawn(move || relay_stdin(stream))
                .context("starting the stdin relay thread")?;
        }
        Ok(Relay { done, outputs })
    }

    /// Waits until the output streams ended, at most `limit`.
    pub fn drain(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for _ in 0..self.outputs {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                log::warn!("container output still open {limit:?} after exit; not waiting longer");
                return;
            }
        }
    }
}

fn relay_stdin(stream: UnixStream) {
    relay(&*own_fd(0), &stream, "relaying stdin");
    // Our EOF is the container's EOF.
    let _ = stream.shutdown(Shutdown::Write);
}

/// Our terminal in raw mode while a container's terminal is relayed through it (so keys such as
/// Ctrl-C reach the container's line discipline, not ours); restored on drop.
pub struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    /// Raw mode on stdin if it is a terminal; `None` otherwise (pipes need nothing).
    pub fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on our stdin, if it is one.
pub fn terminal_size() -> Option<rust_vm_sandbox::protocol::ConsoleSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some(rust_vm_sandbox::protocol::ConsoleSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}
