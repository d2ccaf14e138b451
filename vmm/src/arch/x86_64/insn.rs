//! Just enough x86 instruction decoding to name the instructions an instruction-emulating KVM is
//! known to fail on (see `emulation`), with their exact length. It is not a general decoder:
//! every other opcode is reported as `Unrecognized`.

use std::fmt;

/// The architectural limit; longer encodings raise #GP.
pub const MAX_INSN_LEN: usize = 15;

/// The code segment's mode, which decides how prefixes and addressing are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMode {
    Bits16,
    Bits32,
    Bits64,
}

/// The prefixes in front of an opcode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefixes {
    /// 0xf0
    pub lock: bool,
    /// 0xf3
    pub rep: bool,
    /// 0xf2
    pub repne: bool,
    /// 0x66
    pub operand_size: bool,
    /// 0x67
    pub address_size: bool,
    /// 0x26, 0x2e, 0x36, 0x3e, 0x64 or 0x65
    pub segment: Option<u8>,
    /// A REX byte (64-bit mode only) directly in front of the opcode.
    pub rex: Option<u8>,
}

impl Prefixes {
    pub fn rex_w(&self) -> bool {
        self.rex.is_some_and(|rex| rex & 0x08 != 0)
    }

    /// No 0x66, 0xf2 or 0xf3: the "NP" encodings of the opcode tables.
    fn no_mandatory(&self) -> bool {
        !(self.operand_size || self.rep || self.repne)
    }

    /// No 0xf2 or 0xf3 (0x66 only changes the operand size).
    fn no_rep(&self) -> bool {
        !(self.rep || self.repne)
    }
}

/// The instructions this decoder knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mnemonic {
    Int3,
    Cmpxchg8b,
    Cmpxchg16b,
    Rdrand,
    Rdseed,
    Rdpid,
    Rdtscp,
    Xsave,
    Xrstor,
    Xsaveopt,
    Xsavec,
    Xsaves,
    Xrstors,
    Xgetbv,
    Xsetbv,
    Clac,
    Stac,
    Popcnt,
    Rdfsbase,
    Rdgsbase,
    Wrfsbase,
    Wrgsbase,
    Fwait,
}

impl Mnemonic {
    pub fn name(self) -> &'static str {
        match self {
            Mnemonic::Int3 => "int3",
            Mnemonic::Cmpxchg8b => "cmpxchg8b",
            Mnemonic::Cmpxchg16b => "cmpxchg16b",
            Mnemonic::Rdrand => "rdrand",
            Mnemonic::Rdseed => "rdseed",
            Mnemonic::Rdpid => "rdpid",
            Mnemonic::Rdtscp => "rdtscp",
            Mnemonic::Xsave => "xsave",
            Mnemonic::Xrstor => "xrstor",
            Mnemonic::Xsaveopt => "xsaveopt",
            Mnemonic::Xsavec => "xsavec",
            Mnemonic::Xsaves => "xsaves",
            Mnemonic::Xrstors => "xrstors",
            Mnemonic::Xgetbv => "xgetbv",
            Mnemonic::Xsetbv => "xsetbv",
            Mnemonic::Clac => "clac",
            Mnemonic::Stac => "stac",
            Mnemonic::Popcnt => "popcnt",
            Mnemonic::Rdfsbase => "rdfsbase",
            Mnemonic::Rdgsbase => "rdgsbase",
            Mnemonic::Wrfsbase => "wrfsbase",
            Mnemonic::Wrgsbase => "wrgsbase",
            Mnemonic::Fwait => "fwait",
        }
    }
}

impl fmt::Display for Mnemonic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an instruction's ModRM operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// No ModRM operand (`int3`, `xgetbv`, ...).
    None,
    Register,
    Memory,
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub mnemonic: Mnemonic,
    pub prefixes: Prefixes,
    pub operand: Operand,
    /// Length in bytes, prefixes included.
    pub len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the instruction continues past the {0} bytes that could be read")]
    Truncated(usize),
    #[error("the encoding is longer than {MAX_INSN_LEN} bytes")]
    TooLong,
    #[error("opcode {0:02x?} is not one this decoder classifies")]
    Unrecognized(Vec<u8>),
}

