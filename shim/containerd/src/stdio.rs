//! A process's stdio between containerd's FIFOs and the agent's stream connections.
//!
//! The agent serves each stream of a process on its own connection (`attach`). Streams are
//! attached before the process can write (before `start`), so no output is lost; one thread
//! per stream copies bytes.
//!
//! An output FIFO is opened for writing together with a read end the shim keeps, as
//! containerd's own shims do: while containerd is away (restarting, or `ctr` detached), writes
//! land in the FIFO's buffer instead of failing, and a reader that comes back (containerd
//! reopens CRI log FIFOs after a restart) continues where the last one stopped. When nobody
//! reads, the process eventually blocks on output, as under runc. The kept read end is released
//! when the process is deleted, which unblocks a copier stuck on a full FIFO.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::Shutdown;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rust_vm_protocol::{Client, ClientError, StreamKind};
use rust_vm_sandbox::stdio::relay;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StdioError {
    #[error("{field} `{uri}`: {scheme} URIs are not supported (use a FIFO or file:// path)")]
    UnsupportedUri {
        field: &'static str,
        uri: String,
        scheme: String,
    },
    #[error("open {field} {path}")]
    Open {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("attach {stream} of {process}")]
    Attach {
        stream: StreamKind,
        process: String,
        #[source]
        source: ClientError,
    },
}

/// The stdio containerd asked for: FIFO paths (or `file://` URIs), empty when unused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Where one output stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sink {
    /// A FIFO (or any existing file) opened for writing.
    Fifo(PathBuf),
    /// A file appended to, created if missing.
    File(PathBuf),
}

fn sink(field: &'static str, uri: &str) -> Result<Option<Sink>, StdioError> {
    if uri.is_empty() {
        return Ok(None);
    }
    match uri.split_once("://") {
        None => Ok(Some(Sink::Fifo(PathBuf::from(uri)))),
        Some(("file", path)) => Ok(Some(Sink::File(PathBuf::from(path)))),
        Some((scheme, _)) => Err(StdioError::UnsupportedUri {
            field,
            uri: uri.to_owned(),
            scheme: scheme.to_owned(),
        }),
    }
}

