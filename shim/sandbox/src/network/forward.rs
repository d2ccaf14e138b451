//! Port forwarding into the VM for CRI PortForward.
//!
//! containerd's CRI plugin (1.6, 1.7) serves PortForward itself: it enters the pod's network
//! namespace and dials `localhost:PORT` there. For a VM pod nothing listens in that namespace
//! (the pod's processes run in the guest), so [`LoopbackForwarder`] catches those connections
//! and carries each one into the guest:
//!
//! * in the pod's namespace it listens on `127.0.0.1:<ephemeral port>` and adds one iptables
//!   rule, `nat OUTPUT -o lo -p tcp -d 127.0.0.0/8 ! --dport <that port> -j REDIRECT`, so a
//!   connection to any port of the namespace's loopback reaches the listener;
//! * for each connection it reads the port the client asked for (`SO_ORIGINAL_DST`), asks the
//!   agent for a `port_forward` stream to `127.0.0.1:PORT` in the guest and copies bytes both
//!   ways. Nothing listening in the guest closes the client's connection.
//!
//! The rule and the listener live in the pod's namespace, which the CNI teardown deletes;
//! [`LoopbackForwarder::stop`] (and drop) removes the rule and closes the listener before that.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use nix::sys::socket::{getsockopt, sockopt};

use super::{in_namespace, NetworkError};

/// Opens the stream into the guest for one forwarded connection to `port`.
pub type Dial = Arc<dyn Fn(u16) -> io::Result<UnixStream> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("network namespace {}: listening on 127.0.0.1 for port forwarding", path.display())]
    Listen { path: PathBuf, source: io::Error },
    #[error("network namespace {}: `iptables {args}`", path.display())]
    Iptables {
        path: PathBuf,
        args: String,
        source: io::Error,
    },
    #[error("network namespace {}", path.display())]
    Namespace { path: PathBuf, source: NetworkError },
}

/// The forwarder of one pod's network namespace (see the module documentation).
pub struct LoopbackForwarder {
    namespace: File,
    path: PathBuf,
    listener: Arc<TcpListener>,
    port: u16,
    accepting: Option<JoinHandle<()>>,
}

impl LoopbackForwarder {
    /// Listens in the namespace `namespace` (opened from `path`), adds the redirect rule and
    /// starts accepting; every connection goes to `dial`.
    pub fn start(
        namespace: &File,
        path: &Path,
        dial: Dial,
    ) -> Result<LoopbackForwarder, ForwardError> {
        let namespace = namespace
            .try_clone()
            .map_err(|source| ForwardError::Listen {
                path: path.to_path_buf(),
                source,
            })?;
        let ns_error = |source| ForwardError::Namespace {
            path: path.to_path_buf(),
            source,
        };
        let owned = path.to_path_buf();
        let listener = in_namespace(&namespace, path, move || -> Result<_, ForwardError> {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| {
                ForwardError::Listen {
                    path: owned.clone(),
                    source,
                }
            })?;
            let port = listener
                .local_addr()
                .map_err(|source| ForwardError::Listen {
                    path: owned.clone(),
                    source,
                })?
                .port();
            iptables(&owned, &rule("-A", port))?;
            Ok((listener, port))
        })
        .map_err(ns_error)??;
        let (listener, port) = listener;
        let listener = Arc::new(listener);
        let accepting = {
            let listener = Arc::clone(&listener);
            thread::Builder::new()
                .name("port-forward".into())
                .spawn(move || accept_loop(&listener, &dial))
                .map_err(|source| ForwardError::Listen {
                    path: path.to_path_buf(),
                    source,
                })?
        };
        Ok(LoopbackForwarder {
            namespace,
            path: path.to_path_buf(),
            listener,
            port,
            accepting: Some(accepting),
        })
    }

    /// The listener's port in the pod's namespace.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Removes the redirect rule and stops accepting (connections being relayed run on until
    /// either side ends them). Idempotent.
    pub fn stop(&mut self) -> Result<(), ForwardError> {
        let Some(accepting) = self.accepting.take() else {
            return Ok(());
        };
        // shutdown(2) on a listening socket wakes the accept(2) in progress with EINVAL.
        // SAFETY: shutdown of a descriptor we own.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = accepting.join();
        let path = self.path.clone();
        let args = rule("-D", self.port);
        in_namespace(&self.namespace, &self.path, move || iptables(&path, &args)).map_err(
            |source| ForwardError::Namespace {
                path: self.path.clone(),
                source,
            },
        )?
    }
}

