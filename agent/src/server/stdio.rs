//! Process stdio on the agent side: output buffers fed by pump threads, and stdin sinks.
//!
//! Output is read from the process as soon as it exists, into a bounded buffer. When the buffer
//! is full and nobody is attached the pump stops reading, so the process blocks like on a full
//! pipe: nothing is dropped. An attached client gets the buffer first, then live output. Bytes
//! leave the buffer only once a write to the client accepted them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::pipe2;
use rust_vm_protocol::{ConsoleSize, ErrorCode, ProtocolError};

use rust_vm_container::StdioSpec;

/// Output buffered per stream while no client reads it.
pub const OUTPUT_BUFFER_SIZE: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;
/// How often an attachment waiting for output looks whether its client is still there.
const HANGUP_CHECK: Duration = Duration::from_millis(500);
/// The character a terminal's line discipline turns into end-of-file (VEOF, ^D).
const TERMINAL_EOF: u8 = 0x04;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct OutputState {
    buf: VecDeque<u8>,
    eof: bool,
    attached: bool,
}

/// One output stream of a process.
#[derive(Default)]
pub struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

impl Output {
    /// Starts pumping `source` (a pipe's read end or a pty master) into a new buffer.
    pub fn start(source: File, label: String) -> io::Result<Arc<Output>> {
        let output = Arc::new(Output::default());
        let pump = Arc::clone(&output);
        thread::Builder::new()
            .name(format!("out:{label}"))
            .spawn(move || pump.pump(source, &label))?;
        Ok(output)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, OutputState>) -> MutexGuard<'a, OutputState> {
        self.changed.wait(state).unwrap_or_else(|e| e.into_inner())
    }

    fn pump(&self, mut source: File, label: &str) {
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let room = {
                let mut state = lock(&self.state);
                while state.buf.len() >= OUTPUT_BUFFER_SIZE {
                    state = self.wait(state);
                }
                OUTPUT_BUFFER_SIZE - state.buf.len()
            };
            let want = room.min(CHUNK);
            match source.read(&mut chunk[..want]) {
                Ok(0) => break,
                Ok(n) => {
                    lock(&self.state).buf.extend(&chunk[..n]);
                    self.changed.notify_all();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A pty master reads EIO once the last slave fd is closed: that is its EOF.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => {
                    log::warn!("{label}: reading output: {e}");
                    break;
                }
            }
        }
        lock(&self.state).eof = true;
        self.changed.notify_all();
    }

    /// Claims the stream for one client.
    pub fn attach(&self) -> Result<OutputAttachment<'_>, ProtocolError> {
        let mut state = lock(&self.state);
        if state.attached {
            return Err(ProtocolError::new(
                ErrorCode::AlreadyExists,
                "another client is attached to this stream",
            ));
        }
        state.attached = true;
        Ok(OutputAttachment { output: self })
    }

    /// Everything buffered now, without consuming it (for tests and diagnostics).
    #[cfg(test)]
    pub fn snapshot(&self) -> (Vec<u8>, bool) {
        let state = lock(&self.state);
        (state.buf.iter().copied().collect(), state.eof)
    }
}

pub struct OutputAttachment<'a> {
    output: &'a Output,
}

