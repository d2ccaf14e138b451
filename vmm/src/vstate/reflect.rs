//! Emulation-failure reflection (docs/vmm-emulation-reflection.md).
//!
//! On an instruction-emulating KVM (PVM running a guest kernel that is not PVM-aware), guest
//! ring 0 goes through KVM's instruction emulator, which lacks some instructions and then exits
//! with KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION. Where the architecture defines the
//! instruction's outcome on this vCPU as an exception (`arch::emulation`), the `Reflector`
//! delivers that exception with KVM_SET_VCPU_EVENTS and the guest continues; it never skips an
//! instruction or fakes its effect. Hardware KVM never needs this.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_regs, kvm_sregs, kvm_vcpu_events, KVM_MAX_CPUID_ENTRIES,
    KVM_VCPUEVENT_VALID_SHADOW,
};
use kvm_ioctls::VcpuFd;

use crate::arch::emulation::{classify, GuestCpu, Outcome, UD_VECTOR};
use crate::arch::insn::{decode, CodeMode, DecodeError, Mnemonic, MAX_INSN_LEN};
use crate::arch::page_walk::{read_linear, translate, PagingRegs, WalkError};
use crate::logger::guest_warn;
use crate::GuestMemory;

const CR0_PE: u64 = 1;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;

/// How many distinct (address, instruction) cases a [`ReflectionLog`] keeps apart; the guest
/// chooses the addresses, so the rest are only counted.
pub const MAX_REFLECTION_CASES: usize = 64;

/// The emulation failures reflected in one VM: each instruction address is logged once and
/// counted, up to [`MAX_REFLECTION_CASES`] of them; later new ones are counted together.
#[derive(Debug, Default)]
pub struct ReflectionLog {
    cases: Mutex<Cases>,
}

#[derive(Debug, Default)]
struct Cases {
    apart: BTreeMap<(u64, Mnemonic), u64>,
    /// Reflections at addresses beyond the cap.
    others: u64,
}

impl ReflectionLog {
    /// Counts a reflection; true the first time this instruction at this address is seen (and
    /// still kept apart).
    fn record(&self, rip: u64, mnemonic: Mnemonic) -> bool {
        let mut cases = self.cases.lock().unwrap_or_else(|e| e.into_inner());
        let full = cases.apart.len() >= MAX_REFLECTION_CASES;
        match cases.apart.get_mut(&(rip, mnemonic)) {
            Some(count) => {
                *count += 1;
                false
            }
            None if full => {
                cases.others += 1;
                false
            }
            None => {
                cases.apart.insert((rip, mnemonic), 1);
                true
            }
        }
    }

    /// (RIP, instruction, times reflected), by address, for the cases kept apart.
    pub fn cases(&self) -> Vec<(u64, Mnemonic, u64)> {
        let cases = self.cases.lock().unwrap_or_else(|e| e.into_inner());
        cases
            .apart
            .iter()
            .map(|(&(rip, m), &n)| (rip, m, n))
            .collect()
    }

    /// Reflections at addresses past the first [`MAX_REFLECTION_CASES`].
    pub fn others(&self) -> u64 {
        self.cases.lock().unwrap_or_else(|e| e.into_inner()).others
    }

    pub fn total(&self) -> u64 {
        self.cases().iter().map(|c| c.2).sum::<u64>() + self.others()
    }
}