impl Drop for LoopbackForwarder {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("{}", rust_vm_protocol::Chain(&e));
        }
    }
}

/// The iptables arguments adding (`-A`) or deleting (`-D`) the redirect of loopback TCP to
/// `port` (connections to `port` itself excepted).
fn rule(action: &str, port: u16) -> Vec<String> {
    let port = port.to_string();
    [
        "-w",
        "-t",
        "nat",
        action,
        "OUTPUT",
        "-o",
        "lo",
        "-p",
        "tcp",
        "-d",
        "127.0.0.0/8",
        "!",
        "--dport",
        &port,
        "-j",
        "REDIRECT",
        "--to-ports",
        &port,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs iptables on the calling thread's network namespace.
fn iptables(path: &Path, args: &[String]) -> Result<(), ForwardError> {
    let error = |source| ForwardError::Iptables {
        path: path.to_path_buf(),
        args: args.join(" "),
        source,
    };
    let out = Command::new("iptables")
        .args(args)
        .output()
        .map_err(error)?;
    if !out.status.success() {
        return Err(error(io::Error::other(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))));
    }
    Ok(())
}

fn accept_loop(listener: &TcpListener, dial: &Dial) {
    loop {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Stopped (EINVAL after shutdown), or the socket failed: either way, done.
            Err(e) => {
                log::debug!("port forwarding: accept: {e}");
                return;
            }
        };
        let dial = Arc::clone(dial);
        let spawned = thread::Builder::new()
            .name("forward".into())
            .spawn(move || forward(client, &dial));
        if let Err(e) = spawned {
            log::warn!("port forwarding: cannot start a relay thread: {e}");
        }
    }
}

/// The port a redirected connection was addressed to.
fn original_port(client: &TcpStream) -> io::Result<u16> {
    let dst = getsockopt(client, sockopt::OriginalDst).map_err(io::Error::from)?;
    Ok(u16::from_be(dst.sin_port))
}

fn forward(client: TcpStream, dial: &Dial) {
    let port = match original_port(&client) {
        Ok(port) => port,
        Err(e) => {
            log::warn!("port forwarding: the connection's original port: {e}");
            return;
        }
    };
    let guest = match dial(port) {
        Ok(guest) => guest,
        Err(e) => {
            log::info!("port forwarding to port {port} in the VM: {e}");
            return;
        }
    };
    if let Err(e) = relay(client, guest) {
        log::debug!("port forwarding to port {port} in the VM: {e}");
    }
}

/// Copies both ways until each direction ended, passing each end on as a write shutdown.
fn relay(client: TcpStream, guest: UnixStream) -> io::Result<()> {
    let mut client_reader = client.try_clone()?;
    let mut guest_writer = guest.try_clone()?;
    let inbound = thread::Builder::new()
        .name("forward-in".into())
        .spawn(move || {
            let copied = io::copy(&mut client_reader, &mut guest_writer);
            let _ = guest_writer.shutdown(Shutdown::Write);
            copied
        })?;
    let (mut guest_reader, mut client_writer) = (guest, client);
    let outbound = io::copy(&mut guest_reader, &mut client_writer);
    let _ = client_writer.shutdown(Shutdown::Write);
    let inbound = inbound
        .join()
        .map_err(|_| io::Error::other("the relay thread panicked"))?;
    outbound?;
    inbound?;
    Ok(())
}
