//! Shared by the agent's host-mode and guest-mode tests: create requests and an agent process
//! listening on a Unix socket (busybox bundles, specs and leak checks: rust-vm-test-support).

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;
use rust_vm_protocol::{Client, CreateContainer, RootfsSource};

pub use rust_vm_test_support::{spec_json, BusyboxBundle as Bundle};

/// A busybox bundle for the agent tests.
pub fn bundle() -> Bundle {
    Bundle::new("agent-test")
}

pub fn spec(value: &serde_json::Value) -> Spec {
    serde_json::from_value(value.clone()).expect("test spec parses")
}

pub fn create_request(
    bundle: &Bundle,
    id: &str,
    spec_value: &serde_json::Value,
) -> CreateContainer {
    CreateContainer {
        container_id: id.into(),
        spec: Box::new(spec(spec_value)),
        rootfs: RootfsSource::Directory {
            path: bundle.root(),
        },
        terminal: false,
        console_size: None,
        stdin: false,
    }
}

/// The agent binary in host mode on a Unix socket in `dir`. Stopped with SIGTERM on drop
/// (it removes its containers first), SIGKILL if that does not work.
pub struct Agent {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(dir: &Path, extra: &[&str]) -> Agent {
        let socket = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let addr = format!("unix:{}", socket.display());
        let child = Command::new(env!("CARGO_BIN_EXE_rust-vm-agent"))
            .arg("--listen")
            .arg(&addr)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--log-level", "debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("agent log file"))
            .spawn()
            .expect("starting rust-vm-agent");
        let mut agent = Agent { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("agent exited with {status}:\n{}", agent.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not listen:\n{}",
                agent.log_text()
            );
            thread::sleep(Duration::from_millis(5));
        }
        agent
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr).expect("connecting to the agent")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the agent process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if self.wait_exit(Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn read_all(mut stream: UnixStream) -> String {
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("reading a stream");
    out
}