/// A ModRM byte, split.
#[derive(Clone, Copy)]
struct ModRm {
    mode: u8,
    reg: u8,
    rm: u8,
}

impl ModRm {
    fn new(byte: u8) -> Self {
        Self {
            mode: byte >> 6,
            reg: (byte >> 3) & 7,
            rm: byte & 7,
        }
    }

    fn operand(self) -> Operand {
        if self.mode == 3 {
            Operand::Register
        } else {
            Operand::Memory
        }
    }
}

fn byte_at(bytes: &[u8], at: usize) -> Result<u8, DecodeError> {
    if at >= MAX_INSN_LEN {
        return Err(DecodeError::TooLong);
    }
    bytes
        .get(at)
        .copied()
        .ok_or(DecodeError::Truncated(bytes.len()))
}

/// Bytes after the ModRM byte: SIB and displacement.
fn modrm_tail_len(
    bytes: &[u8],
    modrm_at: usize,
    modrm: ModRm,
    addr16: bool,
) -> Result<usize, DecodeError> {
    if modrm.mode == 3 {
        return Ok(0);
    }
    if addr16 {
        return Ok(match (modrm.mode, modrm.rm) {
            (0, 6) => 2,
            (0, _) => 0,
            (1, _) => 1,
            _ => 2,
        });
    }
    let mut len = 0;
    let mut disp32 = modrm.mode == 2 || (modrm.mode == 0 && modrm.rm == 5);
    if modrm.rm == 4 {
        let sib = byte_at(bytes, modrm_at + 1)?;
        len += 1;
        disp32 |= modrm.mode == 0 && sib & 7 == 5;
    }
    len += match modrm.mode {
        1 => 1,
        _ if disp32 => 4,
        _ => 0,
    };
    Ok(len)
}

