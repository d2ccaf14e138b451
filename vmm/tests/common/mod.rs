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

/// The guest kernel built by guest-kernel/build.sh (or `RUST_VM_KERNEL`); fails when missing.
pub fn kernel_path() -> String {
    let path = std::env::var_os("RUST_VM_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/rust-vm/vmlinux"));
    assert!(
        path.is_file(),
        "guest kernel {} is missing: build it with guest-kernel/build.sh or set RUST_VM_KERNEL",
        path.display()
    );
    path.to_str().unwrap().to_string()
}

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

/// Creates `path` as a sparse file of `len` bytes (a disk or an initrd whose content does not
/// matter).
pub fn sized_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// The bytes a `global_asm!` guest lays down between its start and end symbols.
///
/// # Safety
/// `start` and `end` delimit one block of bytes in this binary's read-only data, `start` first.
pub unsafe fn asm_block(start: *const u8, end: *const u8) -> Vec<u8> {
    // SAFETY: as the caller promises.
    unsafe { std::slice::from_raw_parts(start, end.offset_from(start) as usize).to_vec() }
}

/// Writes `code` as a guest ELF into this test's scratch directory; returns its path.
pub fn write_guest(test: &str, code: &[u8]) -> String {
    let path = scratch_dir(test).join("guest.elf");
    std::fs::write(&path, elf_image(code)).unwrap();
    path.to_str().unwrap().to_string()
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
        Self::start_with_stderr(args, Stdio::inherit())
    }

    /// Like [`RunningVmm::start`], with the VMM's log written to the file `log`.
    pub fn start_logged(args: &[&str], log: &Path) -> Self {
        Self::start_with_stderr(args, std::fs::File::create(log).unwrap().into())
    }

    fn start_with_stderr(args: &[&str], stderr: Stdio) -> Self {
        let mut child = Command::new(VMM)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
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

    /// The exit status, or None if the VMM is still running after `limit` (then killed on drop).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
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
