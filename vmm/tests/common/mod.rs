//! Helpers shared by the KVM integration tests: hand-built guest images and running the VMM.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // Not every test binary builds images.
pub use vmm::test_guest::elf_image;

pub const VMM: &str = env!("CARGO_BIN_EXE_rust-vm-vmm");

/// Fails (never skips) when this machine has no KVM.
pub fn require_kvm() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: this test needs KVM"
    );
}

/// A scratch directory unique to this test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rust-vm-vmm-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the VMM to completion, failing the test if it takes longer than `limit`.
pub fn run_vmm(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(VMM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the VMM binary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("cannot wait for the VMM"),
        Err(_) => {
            // SAFETY: plain kill(2) of the child we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("the VMM did not exit within {limit:?}");
        }
    }
}

/// A VMM run whose serial output is followed until it contains what the test waits for.
pub struct RunningVmm {
    child: Child,
    output: mpsc::Receiver<Vec<u8>>,
    pub serial: String,
}

impl RunningVmm {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(VMM)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the VMM binary");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            output: rx,
            serial: String::new(),
        }
    }

    /// Reads serial output until `done` says it has everything, or `limit` passes.
    /// Returns whether `done` was satisfied.
    pub fn wait_for(&mut self, limit: Duration, done: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !done(&self.serial) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                // The 8250 console ends lines with CR LF; tests match on LF.
                Ok(bytes) => self.serial.extend(
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .filter(|c| *c != '\r'),
                ),
                Err(_) => return false,
            }
        }
        true
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RunningVmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
