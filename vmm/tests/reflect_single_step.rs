//! KVM test: the VMM does not complete an instruction while the guest is single-stepping.
//!
//! The guest sets RFLAGS.TF with `popfq` and runs `fwait` in ring 0. On an instruction-emulating
//! host KVM's emulator cannot run `fwait`; completing it would move RIP on, and with TF set the
//! CPU would then also owe a single-step #DB trap, which the VMM does not fake. So the VM must
//! stop with the reason instead of going on.

mod common;

use std::time::Duration;

use common::{asm_block, require_kvm, run_vmm, write_guest};
use vmm::config::host::HostKind;

const LIMIT: Duration = Duration::from_secs(60);

// The same header and footer as the other hand-assembled guests (reflect_guest.rs): each block
// names its own symbols, which delimit the bytes copied into this test's guest image.
std::arch::global_asm!(
    r##"
    .pushsection .rodata.rvm_single_step_guest, "a"
    .globl rvm_single_step_guest_start
    .globl rvm_single_step_guest_end
rvm_single_step_guest_start:
    pushfq
    or qword ptr [rsp], 0x100
    popfq
    .byte 0x9b
    mov al, 0xfe
    out 0x64, al
2:
    hlt
    jmp 2b
rvm_single_step_guest_end:
    .popsection
"##
);

extern "C" {
    static rvm_single_step_guest_start: u8;
    static rvm_single_step_guest_end: u8;
}

#[test]
#[ignore = "needs /dev/kvm"]
fn fwait_under_single_step_is_not_completed() {
    require_kvm();
    // SAFETY: both symbols delimit one block of bytes in this binary's read-only data.
    let code = unsafe {
        asm_block(
            &raw const rvm_single_step_guest_start,
            &raw const rvm_single_step_guest_end,
        )
    };
    let guest = write_guest("single-step", &code);
    let out = run_vmm(
        &[
            "--kernel",
            &guest,
            "--mem-mib",
            "32",
            "--log-level",
            "info",
            "--reflect-emulation-failures",
            "on",
        ],
        LIMIT,
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("RIP moved past it"),
        "fwait was completed under TF:\n{log}"
    );
    if !HostKind::detect().emulates_guest_ring0() {
        // A real CPU runs fwait and raises the #DB itself; with no IDT the guest then shuts
        // down. Nothing for the VMM to do, which the assertion above checks.
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{log}");
    let expected = "fwait at 0x";
    assert!(log.contains(expected), "no {expected:?} in {log}");
    let expected = "(bytes [9b]) not reflected: RFLAGS.TF is set: a single-step #DB trap would \
                    also be due after the instruction";
    assert!(log.contains(expected), "no {expected:?} in {log}");
}
