//! A process's stdio between containerd's FIFOs and the agent's stream connections.
//!
//! The agent serves each stream of a process on its own connection (`attach`). Streams are
//! attached before the process can write (before `start`), so no output is lost; one thread
//! per stream copies bytes. stdout/stderr copiers drain the agent's stream even when the FIFO
//! reader went away, so a process never blocks on output nobody reads.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rust_vm_protocol::{Client, ClientError, StreamKind};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StdioError {
    #[error("{field} `{uri}`: {scheme} URIs are not supported (use a FIFO or file:// path)")]
    UnsupportedUri {
        field: &'static str,
        uri: String,
        scheme: String,
    },
    #[error("attach {stream} of {process}: {source}")]
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
        if let Some(sink) = sink("stdout", &paths.stdout)? {
            outputs.push((open(StreamKind::Stdout)?, sink, "stdout"));
        }
        // With a terminal, stderr is merged into the terminal's output.
        if !paths.terminal {
            if let Some(sink) = sink("stderr", &paths.stderr)? {
                outputs.push((open(StreamKind::Stderr)?, sink, "stderr"));
            }
        }
        let stdin = if paths.stdin.is_empty() {
            None
        } else {
            Some(Arc::new(open(StreamKind::Stdin)?))
        };

        let (done_tx, finished) = mpsc::channel();
        let count = outputs.len();
        for (stream, sink, name) in outputs {
            let done = done_tx.clone();
            let label = format!("{process} {name}");
            spawn_named(&format!("{name}-copy"), move || {
                copy_output(stream, &sink, &label);
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
        })
    }

    /// Closes the process's stdin (containerd's CloseIO).
    pub fn close_stdin(&self) {
        if let Some(stream) = &self.stdin {
            let _ = stream.shutdown(Shutdown::Write);
        }
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

fn open_sink(sink: &Sink) -> io::Result<File> {
    match sink {
        // Blocks until containerd's reader has the FIFO open, which it has before create.
        Sink::Fifo(path) => OpenOptions::new().write(true).open(path),
        Sink::File(path) => OpenOptions::new().append(true).create(true).open(path),
    }
}

fn copy_output(mut stream: UnixStream, sink: &Sink, label: &str) {
    let mut out = match open_sink(sink) {
        Ok(file) => Some(file),
        Err(err) => {
            log::warn!("{label}: cannot open {sink:?}: {err}; discarding output");
            None
        }
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                log::warn!("{label}: reading from the agent: {err}");
                break;
            }
        };
        if let Some(file) = out.as_mut() {
            if let Err(err) = file.write_all(&buf[..n]) {
                // The reader is gone (e.g. `ctr` detached); keep draining the process.
                log::debug!("{label}: output reader gone: {err}");
                out = None;
            }
        }
    }
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
    let mut writer = stream;
    if let Err(err) = io::copy(&mut input, &mut writer) {
        log::debug!("{label}: {err}");
    }
    // EOF from containerd: the process sees its stdin closed.
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
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
    fn output_is_copied_and_drained_after_the_reader_goes() {
        let dir = std::env::temp_dir().join(format!("rvm-stdio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("out.log");
        let (mut agent, shim) = UnixStream::pair().unwrap();
        let sink = Sink::File(log.clone());
        let copier = thread::spawn(move || copy_output(shim, &sink, "test"));
        agent.write_all(b"hello\n").unwrap();
        drop(agent);
        copier.join().unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hello\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
