//! KVM test: a hand-written 64-bit guest acts as virtio driver inside the real VMM process. It
//! prints its kernel command line, reads sector 0 through virtio-blk, and answers a host
//! `CONNECT` through virtio-vsock. Register accesses are MMIO exits, queue notifications go
//! through ioeventfds to the VMM's event loop, the block completion comes back as an interrupt
//! through the irqfd, and the vsock host side is the real Unix socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{asm_block, elf_image, require_kvm, scratch_dir, RunningVmm};

// The guest program. Layout in guest RAM: virtio-blk queue 0 at 0x200000 (descriptors, avail
// ring at +0x1000, used ring at +0x2000), its request at 0x203000/0x204000/0x205000; vsock RX,
// TX and event queues at 0x400000, 0x410000 and 0x420000, the RX buffer at 0x430000 and TX
// packets at 0x440000. The block request completes by interrupt: IDT at 0x600000 with vector
// 0x40, IOAPIC pin 5 routed to it, the handler acknowledges InterruptStatus into 0x602000. The
// vsock part polls its used rings. The guest ends with an i8042 reset; any unexpected value
// prints "virtio-guest-FAIL".
std::arch::global_asm!(
    r#"
    .pushsection .rodata.rvm_virtio_guest, "a"
    .globl rvm_virtio_guest_start
    .globl rvm_virtio_guest_end
rvm_virtio_guest_start:
    mov r15, rsi
    mov esi, dword ptr [r15 + 0x228]
    call print_str
    lea rsi, [rip + msg_nl]
    call print_str

    call setup_interrupts
    mov rbx, 0xd0000000
    mov edi, 2
    call check_ident
    call negotiate
    mov ecx, 0
    mov rdi, 0x200000
    call setup_queue
    call driver_ok
    mov rdi, 0x203000
    mov qword ptr [rdi], 0
    mov qword ptr [rdi + 8], 0
    mov rdi, 0x205000
    mov byte ptr [rdi], 0xff
    // Hand-laid descriptor chains (this block request, the vsock RX/TX packets below) repeat the
    // same stores with other addresses, lengths and flags: kept written out, one per chain, so
    // each reads directly against the virtio split-queue layout.
    mov rdi, 0x200000
    mov rax, 0x203000
    mov qword ptr [rdi], rax
    mov dword ptr [rdi + 8], 16
    mov word ptr [rdi + 12], 1
    mov word ptr [rdi + 14], 1
    mov rax, 0x204000
    mov qword ptr [rdi + 16], rax
    mov dword ptr [rdi + 24], 512
    mov word ptr [rdi + 28], 3
    mov word ptr [rdi + 30], 2
    mov rax, 0x205000
    mov qword ptr [rdi + 32], rax
    mov dword ptr [rdi + 40], 1
    mov word ptr [rdi + 44], 2
    mov word ptr [rdi + 46], 0
    mov rdi, 0x201000
    mov word ptr [rdi + 4], 0
    mov word ptr [rdi + 2], 1
    mov dword ptr [rbx + 0x50], 0
wait_irq:
    sti
    hlt
    cli
    mov rdi, 0x602000
    test dword ptr [rdi], 1
    jz wait_irq
    lea rsi, [rip + msg_irq]
    call print_str
    mov rdi, 0x202002
    cmp word ptr [rdi], 1
    jne fail
    mov rdi, 0x205000
    cmp byte ptr [rdi], 0
    jne fail
    mov rsi, 0x204000
    call print_str

    mov rbx, 0xd0001000
    mov edi, 19
    call check_ident
    cmp dword ptr [rbx + 0x100], 3
    jne fail
    call negotiate
    mov ecx, 0
    mov rdi, 0x400000
    call setup_queue
    mov ecx, 1
    mov rdi, 0x410000
    call setup_queue
    mov ecx, 2
    mov rdi, 0x420000
    call setup_queue
    call driver_ok
    mov rdi, 0x400000
    mov rax, 0x430000
    mov qword ptr [rdi], rax
    mov dword ptr [rdi + 8], 4140
    mov word ptr [rdi + 12], 2
    mov rdi, 0x401000
    mov word ptr [rdi + 4], 0
    mov word ptr [rdi + 2], 1
    mov dword ptr [rbx + 0x50], 0
    lea rsi, [rip + msg_ready]
    call print_str

    mov rdi, 0x402002
    mov ax, 1
    call wait_used
    mov rdi, 0x430000
    cmp word ptr [rdi + 30], 1
    jne fail
    cmp dword ptr [rdi + 20], 52
    jne fail
    mov r12d, dword ptr [rdi + 16]
    mov rdi, 0x401000
    mov word ptr [rdi + 6], 0
    mov word ptr [rdi + 2], 2
    mov dword ptr [rbx + 0x50], 0
    mov rdi, 0x440000
    call fill_header
    mov word ptr [rdi + 30], 2
    mov rdi, 0x410000
    mov rax, 0x440000
    mov qword ptr [rdi], rax
    mov dword ptr [rdi + 8], 44
    mov word ptr [rdi + 12], 0
    mov rdi, 0x411000
    mov word ptr [rdi + 4], 0
    mov word ptr [rdi + 2], 1
    mov dword ptr [rbx + 0x50], 1

    mov rdi, 0x402002
    mov ax, 2
    call wait_used
    mov rdi, 0x430000
    cmp word ptr [rdi + 30], 5
    jne fail
    mov ecx, dword ptr [rdi + 24]
    lea rsi, [rdi + 44]
    call print_len

    mov rdi, 0x440100
    call fill_header
    mov word ptr [rdi + 30], 5
    mov dword ptr [rdi + 24], 5
    mov rdi, 0x440200
    mov dword ptr [rdi], 0x676e6f70
    mov byte ptr [rdi + 4], 10
    mov rdi, 0x410000
    mov rax, 0x440100
    mov qword ptr [rdi + 16], rax
    mov dword ptr [rdi + 24], 44
    mov word ptr [rdi + 28], 1
    mov word ptr [rdi + 30], 2
    mov rax, 0x440200
    mov qword ptr [rdi + 32], rax
    mov dword ptr [rdi + 40], 5
    mov word ptr [rdi + 44], 0
    mov rdi, 0x411000
    mov word ptr [rdi + 6], 1
    mov word ptr [rdi + 2], 2
    mov dword ptr [rbx + 0x50], 1
    mov rdi, 0x412002
    mov ax, 2
    call wait_used
    lea rsi, [rip + msg_done]
    call print_str
    jmp reset

setup_interrupts:
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
    lea rax, [rip + irq_handler]
    mov rdi, 0x600400
    // The same IDT-gate stores as reflect_guest.rs's `set_gate`: each guest is one self-contained
    // global_asm! block copied byte for byte into its ELF, so no code is shared between them.
    mov word ptr [rdi], ax
    mov word ptr [rdi + 2], 0x08
    mov word ptr [rdi + 4], 0x8e00
    shr rax, 16
    mov word ptr [rdi + 6], ax
    shr rax, 16
    mov dword ptr [rdi + 8], eax
    mov dword ptr [rdi + 12], 0
    mov rdi, 0x601000
    mov word ptr [rdi], 0xfff
    mov rax, 0x600000
    mov qword ptr [rdi + 2], rax
    lidt [rdi]
    mov rdi, 0xfee000f0
    mov dword ptr [rdi], 0x1ff
    mov rdi, 0xfec00000
    mov dword ptr [rdi], 0x1b
    mov dword ptr [rdi + 0x10], 0
    mov dword ptr [rdi], 0x1a
    mov dword ptr [rdi + 0x10], 0x40
    ret

irq_handler:
    push rax
    push rdi
    mov rdi, 0xd0000000
    mov eax, dword ptr [rdi + 0x60]
    mov dword ptr [rdi + 0x64], eax
    mov rdi, 0x602000
    or dword ptr [rdi], eax
    mov rdi, 0xfee000b0
    mov dword ptr [rdi], 0
    pop rdi
    pop rax
    iretq

check_ident:
    cmp dword ptr [rbx], 0x74726976
    jne fail
    cmp dword ptr [rbx + 4], 2
    jne fail
    cmp dword ptr [rbx + 8], edi
    jne fail
    ret

negotiate:
    mov dword ptr [rbx + 0x70], 0
    mov dword ptr [rbx + 0x70], 1
    mov dword ptr [rbx + 0x70], 3
    mov dword ptr [rbx + 0x24], 1
    mov dword ptr [rbx + 0x20], 1
    mov dword ptr [rbx + 0x24], 0
    mov dword ptr [rbx + 0x20], 0
    mov dword ptr [rbx + 0x70], 11
    cmp dword ptr [rbx + 0x70], 11
    jne fail
    ret

setup_queue:
    mov dword ptr [rbx + 0x30], ecx
    mov dword ptr [rbx + 0x38], 8
    mov dword ptr [rbx + 0x80], edi
    mov dword ptr [rbx + 0x84], 0
    lea eax, [rdi + 0x1000]
    mov dword ptr [rbx + 0x90], eax
    mov dword ptr [rbx + 0x94], 0
    lea eax, [rdi + 0x2000]
    mov dword ptr [rbx + 0xa0], eax
    mov dword ptr [rbx + 0xa4], 0
    mov dword ptr [rbx + 0x44], 1
    ret

driver_ok:
    mov dword ptr [rbx + 0x70], 15
    cmp dword ptr [rbx + 0x70], 15
    jne fail
    ret

wait_used:
    pause
    cmp word ptr [rdi], ax
    jne wait_used
    ret

fill_header:
    mov qword ptr [rdi], 3
    mov qword ptr [rdi + 8], 2
    mov dword ptr [rdi + 16], 52
    mov dword ptr [rdi + 20], r12d
    mov dword ptr [rdi + 24], 0
    mov word ptr [rdi + 28], 1
    mov word ptr [rdi + 30], 0
    mov dword ptr [rdi + 32], 0
    mov dword ptr [rdi + 36], 4096
    mov dword ptr [rdi + 40], 0
    ret

print_str:
    mov dx, 0x3f8
print_str_next:
    lodsb
    test al, al
    jz print_str_end
    out dx, al
    jmp print_str_next
print_str_end:
    ret

print_len:
    mov dx, 0x3f8
    test ecx, ecx
    jz print_len_end
print_len_next:
    lodsb
    out dx, al
    dec ecx
    jnz print_len_next
print_len_end:
    ret

fail:
    lea rsi, [rip + msg_fail]
    call print_str
reset:
    mov al, 0xfe
    out 0x64, al
halt:
    hlt
    jmp halt

msg_nl: .asciz "\n"
msg_irq: .asciz "blk-irq\n"
msg_ready: .asciz "vsock-ready\n"
msg_done: .asciz "virtio-guest-done\n"
msg_fail: .asciz "virtio-guest-FAIL\n"
rvm_virtio_guest_end:
    .popsection
"#
);

