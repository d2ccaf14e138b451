//! A minimal initramfs for boot tests and the boot benchmark: `/init` is a hand-assembled static
//! x86-64 Linux program that writes `INIT_MARKER` to the console and reboots the guest, so the VMM
//! exits 0. Built in memory: no compiler, cpio or root needed.

/// What `/init` prints, on a line of its own.
pub const INIT_MARKER: &str = "RUST-VM-INIT-REACHED";

/// Where the program is loaded in the guest process.
const INIT_VADDR: u64 = 0x40_0000;
const ELF_HEADERS_LEN: usize = 64 + 56;

const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFREG: u32 = 0o100_000;

/// The code of `/init`: write(1, marker, len); reboot(RESTART); loop.
fn init_code() -> Vec<u8> {
    let message = format!("{INIT_MARKER}\n");
    let len = message.len() as u32;
    let mut tail = vec![0xba]; // mov edx, len
    tail.extend_from_slice(&len.to_le_bytes());
    tail.extend_from_slice(&[
        0x0f, 0x05, // syscall (write)
        0xb8, 0xa9, 0x00, 0x00, 0x00, // mov eax, 169 (reboot)
        0xbf, 0xad, 0xde, 0xe1, 0xfe, // mov edi, LINUX_REBOOT_MAGIC1
        0xbe, 0x69, 0x19, 0x12, 0x28, // mov esi, LINUX_REBOOT_MAGIC2
        0xba, 0x67, 0x45, 0x23, 0x01, // mov edx, LINUX_REBOOT_CMD_RESTART
        0x0f, 0x05, // syscall (reboot)
        0xeb, 0xfe, // jmp .
    ]);
    let mut code = vec![
        0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (write)
        0xbf, 0x01, 0x00, 0x00, 0x00, // mov edi, 1 (stdout: /dev/console)
        0x48, 0x8d, 0x35, // lea rsi, [rip + disp32]: the message after the code
    ];
    code.extend_from_slice(&(tail.len() as u32).to_le_bytes());
    code.extend_from_slice(&tail);
    code.extend_from_slice(message.as_bytes());
    code
}

/// A static ELF64 executable mapping itself (headers included) at `INIT_VADDR`.
pub fn init_program() -> Vec<u8> {
    const ET_EXEC: u16 = 2;
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    const PF_R_X: u32 = 5;
    let code = init_code();
    let total = (ELF_HEADERS_LEN + code.len()) as u64;
    let entry = INIT_VADDR + ELF_HEADERS_LEN as u64;

    let mut elf = Vec::with_capacity(total as usize);
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&ET_EXEC.to_le_bytes());
    elf.extend_from_slice(&EM_X86_64.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers right after this header
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&PT_LOAD.to_le_bytes());
    elf.extend_from_slice(&PF_R_X.to_le_bytes());
    // File offset 0 at INIT_VADDR: offset and address agree modulo the page size, as mmap needs.
    for word in [0, INIT_VADDR, INIT_VADDR, total, total, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    elf
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// One entry of a "newc" cpio archive.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// An uncompressed cpio with `/dev/console` and `/init` (uncompressed: on an instruction-emulating
/// host inflating costs seconds of emulated guest time, see docs/pvm-host-boot.md).
pub fn initramfs() -> Vec<u8> {
    let mut out = Vec::new();
    cpio_entry(&mut out, 1, "dev", S_IFDIR | 0o755, (0, 0), &[]);
    cpio_entry(&mut out, 2, "dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    cpio_entry(
        &mut out,
        3,
        "init",
        S_IFREG | 0o755,
        (0, 0),
        &init_program(),
    );
    cpio_entry(&mut out, 0, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn init_is_a_mappable_static_elf() {
        let elf = init_program();
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64_at(&elf, 24);
        assert_eq!(entry, INIT_VADDR + ELF_HEADERS_LEN as u64);
        let (offset, vaddr, filesz) = (u64_at(&elf, 72), u64_at(&elf, 80), u64_at(&elf, 96));
        assert_eq!(offset % 0x1000, vaddr % 0x1000);
        assert_eq!(filesz, elf.len() as u64);
        // The lea's displacement lands on the marker.
        let code = &elf[ELF_HEADERS_LEN..];
        let disp = u32::from_le_bytes(code[13..17].try_into().unwrap()) as usize;
        assert!(code[17 + disp..].starts_with(INIT_MARKER.as_bytes()));
        let len = u32::from_le_bytes(code[18..22].try_into().unwrap()) as usize;
        assert_eq!(&code[17 + disp + len - 1..], b"\n");
    }

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let archive = initramfs();
        let mut at = 0;
        let mut names = Vec::new();
        while at < archive.len() {
            assert_eq!(&archive[at..at + 6], b"070701", "entry at {at}");
            let field = |i: usize| {
                let text = std::str::from_utf8(&archive[at + 6 + i * 8..at + 14 + i * 8]).unwrap();
                usize::from_str_radix(text, 16).unwrap()
            };
            let (mode, filesize, rdev, namesize) =
                (field(1), field(6), (field(9), field(10)), field(11));
            let name = std::str::from_utf8(&archive[at + 110..at + 110 + namesize - 1]).unwrap();
            names.push((name.to_string(), mode, rdev));
            let data_at = (at + 110 + namesize).next_multiple_of(4);
            if name == "init" {
                assert_eq!(&archive[data_at..data_at + filesize], &init_program()[..]);
            }
            at = (data_at + filesize).next_multiple_of(4);
        }
        assert_eq!(at, archive.len());
        let names: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "TRAILER!!!"]);
    }
}
