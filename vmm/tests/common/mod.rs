//! Helpers shared by the KVM integration tests: hand-built guest images and running the VMM.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const VMM: &str = env!("CARGO_BIN_EXE_rust-vm-vmm");
pub const GUEST_LOAD_ADDR: u64 = 0x10_0000;

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

/// A minimal ELF64 executable whose only segment holds `code`, loaded and entered at 1 MiB.
pub fn elf_image(code: &[u8]) -> Vec<u8> {
    const EHDR_LEN: u16 = 64;
    const PHDR_LEN: u16 = 56;
    let code_offset = u64::from(EHDR_LEN + PHDR_LEN);
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&GUEST_LOAD_ADDR.to_le_bytes()); // entry
    elf.extend_from_slice(&u64::from(EHDR_LEN).to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [EHDR_LEN, PHDR_LEN, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [
        code_offset,
        GUEST_LOAD_ADDR,
        GUEST_LOAD_ADDR,
        code.len() as u64,
        code.len() as u64,
        0x1000,
    ] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    elf
}

/// 64-bit code: writes the NUL-terminated `message` byte by byte to COM1, then resets the machine
/// through the i8042 (0xfe to port 0x64).
pub fn serial_then_reset_code(message: &str) -> Vec<u8> {
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x48, 0x8d, 0x35, 0x0f, 0x00, 0x00, 0x00, // lea rsi, [rip + 15]  (the message)
        0xac, // loop: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz done
        0xee, // out dx, al
        0xeb, 0xf8, // jmp loop
        0xb0, 0xfe, // done: mov al, 0xfe
        0xe6, 0x64, // out 0x64, al
        0xf4, // hlt
        0xeb, 0xfd, // jmp hlt
    ];
    code.extend_from_slice(message.as_bytes());
    code.push(0);
    code
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
