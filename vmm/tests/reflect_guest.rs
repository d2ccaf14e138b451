//! KVM tests of emulation-failure reflection with a hand-written 64-bit guest.
//!
//! The guest installs #BP, #UD and #NM handlers, then runs in ring 0: `int3`, `lock cmpxchg16b`
//! (CPUID.CX16 hidden by the conservative template), `xrstor` (CR4.OSXSAVE clear), `fwait` with
//! nothing pending (it completes) and `fwait` with CR0.TS and MP set (#NM; the handler clears TS
//! and the `fwait` runs again). On an
//! instruction-emulating host (PVM) KVM's emulator fails on all three and the VMM delivers the
//! exception each architecturally raises; the guest's handlers print `#BP` / `#UD`, and the
//! #UD handler moves past the faulting instruction (the guest's choice, like a kernel's fixup).
//! On hardware KVM the CPU raises the same exceptions itself and the output is the same, except
//! that cx16 hiding does not stop a real CPU from running `cmpxchg16b`.

mod common;

use std::time::Duration;

use common::{asm_block, require_kvm, run_vmm, write_guest};
use vmm::config::host::HostKind;

const LIMIT: Duration = Duration::from_secs(60);

std::arch::global_asm!(
    r##"
    .pushsection .rodata.rvm_reflect_guest, "a"
    .globl rvm_reflect_guest_start
    .globl rvm_reflect_guest_end
rvm_reflect_guest_start:
    lea rax, [rip + bp_handler]
    mov rdi, 0x300030
    call set_gate
    lea rax, [rip + ud_handler]
    mov rdi, 0x300060
    call set_gate
    lea rax, [rip + nm_handler]
    mov rdi, 0x300070
    call set_gate
    mov rdi, 0x301000
    mov word ptr [rdi], 0x7f
    mov rax, 0x300000
    mov qword ptr [rdi + 2], rax
    lidt [rdi]

    .byte 0xcc
    lea rsi, [rip + msg_after_int3]
    call print_str

    mov rdi, 0x200000
    mov r15, 5
    .byte 0xf0, 0x48, 0x0f, 0xc7, 0x0f
    lea rsi, [rip + msg_after_cmpxchg16b]
    call print_str

    mov r15, 3
    .byte 0x0f, 0xae, 0x2f
    lea rsi, [rip + msg_after_xrstor]
    call print_str

    .byte 0x9b
    lea rsi, [rip + msg_after_fwait]
    call print_str

    mov rax, cr0
    or rax, 0xa
    mov cr0, rax
    .byte 0x9b
    lea rsi, [rip + msg_after_fwait_ts]
    call print_str

    mov al, 0xfe
    out 0x64, al
2:
    hlt
    jmp 2b

set_gate:
    mov word ptr [rdi], ax
    mov word ptr [rdi + 2], 0x08
    mov word ptr [rdi + 4], 0x8e00
    shr rax, 16
    mov word ptr [rdi + 6], ax
    shr rax, 16
    mov dword ptr [rdi + 8], eax
    mov dword ptr [rdi + 12], 0
    ret

print_str:
    push rax
    push rdx
    mov dx, 0x3f8
3:
    lodsb
    test al, al
    jz 4f
    out dx, al
    jmp 3b
4:
    pop rdx
    pop rax
    ret

bp_handler:
    push rsi
    lea rsi, [rip + msg_bp]
    call print_str
    pop rsi
    iretq

ud_handler:
    push rsi
    lea rsi, [rip + msg_ud]
    call print_str
    pop rsi
    add qword ptr [rsp], r15
    iretq

nm_handler:
    push rsi
    lea rsi, [rip + msg_nm]
    call print_str
    pop rsi
    clts
    iretq

msg_bp: .asciz "#BP\n"
msg_ud: .asciz "#UD\n"
msg_after_int3: .asciz "after int3\n"
msg_after_cmpxchg16b: .asciz "after cmpxchg16b\n"
msg_after_xrstor: .asciz "after xrstor\n"
msg_after_fwait: .asciz "after fwait\n"
msg_nm: .asciz "#NM\n"
msg_after_fwait_ts: .asciz "after fwait with TS\n"
rvm_reflect_guest_end:
    .popsection
"##
);

extern "C" {
    static rvm_reflect_guest_start: u8;
    static rvm_reflect_guest_end: u8;
}

fn guest_image(test: &str) -> String {
    // SAFETY: both symbols delimit one block of bytes in this binary's read-only data.
    let code = unsafe {
        asm_block(
            &raw const rvm_reflect_guest_start,
            &raw const rvm_reflect_guest_end,
        )
    };
    write_guest(test, &code)
}