impl StdioPaths {
    /// Checks the URIs before anything is created, so a bad one fails `create` cleanly.
    pub fn validate(&self) -> Result<(), StdioError> {
        sink("stdout", &self.stdout)?;
        sink("stderr", &self.stderr)?;
        if self.stdin.contains("://") {
            return Err(StdioError::UnsupportedUri {
                field: "stdin",
                uri: self.stdin.clone(),
                scheme: self
                    .stdin
                    .split("://")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(())
    }
}

/// The running copiers of one process.
pub struct ProcessIo {
    stdin: Option<Arc<UnixStream>>,
    outputs: usize,
    finished: Mutex<Receiver<()>>,
    /// Read ends of the output FIFOs, kept so that writes never fail for want of a reader.
    keep_open: Mutex<Vec<File>>,
}

impl ProcessIo {
    /// Attaches the streams the process has and starts copying. Call before the process runs.
    pub fn attach(
        client: &Client,
        container_id: &str,
        exec_id: Option<&str>,
        paths: &StdioPaths,
    ) -> Result<ProcessIo, StdioError> {
        paths.validate()?;
        let process = match exec_id {
            Some(exec) => format!("exec {exec} of {container_id}"),
            None => container_id.to_owned(),
        };
        let open = |stream: StreamKind| {
            client
                .attach(container_id, exec_id, stream)
                .map_err(|source| StdioError::Attach {
                    stream,
                    process: process.clone(),
                    source,
                })
        };
        let mut outputs = Vec::new();
        let mut keep_open = Vec::new();
        let mut streams = vec![("stdout", &paths.stdout, StreamKind::Stdout)];
        // With a terminal, stderr is merged into the terminal's output.
        if !paths.terminal {
            streams.push(("stderr", &paths.stderr, StreamKind::Stderr));
        }
        for (field, uri, kind) in streams {
            if let Some(sink) = sink(field, uri)? {
                let (out, keep) = open_sink(field, &sink)?;
                keep_open.extend(keep);
                outputs.push((open(kind)?, out, field));
            }
        }
        let stdin = if paths.stdin.is_empty() {
            None
        } else {
            Some(Arc::new(open(StreamKind::Stdin)?))
        };

        let (done_tx, finished) = mpsc::channel();
        let count = outputs.len();
        for (stream, out, name) in outputs {
            let done = done_tx.clone();
            let label = format!("{process} {name}");
            spawn_named(&format!("{name}-copy"), move || {
                copy_output(stream, out, &label);
                let _ = done.send(());
            });
        }
        if let Some(stream) = &stdin {
            let stream = Arc::clone(stream);
            let fifo = PathBuf::from(&paths.stdin);
            let label = format!("{process} stdin");
            spawn_named("stdin-copy", move || copy_input(&fifo, &stream, &label));
        }
        Ok(ProcessIo {
            stdin,
            outputs: count,
            finished: Mutex::new(finished),
            keep_open: Mutex::new(keep_open),
        })
    }

    /// Closes the process's stdin (containerd's CloseIO).
    pub fn close_stdin(&self) {
        if let Some(stream) = &self.stdin {
            let _ = stream.shutdown(Shutdown::Write);
        }
    }

    /// Lets go of the output FIFOs' kept read ends (the process is being deleted): a copier
    /// blocked on a FIFO nobody reads gets an error and finishes.
    pub fn release(&self) {
        self.keep_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Waits until the output copiers have delivered everything, at most `timeout`: a process
    /// that exited may have left children holding its stdout.
    pub fn wait_output(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..self.outputs {
            let left = deadline.saturating_duration_since(Instant::now());
            if finished.recv_timeout(left).is_err() {
                log::warn!("process output still open {timeout:?} after exit; not waiting");
                return;
            }
        }
    }
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(err) = thread::Builder::new().name(name.to_owned()).spawn(f) {
        log::error!("cannot start {name} thread: {err}");
    }
}

/// Opens an output sink for writing; for a FIFO, also the read end the shim keeps.
fn open_sink(field: &'static str, sink: &Sink) -> Result<(File, Option<File>), StdioError> {
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| StdioError::Open {
            field,
            path,
            source,
        }
    };
    match sink {
        Sink::Fifo(path) => {
            // Opening a FIFO's read end without O_NONBLOCK would wait for a writer; with it,
            // the open returns at once, and then the write end opens without waiting either.
            let keep = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(error(path))?;
            let out = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(error(path))?;
            Ok((out, Some(keep)))
        }
        Sink::File(path) => {
            let out = OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(error(path))?;
            Ok((out, None))
        }
    }
}

fn copy_output(stream: UnixStream, out: File, label: &str) {
    // A deleted sink is gone for good: the rest is drained so the process never blocks.
    relay(stream, out, label);
}

fn copy_input(fifo: &Path, stream: &UnixStream, label: &str) {
    // Blocks until containerd opens the writing end.
    let mut input = match File::open(fifo) {
        Ok(file) => file,
        Err(err) => {
            log::warn!("{label}: cannot open {}: {err}", fifo.display());
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
    };
    relay(&mut input, stream, label);
    // EOF from containerd: the process sees its stdin closed.
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn sinks_from_uris() {
        assert_eq!(sink("stdout", "").unwrap(), None);
        assert_eq!(
            sink("stdout", "/run/fifo/x-stdout").unwrap(),
            Some(Sink::Fifo("/run/fifo/x-stdout".into()))
        );
        assert_eq!(
            sink("stdout", "file:///var/log/x.log").unwrap(),
            Some(Sink::File("/var/log/x.log".into()))
        );
        let err = sink("stderr", "binary:///usr/bin/logger?a=b").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("stderr") && text.contains("binary"), "{text}");
    }

    #[test]
    fn stdin_must_be_a_fifo() {
        let paths = StdioPaths {
            stdin: "file:///tmp/in".into(),
            ..Default::default()
        };
        assert!(paths.validate().unwrap_err().to_string().contains("stdin"));
    }

    #[test]
    fn fifo_output_waits_for_a_late_reader() {
        let dir = std::env::temp_dir().join(format!("rvm-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("stdout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No reader yet (containerd restarting): opening and writing neither block nor fail.
        let (mut out, keep) = open_sink("stdout", &Sink::Fifo(fifo.clone())).unwrap();
        assert!(keep.is_some());
        out.write_all(b"while away\n").unwrap();
        // A reader that comes later gets what was written meanwhile.
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        drop(keep);
        let mut got = vec![0u8; 64];
        let n = reader.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"while away\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_fifo_is_named() {
        let err = open_sink("stderr", &Sink::Fifo("/nonexistent/fifo".into())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("stderr") && text.contains("/nonexistent/fifo"),
            "{text}"
        );
    }

    #[test]
    fn output_is_copied_and_drained_after_the_reader_goes() {
        let dir = std::env::temp_dir().join(format!("rvm-stdio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("out.log");
        let (mut agent, shim) = UnixStream::pair().unwrap();
        let (out, keep) = open_sink("stdout", &Sink::File(log.clone())).unwrap();
        assert!(keep.is_none());
        let copier = thread::spawn(move || copy_output(shim, out, "test"));
        agent.write_all(b"hello\n").unwrap();
        drop(agent);
        copier.join().unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hello\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
