//! The network namespace the private containerd runs in: created with `ip netns add` under a
//! name of its own, deleted on drop. The CNI bridge, the pods' veths and containerd's streaming
//! server (on this namespace's loopback) all live in it, so nothing the suite does touches the
//! host's interfaces.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// `ip netns add NAME`, then loopback up inside it (via nsenter: `ip netns exec` would
    /// remount /sys).
    pub fn create(name: &str) -> Result<NetNs> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = NetNs { name: name.into() };
        run(ns.enter().args(["ip", "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `nsenter --net=PATH`, ready for the program and its arguments.
    pub fn enter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()));
        cmd
    }

    /// The interface names inside the namespace.
    pub fn links(&self) -> Result<Vec<String>> {
        let out = run(self.enter().args(["ip", "-o", "link", "show"]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a command, returning its stdout or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A TCP connection made from inside the network namespace at `netns` (to its loopback or a
/// pod): a socket belongs to the namespace of the thread that creates it, so a short-lived
/// thread joins the namespace, connects, and hands the socket back.
pub fn connect(netns: &Path, addr: SocketAddr) -> Result<TcpStream> {
    let path = netns.to_path_buf();
    std::thread::spawn(move || -> Result<TcpStream> {
        let ns = std::fs::File::open(&path).with_context(|| format!("open {path:?}"))?;
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .context("setns into the test namespace")?;
        TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
            .with_context(|| format!("connect to {addr} in the test namespace"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))?
}