fn run(test: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    require_kvm();
    let guest = guest_image(test);
    let mut args = vec!["--kernel", &guest, "--mem-mib", "32", "--log-level", "info"];
    args.extend_from_slice(extra);
    let out = run_vmm(&args, LIMIT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FWAIT_PART: &str = "after fwait\n#NM\nafter fwait with TS\n";
const ALL_HANDLED: &str = "#BP\nafter int3\n#UD\nafter cmpxchg16b\n#UD\nafter xrstor\n\
                           after fwait\n#NM\nafter fwait with TS\n";

#[test]
#[ignore = "needs /dev/kvm"]
fn int3_and_hidden_instructions_reach_the_guest_handlers() {
    let (code, serial, log) = run(
        "reflect-on",
        &[
            "--cpu-template",
            "conservative",
            "--reflect-emulation-failures",
        ],
    );
    if !HostKind::detect().emulates_guest_ring0() {
        // A real CPU runs cmpxchg16b whatever CPUID says.
        assert_eq!(code, Some(0), "{log}");
        let expected =
            format!("#BP\nafter int3\nafter cmpxchg16b\n#UD\nafter xrstor\n{FWAIT_PART}");
        assert_eq!(serial, expected);
        return;
    }
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(serial, ALL_HANDLED, "{log}");
    for expected in [
        "cannot run int3 at 0x1",
        "delivered vector 3 to the guest (trap)",
        "cannot run cmpxchg16b at 0x1",
        "(bytes [f0, 48, 0f, c7, 0f]); delivered vector 6 to the guest (fault: CPUID.0x1.0:Ecx.cx16[bit 13] is 0 for this vCPU)",
        "cannot run xrstor at 0x1",
        "(bytes [0f, ae, 2f]); delivered vector 6 to the guest (fault: CR4.OSXSAVE is clear)",
        "(bytes [9b]); on this vCPU it changes nothing but RIP: RIP moved past it",
        "delivered vector 7 to the guest (fault: CR0.MP and CR0.TS are set)",
        "6 emulation failure(s) reflected: int3 at 0x1",
    ] {
        assert!(log.contains(expected), "no {expected:?} in {log}");
    }
    assert!(!log.contains("disagree"), "{log}");
}

#[test]
#[ignore = "needs /dev/kvm"]
fn without_reflection_an_emulation_failure_stops_the_vm() {
    let (code, serial, log) = run("reflect-off", &["--reflect-emulation-failures", "off"]);
    if !HostKind::detect().emulates_guest_ring0() {
        assert_eq!(code, Some(0), "{log}");
        assert!(serial.starts_with("#BP\nafter int3\n"), "{serial}");
        return;
    }
    assert_eq!(code, Some(2), "{log}");
    assert_eq!(serial, "");
    for expected in [
        "KVM_EXIT_INTERNAL_ERROR suberror 1 (emulation failure)",
        "code at rip",
        "[cc, 48, 8d, 35,",
        "rip=0x00000000001",
        "cr4=",
    ] {
        assert!(log.contains(expected), "no {expected:?} in {log}");
    }
    assert!(!log.contains("reflected"), "{log}");
}

#[test]
#[ignore = "needs /dev/kvm"]
fn an_instruction_the_vcpu_supports_is_not_reflected() {
    // Shaped like the tests above on purpose: another case (template, flags, expected log) of
    // the same run-and-compare check, which `run` and the shared constants already factor out.
    // The host template shows cx16: cmpxchg16b is valid, so only a CPU could run it.
    let (code, serial, log) = run(
        "reflect-valid",
        &[
            "--cpu-template",
            "host",
            "--reflect-emulation-failures",
            "on",
        ],
    );
    if !HostKind::detect().emulates_guest_ring0() {
        let expected =
            format!("#BP\nafter int3\nafter cmpxchg16b\n#UD\nafter xrstor\n{FWAIT_PART}");
        assert_eq!((code, serial), (Some(0), expected), "{log}");
        return;
    }
    assert_eq!(code, Some(2), "{log}");
    assert_eq!(serial, "#BP\nafter int3\n");
    let expected = "(bytes [f0, 48, 0f, c7, 0f]) not reflected: cmpxchg16b is valid here: \
                    CPUID.0x1.0:Ecx.cx16[bit 13] all set";
    assert!(log.contains(expected), "no {expected:?} in {log}");
    assert!(log.contains("KVM_EXIT_INTERNAL_ERROR suberror 1"), "{log}");
}