impl OutputAttachment<'_> {
    /// Copies the stream to `sink` until the process side reaches EOF. Bytes are consumed only
    /// once `sink` accepted them, so a client that goes away loses nothing. While there is
    /// nothing to send, `gone` is asked now and then whether the client left: then the stream
    /// is let go (`BrokenPipe`) rather than held for output that may never come.
    pub fn deliver(&self, sink: &mut impl Write, gone: impl Fn() -> bool) -> io::Result<()> {
        let output = self.output;
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            {
                let mut state = lock(&output.state);
                while state.buf.is_empty() && !state.eof {
                    let (next, waited) = output
                        .changed
                        .wait_timeout(state, HANGUP_CHECK)
                        .unwrap_or_else(|e| e.into_inner());
                    state = next;
                    if waited.timed_out() && gone() {
                        return Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "the client closed the connection",
                        ));
                    }
                }
                if state.buf.is_empty() {
                    return Ok(());
                }
                chunk.clear();
                let (front, back) = state.buf.as_slices();
                let take = front.len().min(CHUNK);
                chunk.extend_from_slice(&front[..take]);
                if take < CHUNK {
                    chunk.extend_from_slice(&back[..back.len().min(CHUNK - take)]);
                }
            }
            let mut sent = 0;
            while sent < chunk.len() {
                match sink.write(&chunk[sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        sent += n;
                        let mut state = lock(&output.state);
                        state.buf.drain(..n);
                        if state.buf.is_empty() {
                            // Keep no megabyte of capacity around for an idle stream.
                            state.buf.shrink_to(CHUNK);
                        }
                        drop(state);
                        output.changed.notify_all();
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

impl Drop for OutputAttachment<'_> {
    fn drop(&mut self) {
        lock(&self.output.state).attached = false;
    }
}

/// Where a process's stdin goes.
pub enum Stdin {
    /// The process was created without stdin (`/dev/null`).
    None,
    /// Our end of the stdin pipe; `None` once closed. Writers clone the `Arc` so that closing
    /// never waits behind a blocked write: the fd closes when the last writer lets go.
    Pipe(Mutex<Option<Arc<File>>>),
    /// The pty master (shared with the output pump and resizing).
    Terminal(Arc<File>),
}

impl Stdin {
    /// Writes all of `data`. A pipe that stays full is waited on only while `gone` (asked
    /// now and then) says the client is still there.
    pub fn write(&self, data: &[u8], gone: &dyn Fn() -> bool) -> Result<(), ProtocolError> {
        let file = match self {
            Stdin::None => {
                return Err(ProtocolError::new(
                    ErrorCode::FailedPrecondition,
                    "the process was created without stdin",
                ))
            }
            Stdin::Pipe(pipe) => lock(pipe).clone().ok_or_else(|| {
                ProtocolError::new(ErrorCode::FailedPrecondition, "stdin is already closed")
            })?,
            Stdin::Terminal(master) => Arc::clone(master),
        };
        write_unless_gone(&file, data, gone).map_err(|e| {
            let code = if e.kind() == io::ErrorKind::BrokenPipe {
                ErrorCode::FailedPrecondition
            } else {
                ErrorCode::Internal
            };
            ProtocolError::new(code, format!("writing to stdin: {e}"))
        })
    }

    /// Closes stdin: the pipe's write end, or for a terminal the EOF character. A terminal
    /// whose input queue is full blocks here (its master is shared with the output pump, so
    /// it stays a blocking descriptor).
    pub fn close(&self) -> Result<(), ProtocolError> {
        match self {
            Stdin::None => Ok(()),
            Stdin::Pipe(pipe) => {
                lock(pipe).take();
                Ok(())
            }
            Stdin::Terminal(_) => self.write(&[TERMINAL_EOF], &|| false),
        }
    }
}

/// Our stdin pipe end is non-blocking: a full pipe makes the writer poll for room, looking at
/// `gone` between polls. (A blocking descriptor, the pty master, simply blocks in write.)
fn write_unless_gone(file: &File, mut data: &[u8], gone: &dyn Fn() -> bool) -> io::Result<()> {
    while !data.is_empty() {
        match (&*file).write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [libc::pollfd {
                    fd: file.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                }];
                // SAFETY: one valid pollfd for the duration of the call.
                let ready = unsafe {
                    libc::poll(fds.as_mut_ptr(), 1, HANGUP_CHECK.as_millis() as libc::c_int)
                };
                if ready == 0 && gone() {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the client went away while the process did not read its stdin",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The agent's side of a process's stdio, once the process exists.
pub struct ProcessStdio {
    pub stdin: Stdin,
    pub stdout: Arc<Output>,
    /// `None` for a terminal process (its output is all on `stdout`).
    pub stderr: Option<Arc<Output>>,
    pub pty_master: Option<Arc<File>>,
}

/// The agent's ends, kept while the process is being created.
pub enum ParentEnds {
    Pipes {
        stdin: Option<File>,
        stdout: File,
        stderr: File,
    },
    Terminal,
}

/// Makes the stdio for a new process: the request for the runtime and the ends we keep.
pub fn prepare(
    terminal: bool,
    size: ConsoleSize,
    with_stdin: bool,
) -> io::Result<(StdioSpec, ParentEnds)> {
    if terminal {
        let request = StdioSpec::Terminal {
            rows: size.rows,
            cols: size.cols,
        };
        return Ok((request, ParentEnds::Terminal));
    }
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from);
    let (child_stdin, parent_stdin) = if with_stdin {
        let (read, write) = pipe()?;
        // Only our end (its own open file description): see `write_unless_gone`.
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        (read, Some(File::from(write)))
    } else {
        let null = open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        (null, None)
    };
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    Ok((
        StdioSpec::Pipes {
            stdin: Some(child_stdin),
            stdout: stdout_write,
            stderr: stderr_write,
        },
        ParentEnds::Pipes {
            stdin: parent_stdin,
            stdout: File::from(stdout_read),
            stderr: File::from(stderr_read),
        },
    ))
}

/// Starts the output pumps once the process exists.
pub fn finish(
    parent: ParentEnds,
    pty_master: Option<OwnedFd>,
    label: &str,
) -> io::Result<ProcessStdio> {
    match parent {
        ParentEnds::Pipes {
            stdin,
            stdout,
            stderr,
        } => Ok(ProcessStdio {
            stdin: match stdin {
                Some(file) => Stdin::Pipe(Mutex::new(Some(Arc::new(file)))),
                None => Stdin::None,
            },
            stdout: Output::start(stdout, format!("{label}/stdout"))?,
            stderr: Some(Output::start(stderr, format!("{label}/stderr"))?),
            pty_master: None,
        }),
        ParentEnds::Terminal => {
            let master = pty_master.ok_or_else(|| {
                io::Error::other("the runtime created a terminal process but returned no pty")
            })?;
            let master = File::from(master);
            let reader = master.try_clone()?;
            let master = Arc::new(master);
            Ok(ProcessStdio {
                stdin: Stdin::Terminal(Arc::clone(&master)),
                stdout: Output::start(reader, format!("{label}/tty"))?,
                stderr: None,
                pty_master: Some(master),
            })
        }
    }
}

/// Sets the terminal size of a pty.
pub fn resize(master: &File, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a stdin stream is attached; at most one at a time.
#[derive(Default)]
pub struct AttachFlag(AtomicBool);

impl AttachFlag {
    pub fn claim(&self) -> Result<AttachFlagGuard<'_>, ProtocolError> {
        if self.0.swap(true, Ordering::AcqRel) {
            return Err(ProtocolError::new(
                ErrorCode::AlreadyExists,
                "another client is attached to this stream",
            ));
        }
        Ok(AttachFlagGuard(&self.0))
    }
}

pub struct AttachFlagGuard<'a>(&'a AtomicBool);

impl Drop for AttachFlagGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pipe_pair() -> (File, File) {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        (File::from(r), File::from(w))
    }

    /// Attaches to `output` and delivers everything it has until its source ends.
    fn attach_and_drain(output: &Output) -> Vec<u8> {
        let mut got = Vec::new();
        output
            .attach()
            .unwrap()
            .deliver(&mut got, || false)
            .unwrap();
        got
    }

    fn wait_for(mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "condition not reached in time");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn output_before_attach_is_kept() {
        let (r, mut w) = pipe_pair();
        let output = Output::start(r, "t".into()).unwrap();
        w.write_all(b"early ").unwrap();
        w.write_all(b"bird").unwrap();
        drop(w);
        wait_for(|| output.snapshot().1);
        let got = attach_and_drain(&output);
        assert_eq!(got, b"early bird");
    }

    #[test]
    fn full_buffer_applies_backpressure_without_loss() {
        let (r, w) = pipe_pair();
        let output = Output::start(r, "t".into()).unwrap();
        let total = OUTPUT_BUFFER_SIZE * 3;
        let writer = thread::spawn(move || {
            let mut w = w;
            let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            w.write_all(&data).unwrap();
        });
        // Nobody attached: the buffer fills up to its bound and the writer blocks.
        wait_for(|| output.snapshot().0.len() == OUTPUT_BUFFER_SIZE);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(output.snapshot().0.len(), OUTPUT_BUFFER_SIZE);
        assert!(!writer.is_finished());
        let got = attach_and_drain(&output);
        writer.join().unwrap();
        assert_eq!(got.len(), total);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn one_client_at_a_time_and_reattach_after_failure() {
        let (r, mut w) = pipe_pair();
        let output = Output::start(r, "t".into()).unwrap();
        w.write_all(b"abc").unwrap();
        wait_for(|| output.snapshot().0.len() == 3);
        {
            let first = output.attach().unwrap();
            let err = output.attach().err().unwrap();
            assert_eq!(err.code, ErrorCode::AlreadyExists);
            struct Broken;
            impl Write for Broken {
                fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                    Err(io::ErrorKind::BrokenPipe.into())
                }
                fn flush(&mut self) -> io::Result<()> {
                    Ok(())
                }
            }
            assert!(first.deliver(&mut Broken, || false).is_err());
        }
        drop(w);
        let got = attach_and_drain(&output);
        assert_eq!(
            got, b"abc",
            "bytes a failed client did not take are still there"
        );
    }

    #[test]
    fn stdin_pipe_write_and_close() {
        let (mut r, w) = pipe_pair();
        let stdin = Stdin::Pipe(Mutex::new(Some(Arc::new(w))));
        stdin.write(b"hello", &|| false).unwrap();
        stdin.close().unwrap();
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        assert_eq!(
            stdin.write(b"x", &|| false).unwrap_err().code,
            ErrorCode::FailedPrecondition
        );
    }

    #[test]
    fn stdin_to_a_gone_reader_is_an_error() {
        let (r, w) = pipe_pair();
        drop(r);
        let stdin = Stdin::Pipe(Mutex::new(Some(Arc::new(w))));
        let err = stdin.write(b"x", &|| false).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition, "{err}");
    }

    #[test]
    fn no_stdin_is_refused() {
        assert_eq!(
            Stdin::None.write(b"x", &|| false).unwrap_err().code,
            ErrorCode::FailedPrecondition
        );
    }

    #[test]
    fn stdin_waits_for_a_slow_reader_and_gives_up_when_the_client_is_gone() {
        let (request, parent) = prepare(false, ConsoleSize::default(), true).unwrap();
        let (
            StdioSpec::Pipes {
                stdin: Some(child), ..
            },
            ParentEnds::Pipes { stdin, .. },
        ) = (request, parent)
        else {
            panic!("pipes expected");
        };
        let stdin = Stdin::Pipe(Mutex::new(Some(Arc::new(stdin.unwrap()))));
        let reader = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            let mut got = Vec::new();
            File::from(child).read_to_end(&mut got).unwrap();
            got.len()
        });
        let data = vec![7u8; 1024 * 1024];
        stdin.write(&data, &|| false).unwrap();
        stdin.close().unwrap();
        assert_eq!(
            reader.join().unwrap(),
            data.len(),
            "every byte, in spite of EAGAIN"
        );

        let (request, parent) = prepare(false, ConsoleSize::default(), true).unwrap();
        let (
            StdioSpec::Pipes {
                stdin: Some(_child),
                ..
            },
            ParentEnds::Pipes { stdin, .. },
        ) = (request, parent)
        else {
            panic!("pipes expected");
        };
        let stdin = Stdin::Pipe(Mutex::new(Some(Arc::new(stdin.unwrap()))));
        let err = stdin.write(&data, &|| true).unwrap_err();
        assert!(err.message.contains("went away"), "{err}");
    }
}