extern "C" {
    static rvm_virtio_guest_start: u8;
    static rvm_virtio_guest_end: u8;
}

fn guest_code() -> Vec<u8> {
    // SAFETY: both symbols delimit one block of bytes in this binary's read-only data.
    unsafe {
        asm_block(
            &raw const rvm_virtio_guest_start,
            &raw const rvm_virtio_guest_end,
        )
    }
}

fn read_line(stream: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte).expect("reading the vsock socket") == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
#[ignore = "needs /dev/kvm"]
fn guest_driver_reads_a_disk_and_talks_to_the_host_over_vsock() {
    require_kvm();
    let dir = scratch_dir("virtio-guest");
    let kernel = dir.join("guest.elf");
    std::fs::write(&kernel, elf_image(&guest_code())).unwrap();
    let disk = dir.join("disk.img");
    let mut image = b"sector zero says hello\n\0".to_vec();
    image.resize(8192, 0);
    std::fs::write(&disk, &image).unwrap();
    let uds = dir.join("v.sock");

    let mut vmm = RunningVmm::start(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--mem-mib",
        "64",
        "--block",
        &format!("{},ro", disk.display()),
        "--vsock-cid",
        "3",
        "--vsock-uds",
        uds.to_str().unwrap(),
    ]);
    let ready = vmm.wait_for(Duration::from_secs(60), |s| {
        s.contains("vsock-ready") || s.contains("FAIL")
    });
    assert!(
        ready && !vmm.serial.contains("FAIL"),
        "serial: {}",
        vmm.serial
    );
    let cmdline = vmm.serial.lines().next().unwrap_or_default().to_string();
    assert!(
        cmdline.contains("virtio_mmio.device=4K@0xd0000000:5")
            && cmdline.contains("virtio_mmio.device=4K@0xd0001000:6"),
        "command line: {cmdline}"
    );
    assert!(
        vmm.serial.contains("blk-irq\nsector zero says hello\n"),
        "{}",
        vmm.serial
    );

    let mut host = UnixStream::connect(&uds).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    host.write_all(b"CONNECT 52\n").unwrap();
    let ok = read_line(&mut host);
    let port: u32 = ok
        .strip_prefix("OK ")
        .and_then(|p| p.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("expected `OK <port>`, got {ok:?}; serial: {}", vmm.serial));
    assert!(port >= 1 << 30);

    host.write_all(b"ping\n").unwrap();
    let mut reply = [0u8; 5];
    host.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"pong\n");
    let done = vmm.wait_for(Duration::from_secs(30), |s| {
        s.contains("virtio-guest-done") || s.contains("FAIL")
    });
    assert!(
        done && !vmm.serial.contains("FAIL"),
        "serial: {}",
        vmm.serial
    );
    assert!(vmm.serial.contains("ping\n"), "{}", vmm.serial);

    // The guest reset the machine; the VMM exits and takes its socket with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while uds.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!uds.exists(), "{} left behind", uds.display());
}