/// Decodes the instruction at the start of `bytes`.
pub fn decode(bytes: &[u8], mode: CodeMode) -> Result<Instruction, DecodeError> {
    let mut prefixes = Prefixes::default();
    let mut at = 0;
    let opcode = loop {
        let byte = byte_at(bytes, at)?;
        match byte {
            0xf0 => prefixes.lock = true,
            0xf2 => prefixes.repne = true,
            0xf3 => prefixes.rep = true,
            0x66 => prefixes.operand_size = true,
            0x67 => prefixes.address_size = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => prefixes.segment = Some(byte),
            0x40..=0x4f if mode == CodeMode::Bits64 => {
                prefixes.rex = Some(byte);
                at += 1;
                continue;
            }
            _ => break byte,
        }
        // A REX byte only counts directly in front of the opcode.
        prefixes.rex = None;
        at += 1;
    };
    let addr16 = match mode {
        CodeMode::Bits16 => !prefixes.address_size,
        CodeMode::Bits32 => prefixes.address_size,
        CodeMode::Bits64 => false,
    };
    let unrecognized =
        |len: usize| DecodeError::Unrecognized(bytes[at..(at + len).min(bytes.len())].to_vec());

    if opcode == 0xcc {
        return Ok(Instruction {
            mnemonic: Mnemonic::Int3,
            prefixes,
            operand: Operand::None,
            len: at + 1,
        });
    }
    if opcode == 0x9b {
        return Ok(Instruction {
            mnemonic: Mnemonic::Fwait,
            prefixes,
            operand: Operand::None,
            len: at + 1,
        });
    }
    if opcode != 0x0f {
        return Err(unrecognized(1));
    }
    let second = byte_at(bytes, at + 1)?;
    if !matches!(second, 0x01 | 0xae | 0xb8 | 0xc7) {
        return Err(unrecognized(2));
    }
    let modrm_at = at + 2;
    let modrm = ModRm::new(byte_at(bytes, modrm_at)?);

    if second == 0x01 {
        // Register-only forms named by their whole ModRM byte.
        let mnemonic = match byte_at(bytes, modrm_at)? {
            0xd0 => Mnemonic::Xgetbv,
            0xd1 => Mnemonic::Xsetbv,
            0xf9 => Mnemonic::Rdtscp,
            0xca => Mnemonic::Clac,
            0xcb => Mnemonic::Stac,
            _ => return Err(unrecognized(3)),
        };
        return Ok(Instruction {
            mnemonic,
            prefixes,
            operand: Operand::None,
            len: modrm_at + 1,
        });
    }

    let memory = modrm.mode != 3;
    let np = prefixes.no_mandatory();
    // F3 alone (0x66 may change the operand size).
    let f3 = prefixes.rep && !prefixes.repne;
    let fsgsbase = !memory && f3 && !prefixes.operand_size && mode == CodeMode::Bits64;
    let mnemonic = match (second, modrm.reg) {
        (0xc7, 1) if prefixes.rex_w() => Mnemonic::Cmpxchg16b,
        (0xc7, 1) => Mnemonic::Cmpxchg8b,
        (0xc7, 3) if memory && np => Mnemonic::Xrstors,
        (0xc7, 4) if memory && np => Mnemonic::Xsavec,
        (0xc7, 5) if memory && np => Mnemonic::Xsaves,
        (0xc7, 6) if !memory && prefixes.no_rep() => Mnemonic::Rdrand,
        (0xc7, 7) if !memory && prefixes.no_rep() => Mnemonic::Rdseed,
        (0xc7, 7) if !memory && f3 => Mnemonic::Rdpid,
        (0xb8, _) if f3 => Mnemonic::Popcnt,
        (0xae, 0) if fsgsbase => Mnemonic::Rdfsbase,
        (0xae, 1) if fsgsbase => Mnemonic::Rdgsbase,
        (0xae, 2) if fsgsbase => Mnemonic::Wrfsbase,
        (0xae, 3) if fsgsbase => Mnemonic::Wrgsbase,
        (0xae, 4) if memory && np => Mnemonic::Xsave,
        (0xae, 5) if memory && np => Mnemonic::Xrstor,
        (0xae, 6) if memory && np => Mnemonic::Xsaveopt,
        _ => return Err(unrecognized(3)),
    };
    let len = modrm_at + 1 + modrm_tail_len(bytes, modrm_at, modrm, addr16)?;
    if len > MAX_INSN_LEN {
        return Err(DecodeError::TooLong);
    }
    if len > bytes.len() {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    Ok(Instruction {
        mnemonic,
        prefixes,
        operand: modrm.operand(),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode64(bytes: &[u8]) -> Instruction {
        decode(bytes, CodeMode::Bits64).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"))
    }

    #[test]
    fn int3_with_and_without_prefixes() {
        let insn = decode64(&[0xcc, 0x90, 0x90]);
        assert_eq!(
            (insn.mnemonic, insn.len, insn.operand),
            (Mnemonic::Int3, 1, Operand::None)
        );
        assert_eq!(insn.prefixes, Prefixes::default());
        let insn = decode64(&[0xf0, 0x48, 0xcc]);
        assert_eq!((insn.mnemonic, insn.len), (Mnemonic::Int3, 3));
        assert!(insn.prefixes.lock);
        assert_eq!(decode(&[0x66, 0xcc], CodeMode::Bits16).unwrap().len, 2);
    }

    #[test]
    fn lock_cmpxchg16b_and_cmpxchg8b() {
        // lock cmpxchg16b [rdi]
        let insn = decode64(&[0xf0, 0x48, 0x0f, 0xc7, 0x0f]);
        assert_eq!(insn.mnemonic, Mnemonic::Cmpxchg16b);
        assert_eq!((insn.len, insn.operand), (5, Operand::Memory));
        assert!(insn.prefixes.lock && insn.prefixes.rex_w());
        // lock cmpxchg16b [rsp+0x10]: SIB and disp8
        let insn = decode64(&[0xf0, 0x48, 0x0f, 0xc7, 0x4c, 0x24, 0x10, 0xcc]);
        assert_eq!((insn.mnemonic, insn.len), (Mnemonic::Cmpxchg16b, 7));
        // cmpxchg16b [rip+disp32]
        let insn = decode64(&[0x48, 0x0f, 0xc7, 0x0d, 1, 2, 3, 4]);
        assert_eq!((insn.mnemonic, insn.len), (Mnemonic::Cmpxchg16b, 8));
        // Without REX.W it is cmpxchg8b; with REX.W not last, too.
        let insn = decode64(&[0xf0, 0x0f, 0xc7, 0x0e]);
        assert_eq!((insn.mnemonic, insn.len), (Mnemonic::Cmpxchg8b, 4));
        let insn = decode64(&[0x48, 0xf0, 0x0f, 0xc7, 0x0e]);
        assert_eq!(insn.mnemonic, Mnemonic::Cmpxchg8b);
        assert_eq!(insn.prefixes.rex, None);
        // 0x48 is dec eax outside 64-bit mode, not REX.
        assert!(matches!(
            decode(&[0x48, 0x0f, 0xc7, 0x0e], CodeMode::Bits32),
            Err(DecodeError::Unrecognized(_))
        ));
        // Register form: decoded, so the caller can raise #UD.
        let insn = decode64(&[0x48, 0x0f, 0xc7, 0xc9]);
        assert_eq!(
            (insn.mnemonic, insn.operand, insn.len),
            (Mnemonic::Cmpxchg16b, Operand::Register, 4)
        );
    }

    #[test]
    fn rdrand_rdseed_rdpid() {
        // rdrand eax / rdrand rax / rdrand ax
        assert_eq!(decode64(&[0x0f, 0xc7, 0xf0]).mnemonic, Mnemonic::Rdrand);
        assert_eq!(decode64(&[0x48, 0x0f, 0xc7, 0xf0]).len, 4);
        assert_eq!(
            decode64(&[0x66, 0x0f, 0xc7, 0xf0]).mnemonic,
            Mnemonic::Rdrand
        );
        // rdseed r8
        let insn = decode64(&[0x49, 0x0f, 0xc7, 0xf8]);
        assert_eq!((insn.mnemonic, insn.len), (Mnemonic::Rdseed, 4));
        // rdpid rax
        assert_eq!(
            decode64(&[0xf3, 0x0f, 0xc7, 0xf8]).mnemonic,
            Mnemonic::Rdpid
        );
        // vmptrld [rax] (0f c7 /6 memory) and senduipi (f3 0f c7 /6 register) are not ours.
        assert!(decode(&[0x0f, 0xc7, 0x30], CodeMode::Bits64).is_err());
        assert!(decode(&[0xf3, 0x0f, 0xc7, 0xf0], CodeMode::Bits64).is_err());
    }

    #[test]
    fn xsave_family() {
        // xrstor [rsp]
        let insn = decode64(&[0x0f, 0xae, 0x2c, 0x24]);
        assert_eq!((insn.mnemonic, insn.len), (Mnemonic::Xrstor, 4));
        // xrstors64 [rdi]
        let insn = decode64(&[0x48, 0x0f, 0xc7, 0x1f]);
        assert_eq!((insn.mnemonic, insn.len), (Mnemonic::Xrstors, 4));
        // xsaves64 [rdi+0x40], xsavec [rdi], xsave [rbx+disp32], xsaveopt [rdi]
        assert_eq!(
            decode64(&[0x48, 0x0f, 0xc7, 0x6f, 0x40]).mnemonic,
            Mnemonic::Xsaves
        );
        assert_eq!(decode64(&[0x0f, 0xc7, 0x27]).mnemonic, Mnemonic::Xsavec);
        let insn = decode64(&[0x0f, 0xae, 0xa3, 0, 1, 0, 0]);
        assert_eq!((insn.mnemonic, insn.len), (Mnemonic::Xsave, 7));
        assert_eq!(decode64(&[0x0f, 0xae, 0x37]).mnemonic, Mnemonic::Xsaveopt);
        // xgetbv, xsetbv, rdtscp
        assert_eq!(decode64(&[0x0f, 0x01, 0xd0]).mnemonic, Mnemonic::Xgetbv);
        assert_eq!(decode64(&[0x0f, 0x01, 0xd1]).len, 3);
        assert_eq!(decode64(&[0x0f, 0x01, 0xf9]).mnemonic, Mnemonic::Rdtscp);
        // lfence (0f ae /5 register) and clwb (66 0f ae /6) are not ours.
        assert!(decode(&[0x0f, 0xae, 0xe8], CodeMode::Bits64).is_err());
        assert!(decode(&[0x66, 0x0f, 0xae, 0x37], CodeMode::Bits64).is_err());
    }

    #[test]
    fn smap_popcnt_fsgsbase() {
        assert_eq!(decode64(&[0x0f, 0x01, 0xca]).mnemonic, Mnemonic::Clac);
        assert_eq!(decode64(&[0x0f, 0x01, 0xcb]).mnemonic, Mnemonic::Stac);
        // popcnt rax, [rdi+8] / popcnt eax, ecx; without F3 0f b8 is jmpe (not ours).
        let insn = decode64(&[0xf3, 0x48, 0x0f, 0xb8, 0x47, 0x08]);
        assert_eq!(
            (insn.mnemonic, insn.len, insn.operand),
            (Mnemonic::Popcnt, 6, Operand::Memory)
        );
        assert_eq!(
            decode64(&[0xf3, 0x0f, 0xb8, 0xc1]).operand,
            Operand::Register
        );
        assert!(decode(&[0x0f, 0xb8, 0xc1], CodeMode::Bits64).is_err());
        // rdgsbase rax, wrfsbase r8, wrgsbase rdi
        assert_eq!(
            decode64(&[0xf3, 0x48, 0x0f, 0xae, 0xc8]).mnemonic,
            Mnemonic::Rdgsbase
        );
        assert_eq!(
            decode64(&[0xf3, 0x49, 0x0f, 0xae, 0xd0]).mnemonic,
            Mnemonic::Wrfsbase
        );
        assert_eq!(decode64(&[0xf3, 0x48, 0x0f, 0xae, 0xdf]).len, 5);
        assert_eq!(
            decode64(&[0xf3, 0x0f, 0xae, 0xc0]).mnemonic,
            Mnemonic::Rdfsbase
        );
        // Only 64-bit mode has them.
        assert!(decode(&[0xf3, 0x0f, 0xae, 0xc0], CodeMode::Bits32).is_err());
    }

    #[test]
    fn fwait() {
        assert_eq!(decode64(&[0x9b, 0x31, 0xc0]).mnemonic, Mnemonic::Fwait);
        assert_eq!(decode64(&[0x9b]).len, 1);
        // 9b in front of an x87 opcode is a separate instruction (fwait, then the no-wait form).
        assert_eq!(decode64(&[0x9b, 0xdb, 0xe3]).len, 1);
    }

    #[test]
    fn sixteen_bit_addressing() {
        // xrstor [bp+si+disp8] with 16-bit addresses; [disp16].
        assert_eq!(
            decode(&[0x0f, 0xae, 0x6a, 0x10], CodeMode::Bits16)
                .unwrap()
                .len,
            4
        );
        assert_eq!(
            decode(&[0x0f, 0xae, 0x2e, 0x00, 0x10], CodeMode::Bits16)
                .unwrap()
                .len,
            5
        );
        // 0x67 switches a 32-bit segment to 16-bit addressing.
        assert_eq!(
            decode(&[0x67, 0x0f, 0xae, 0x2e, 0, 0x10], CodeMode::Bits32)
                .unwrap()
                .len,
            6
        );
    }

    #[test]
    fn short_long_and_unknown_input() {
        assert_eq!(
            decode(&[], CodeMode::Bits64),
            Err(DecodeError::Truncated(0))
        );
        assert_eq!(
            decode(&[0xf0, 0x48, 0x0f, 0xc7], CodeMode::Bits64),
            Err(DecodeError::Truncated(4))
        );
        // SIB announced, missing.
        assert_eq!(
            decode(&[0x0f, 0xae, 0x2c], CodeMode::Bits64),
            Err(DecodeError::Truncated(3))
        );
        // Displacement cut short.
        assert_eq!(
            decode(&[0x0f, 0xae, 0xab, 1, 2], CodeMode::Bits64),
            Err(DecodeError::Truncated(5))
        );
        assert_eq!(
            decode(&[0x66; 20], CodeMode::Bits64),
            Err(DecodeError::TooLong)
        );
        let mut long = vec![0x3e; 12];
        long.extend_from_slice(&[0x0f, 0xae, 0xab, 1, 2, 3, 4]);
        assert_eq!(decode(&long, CodeMode::Bits64), Err(DecodeError::TooLong));
        assert_eq!(
            decode(&[0x90, 0x90], CodeMode::Bits64),
            Err(DecodeError::Unrecognized(vec![0x90]))
        );
        assert_eq!(
            decode(&[0x0f, 0x0b], CodeMode::Bits64),
            Err(DecodeError::Unrecognized(vec![0x0f, 0x0b]))
        );
    }
}