impl fmt::Display for ReflectionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cases = self.cases();
        write!(f, "{} emulation failure(s) reflected", self.total())?;
        for (i, (rip, mnemonic, count)) in cases.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{mnemonic} at {rip:#x} x{count}")?;
        }
        match self.others() {
            0 => Ok(()),
            n => write!(f, ", {n} at other addresses"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReflectError {
    #[error("{0} failed: {1}")]
    Ioctl(&'static str, kvm_ioctls::Error),
    #[error("cannot read the instruction at {linear:#x}")]
    Fetch { linear: u64, source: WalkError },
    #[error("instruction at {linear:#x} (bytes {bytes:02x?}) not reflected")]
    Decode {
        linear: u64,
        bytes: Vec<u8>,
        source: DecodeError,
    },
    #[error("{mnemonic} at {linear:#x} (bytes {bytes:02x?}) not reflected: {reason}")]
    NotReflectable {
        mnemonic: Mnemonic,
        linear: u64,
        bytes: Vec<u8>,
        reason: String,
    },
}

/// Reflects one vCPU's emulation failures.
pub struct Reflector {
    cpuid: Vec<kvm_cpuid_entry2>,
    log: Arc<ReflectionLog>,
}

/// The mode the code segment runs in.
fn code_mode(sregs: &kvm_sregs) -> CodeMode {
    if sregs.cr0 & CR0_PE == 0 {
        CodeMode::Bits16
    } else if sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0 {
        CodeMode::Bits64
    } else if sregs.cs.db != 0 {
        CodeMode::Bits32
    } else {
        CodeMode::Bits16
    }
}

/// The linear address of `offset` in the code segment.
fn code_linear(sregs: &kvm_sregs, mode: CodeMode, offset: u64) -> u64 {
    match mode {
        CodeMode::Bits64 => offset,
        CodeMode::Bits32 => sregs.cs.base.wrapping_add(offset & 0xffff_ffff) & 0xffff_ffff,
        CodeMode::Bits16 => sregs.cs.base.wrapping_add(offset & 0xffff) & 0xffff_ffff,
    }
}

fn next_ip(mode: CodeMode, rip: u64, len: usize) -> u64 {
    let next = rip.wrapping_add(len as u64);
    match mode {
        CodeMode::Bits64 => next,
        CodeMode::Bits32 => next & 0xffff_ffff,
        CodeMode::Bits16 => next & 0xffff,
    }
}

fn current_privilege_level(sregs: &kvm_sregs) -> u8 {
    if sregs.cr0 & CR0_PE == 0 {
        0
    } else {
        (sregs.cs.selector & 3) as u8
    }
}

impl Reflector {
    /// For a configured vCPU: takes the CPUID KVM reports back, which is what the guest sees
    /// (PVM forces some host bits on whatever the template set).
    pub fn new(fd: &VcpuFd, log: Arc<ReflectionLog>) -> Result<Self, ReflectError> {
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| ReflectError::Ioctl("KVM_GET_CPUID2", e))?;
        Ok(Self {
            cpuid: cpuid.as_slice().to_vec(),
            log,
        })
    }

    /// Handles an emulation failure of vCPU `index`: delivers the exception the failed
    /// instruction raises, or says why there is none.
    pub fn reflect(&self, index: u8, fd: &VcpuFd, mem: &GuestMemory) -> Result<(), ReflectError> {
        let mut regs = fd
            .get_regs()
            .map_err(|e| ReflectError::Ioctl("KVM_GET_REGS", e))?;
        let sregs = fd
            .get_sregs()
            .map_err(|e| ReflectError::Ioctl("KVM_GET_SREGS", e))?;
        let mode = code_mode(&sregs);
        let linear = code_linear(&sregs, mode, regs.rip);
        let paging = PagingRegs::from(&sregs);
        cross_check_translation(fd, mem, &paging, linear);
        let mut buf = [0u8; MAX_INSN_LEN];
        let read = read_linear(mem, &paging, linear, &mut buf)
            .map_err(|source| ReflectError::Fetch { linear, source })?;
        let bytes = &buf[..read];
        let insn = decode(bytes, mode).map_err(|source| ReflectError::Decode {
            linear,
            bytes: bytes.to_vec(),
            source,
        })?;
        let bytes = &bytes[..insn.len];
        let fsw = fd
            .get_fpu()
            .map_err(|e| ReflectError::Ioctl("KVM_GET_FPU", e))?
            .fsw;
        let cpu = GuestCpu {
            cpuid: &self.cpuid,
            cr4: sregs.cr4,
            cr0: sregs.cr0,
            fsw,
            cpl: current_privilege_level(&sregs),
        };
        let outcome = classify(&insn, &cpu);
        let not_reflected = |reason: String| ReflectError::NotReflectable {
            mnemonic: insn.mnemonic,
            linear,
            bytes: bytes.to_vec(),
            reason,
        };
        let (vector, len, what) = match outcome {
            Outcome::Trap { vector, len } => (Some(vector), Some(len), "trap".to_string()),
            Outcome::InvalidOpcode(cause) => (Some(UD_VECTOR), None, format!("fault: {cause}")),
            Outcome::Fault { vector, cause } => (Some(vector), None, format!("fault: {cause}")),
            Outcome::NoEffect { len } => (None, Some(len), String::new()),
            Outcome::NotReflectable(reason) => return Err(not_reflected(reason)),
        };
        let mut events = fd
            .get_vcpu_events()
            .map_err(|e| ReflectError::Ioctl("KVM_GET_VCPU_EVENTS", e))?;
        let regs_changed =
            next_state(&mut regs, &mut events, mode, len, vector).map_err(not_reflected)?;
        // KVM_SET_REGS drops a pending exception, so the events go in after it.
        if regs_changed {
            fd.set_regs(&regs)
                .map_err(|e| ReflectError::Ioctl("KVM_SET_REGS", e))?;
        }
        fd.set_vcpu_events(&events)
            .map_err(|e| ReflectError::Ioctl("KVM_SET_VCPU_EVENTS", e))?;
        if self.log.record(linear, insn.mnemonic) {
            match vector {
                Some(vector) => log::warn!(
                    "vCPU {index}: KVM's emulator cannot run {} at {linear:#x} (bytes \
                     {bytes:02x?}); delivered vector {vector} to the guest ({what})",
                    insn.mnemonic
                ),
                None => log::warn!(
                    "vCPU {index}: KVM's emulator cannot run {} at {linear:#x} (bytes \
                     {bytes:02x?}); on this vCPU it changes nothing but RIP: RIP moved past it",
                    insn.mnemonic
                ),
            }
        }
        Ok(())
    }
}

/// The vCPU state after the VMM reflects an emulation failure: RIP moved `len` bytes on when
/// the instruction completed (`Some(len)`: a trap, or an instruction with no other effect), then
/// `vector` (no error code) made the exception the vCPU takes on its next entry. Returns whether
/// the registers changed.
///
/// Refused, with the reason, where the CPU would do more than this models:
/// * an event is already being delivered (an injected interrupt, NMI or exception other than the
///   #UD KVM itself queues at CPL 0 before it reports the failure): moving RIP or adding an
///   exception would reorder or lose it;
/// * the instruction completes with RFLAGS.TF set: the single-step #DB trap would be due after
///   it as well, which the VMM does not fake.
///
/// What completing or delivering implies is applied: the KVM-queued #UD is dropped, an STI /
/// MOV SS interrupt shadow ends (it covers one instruction boundary, now passed), and RF is
/// cleared once an instruction completes.
fn next_state(
    regs: &mut kvm_regs,
    events: &mut kvm_vcpu_events,
    mode: CodeMode,
    len: Option<usize>,
    vector: Option<u8>,
) -> Result<bool, String> {
    if events.interrupt.injected != 0 {
        return Err(format!(
            "interrupt {:#x} is being delivered to the vCPU",
            events.interrupt.nr
        ));
    }
    if events.nmi.injected != 0 {
        return Err("an NMI is being delivered to the vCPU".to_string());
    }
    let queued = events.exception.injected != 0 || events.exception.pending != 0;
    if queued && events.exception.nr != UD_VECTOR {
        return Err(format!(
            "exception {} is being delivered to the vCPU",
            events.exception.nr
        ));
    }
    if queued {
        log::debug!("dropping the #UD KVM queued for the emulation failure");
    }
    let regs_changed = match len {
        Some(len) => {
            if regs.rflags & RFLAGS_TF != 0 {
                return Err(
                    "RFLAGS.TF is set: a single-step #DB trap would also be due after the \
                     instruction, and the VMM does not deliver it"
                        .to_string(),
                );
            }
            regs.rip = next_ip(mode, regs.rip, len);
            regs.rflags &= !RFLAGS_RF;
            true
        }
        None => false,
    };
    events.exception.injected = u8::from(vector.is_some());
    events.exception.pending = 0;
    events.exception.nr = vector.unwrap_or(0);
    events.exception.has_error_code = 0;
    events.exception.error_code = 0;
    events.exception_has_payload = 0;
    events.exception_payload = 0;
    events.interrupt.shadow = 0;
    events.flags |= KVM_VCPUEVENT_VALID_SHADOW;
    Ok(regs_changed)
}

/// Our page walk reads what the guest wrote; KVM_TRANSLATE asks KVM's MMU. They must agree
/// (checked on PVM, where the MMU shadows the guest's tables); a difference is worth a warning.
fn cross_check_translation(fd: &VcpuFd, mem: &GuestMemory, paging: &PagingRegs, linear: u64) {
    let ours = translate(mem, paging, linear).ok();
    let kvm = fd
        .translate_gva(linear)
        .ok()
        .filter(|t| t.valid != 0)
        .map(|t| t.physical_address);
    if ours != kvm {
        guest_warn!(
            "guest page walk and KVM_TRANSLATE disagree on {linear:#x}: {ours:x?} vs {kvm:x?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_counts_each_case_and_reports_the_first() {
        let log = ReflectionLog::default();
        assert!(log.record(0xffff_ffff_8100_0000, Mnemonic::Int3));
        assert!(!log.record(0xffff_ffff_8100_0000, Mnemonic::Int3));
        assert!(log.record(0x1000, Mnemonic::Cmpxchg16b));
        assert_eq!(log.total(), 3);
        assert_eq!(
            log.to_string(),
            "3 emulation failure(s) reflected: cmpxchg16b at 0x1000 x1, int3 at 0xffffffff81000000 x2"
        );
    }

    #[test]
    fn a_guest_cannot_grow_the_log_past_its_cap() {
        let log = ReflectionLog::default();
        let logged = (0..10_000u64)
            .filter(|&i| log.record(0xffff_ffff_8100_0000 + i, Mnemonic::Int3))
            .count();
        assert_eq!(logged, MAX_REFLECTION_CASES);
        assert_eq!(log.cases().len(), MAX_REFLECTION_CASES);
        assert_eq!(log.others(), 10_000 - MAX_REFLECTION_CASES as u64);
        assert_eq!(log.total(), 10_000);
        assert!(
            log.to_string().ends_with(", 9936 at other addresses"),
            "{log}"
        );
    }

    #[test]
    fn code_addresses_follow_the_segment_mode() {
        let mut sregs = kvm_sregs::default();
        assert_eq!(code_mode(&sregs), CodeMode::Bits16);
        sregs.cr0 = CR0_PE;
        sregs.cs.base = 0x1_0000;
        sregs.cs.selector = 0x1b;
        assert_eq!(
            code_linear(&sregs, code_mode(&sregs), 0x1_0000_1234),
            0x1_1234
        );
        assert_eq!(current_privilege_level(&sregs), 3);
        sregs.cs.db = 1;
        assert_eq!(code_mode(&sregs), CodeMode::Bits32);
        assert_eq!(next_ip(CodeMode::Bits32, 0xffff_ffff, 1), 0);
        sregs.efer = EFER_LMA;
        sregs.cs.l = 1;
        sregs.cs.db = 0;
        assert_eq!(code_mode(&sregs), CodeMode::Bits64);
        assert_eq!(
            code_linear(&sregs, CodeMode::Bits64, 0xffff_ffff_8100_0000),
            0xffff_ffff_8100_0000
        );
        assert_eq!(
            next_ip(CodeMode::Bits64, 0xffff_ffff_8100_0000, 5),
            0xffff_ffff_8100_0005
        );
    }

    /// The state KVM leaves after an emulation failure at CPL 0: #UD queued, STI shadow.
    fn after_failure() -> (kvm_regs, kvm_vcpu_events) {
        let regs = kvm_regs {
            rip: 0xffff_ffff_8101_82a5,
            rflags: 0x2 | RFLAGS_RF | (1 << 9),
            ..Default::default()
        };
        let mut events = kvm_vcpu_events::default();
        events.exception.injected = 1;
        events.exception.nr = UD_VECTOR;
        events.interrupt.shadow = 1;
        (regs, events)
    }

    #[test]
    fn completing_an_instruction_moves_rip_and_ends_the_shadow() {
        let (mut regs, mut events) = after_failure();
        let changed = next_state(&mut regs, &mut events, CodeMode::Bits64, Some(1), None);
        assert_eq!(changed, Ok(true));
        assert_eq!(regs.rip, 0xffff_ffff_8101_82a6);
        assert_eq!(regs.rflags, 0x2 | (1 << 9), "RF cleared, IF kept");
        assert_eq!(events.exception.injected, 0, "KVM's #UD dropped");
        assert_eq!(events.exception.pending, 0);
        assert_eq!(events.interrupt.shadow, 0);
        assert_ne!(events.flags & KVM_VCPUEVENT_VALID_SHADOW, 0);
    }

    #[test]
    fn traps_and_faults_replace_the_queued_ud() {
        let (mut regs, mut events) = after_failure();
        let rip = regs.rip;
        assert_eq!(
            next_state(&mut regs, &mut events, CodeMode::Bits64, None, Some(7)),
            Ok(false)
        );
        assert_eq!(regs.rip, rip, "a fault leaves RIP on the instruction");
        assert_eq!((events.exception.injected, events.exception.nr), (1, 7));
        assert_eq!(events.exception.has_error_code, 0);

        let (mut regs, mut events) = after_failure();
        assert_eq!(
            next_state(&mut regs, &mut events, CodeMode::Bits64, Some(1), Some(3)),
            Ok(true)
        );
        assert_eq!(regs.rip, rip + 1, "a trap is delivered with RIP past it");
        assert_eq!((events.exception.injected, events.exception.nr), (1, 3));
    }

    #[test]
    fn single_step_is_not_faked() {
        let (mut regs, mut events) = after_failure();
        regs.rflags |= RFLAGS_TF;
        let before = (regs, events);
        let err = next_state(&mut regs, &mut events, CodeMode::Bits64, Some(1), None).unwrap_err();
        assert!(err.contains("RFLAGS.TF is set"), "{err}");
        assert!(err.contains("single-step #DB"), "{err}");
        assert_eq!((regs, events), before, "nothing changed when refused");
        // int3 moves RIP too: refused alike.
        assert!(next_state(&mut regs, &mut events, CodeMode::Bits64, Some(1), Some(3)).is_err());
        // A fault does not complete the instruction: no single-step trap is due.
        assert_eq!(
            next_state(&mut regs, &mut events, CodeMode::Bits64, None, Some(6)),
            Ok(false)
        );
    }

    #[test]
    fn events_in_flight_are_not_reordered() {
        let (mut regs, mut events) = after_failure();
        events.interrupt.injected = 1;
        events.interrupt.nr = 0xec;
        let err = next_state(&mut regs, &mut events, CodeMode::Bits64, Some(1), None).unwrap_err();
        assert!(err.contains("interrupt 0xec"), "{err}");

        let (mut regs, mut events) = after_failure();
        events.nmi.injected = 1;
        assert!(
            next_state(&mut regs, &mut events, CodeMode::Bits64, None, Some(6))
                .unwrap_err()
                .contains("NMI")
        );

        let (mut regs, mut events) = after_failure();
        events.exception.nr = 14;
        let err =
            next_state(&mut regs, &mut events, CodeMode::Bits64, Some(1), Some(3)).unwrap_err();
        assert!(err.contains("exception 14"), "{err}");
    }
}
