//! Hand-built 64-bit guests for tests and the benchmark: an ELF image with one segment of code,
//! loaded and entered at 1 MiB in long mode, as our boot path sets it up.

/// Where the image is loaded and entered.
pub const LOAD_ADDR: u64 = 0x10_0000;

/// A minimal ELF64 executable whose only segment holds `code`.
pub fn elf_image(code: &[u8]) -> Vec<u8> {
    const EHDR_LEN: u16 = 64;
    const PHDR_LEN: u16 = 56;
    const ET_EXEC: u16 = 2;
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    const PF_R_X: u32 = 5;
    let code_offset = u64::from(EHDR_LEN + PHDR_LEN);

    let mut elf = Vec::with_capacity(code_offset as usize + code.len());
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&ET_EXEC.to_le_bytes());
    elf.extend_from_slice(&EM_X86_64.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // entry
    elf.extend_from_slice(&u64::from(EHDR_LEN).to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [EHDR_LEN, PHDR_LEN, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&PT_LOAD.to_le_bytes());
    elf.extend_from_slice(&PF_R_X.to_le_bytes());
    let len = code.len() as u64;
    for word in [code_offset, LOAD_ADDR, LOAD_ADDR, len, len, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    elf
}

/// A minimal bzImage: one setup sector with a boot protocol 2.15 header, then a protected-mode
/// payload whose 64-bit entry point (payload + 0x200) runs `code64`. The 32-bit entry halts.
pub fn bzimage(code64: &[u8]) -> Vec<u8> {
    const SETUP_SECTS: u8 = 1;
    const SETUP_LEN: usize = (SETUP_SECTS as usize + 1) * 512;
    const ENTRY_64_OFFSET: usize = 0x200;
    let mut image = vec![0u8; SETUP_LEN + ENTRY_64_OFFSET];
    image[0x1f1] = SETUP_SECTS;
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes()); // boot_flag
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // version
    image[0x211] = 0x01; // loadflags: LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&(LOAD_ADDR as u32).to_le_bytes()); // code32_start
    image[0x236..0x238].copy_from_slice(&0x0001u16.to_le_bytes()); // xloadflags: 64-bit entry
    image[SETUP_LEN..].fill(0xf4); // 32-bit entry: hlt
    image.extend_from_slice(code64);
    image
}

/// Writes `message` to COM1 byte by byte, then `tail` runs.
fn print_then(message: &str, tail: &[u8]) -> Vec<u8> {
    // The message follows the code; `lea` finds it relative to the next instruction.
    let message_offset = (tail.len() + 8) as u32;
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    code.extend_from_slice(&[0x48, 0x8d, 0x35]); // lea rsi, [rip + message_offset]
    code.extend_from_slice(&message_offset.to_le_bytes());
    code.extend_from_slice(&[
        0xac, // loop: lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz tail
        0xee, // out dx, al
        0xeb, 0xf8, // jmp loop
    ]);
    code.extend_from_slice(tail);
    code.extend_from_slice(message.as_bytes());
    code.push(0);
    code
}

/// Prints `message` on the serial port, then resets through the i8042 (0xfe to port 0x64).
pub fn print_and_reset(message: &str) -> Vec<u8> {
    print_then(
        message,
        &[
            0xb0, 0xfe, // mov al, 0xfe
            0xe6, 0x64, // out 0x64, al
            0xf4, // hlt
            0xeb, 0xfd, // jmp hlt
        ],
    )
}

/// Prints `message`, then halts with interrupts off: the vCPU sleeps in KVM for good.
pub fn print_and_idle(message: &str) -> Vec<u8> {
    print_then(
        message,
        &[
            0xfa, // cli
            0xf4, // hlt
            0xeb, 0xfd, // jmp hlt
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_header_points_at_the_code() {
        let code = print_and_reset("hi");
        let elf = elf_image(&code);
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, LOAD_ADDR);
        let offset = u64::from_le_bytes(elf[64 + 8..64 + 16].try_into().unwrap());
        assert_eq!(&elf[offset as usize..], &code[..]);
    }

    #[test]
    fn bzimage_header_and_entry() {
        let image = bzimage(&[0x90, 0xf4]);
        assert_eq!(&image[0x202..0x206], b"HdrS");
        assert_eq!(image[0x1fe..0x200], [0x55, 0xaa]);
        // Setup is (1 + 1) sectors; the 64-bit entry is 0x200 into the payload.
        assert_eq!(&image[1024 + 0x200..], &[0x90, 0xf4]);
    }

    #[test]
    fn message_follows_the_code() {
        let code = print_and_reset("hi\n");
        assert!(code.ends_with(b"hi\n\0"));
        // lea's displacement is relative to the instruction after it (offset 11).
        let disp = u32::from_le_bytes(code[7..11].try_into().unwrap()) as usize;
        assert_eq!(&code[11 + disp..], b"hi\n\0");
        let idle = print_and_idle("x");
        let disp = u32::from_le_bytes(idle[7..11].try_into().unwrap()) as usize;
        assert_eq!(&idle[11 + disp..], b"x\0");
    }
}
