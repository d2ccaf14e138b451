//! A vCPU and its thread: configuration before the first run, then the KVM_RUN loop that hands
//! port and MMIO exits to the buses and turns everything else into a VM exit reason.

mod dump;
mod kick;

pub use kick::{kick_signal, register_kick_handler, stop_vcpus};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::reflect::{ReflectError, ReflectionLog, Reflector};
use super::{VmExitReason, VmExitSignal};
use crate::arch::cpuid::{forced_bits, vcpu_cpuid, CpuTemplate, CpuidError};
use crate::arch::interrupts::setup_lapic;
use crate::arch::msr::{setup_msrs, MsrError};
use crate::arch::regs::{setup_boot_vcpu, setup_fpu, RegsError};
use crate::devices::bus::Bus;
use crate::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU {0}: KVM_CREATE_VCPU failed: {1}")]
    Create(u8, kvm_ioctls::Error),
    #[error("vCPU {0}: {1}")]
    Cpuid(u8, CpuidError),
    #[error("vCPU {0}: KVM_SET_CPUID2 failed: {1}")]
    SetCpuid(u8, kvm_ioctls::Error),
    #[error("vCPU {0}: {1}")]
    Msrs(u8, MsrError),
    #[error("vCPU {0}: {1}")]
    Regs(u8, RegsError),
    #[error("vCPU {0}: LAPIC set-up failed: {1}")]
    Lapic(u8, kvm_ioctls::Error),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    KickSignal(vmm_sys_util::errno::Error),
    #[error("cannot start the thread of vCPU {0}: {1}")]
    Spawn(u8, std::io::Error),
    #[error("vCPU {0}: emulation-failure reflection: {1}")]
    Reflect(u8, ReflectError),
}

/// Where the boot vCPU starts: kernel entry point and page-table root.
#[derive(Clone, Copy, Debug)]
pub struct BootEntry {
    pub entry: u64,
    pub cr3: u64,
}

pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    io_bus: Bus,
    mmio_bus: Bus,
    mem: GuestMemory,
    reflector: Option<Reflector>,
    /// Confine the thread with its seccomp filter before the first `KVM_RUN`.
    seccomp: bool,
}

/// What the run loop does after one exit.
enum ExitOutcome {
    Continue,
    Stop(VmExitReason),
    /// A fatal exit: the string names it; the register dump is added by the run loop.
    Fault(String),
}

fn process_cpu_time_us() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

impl Vcpu {
    pub fn new(
        vm: &VmFd,
        index: u8,
        io_bus: Bus,
        mmio_bus: Bus,
        mem: GuestMemory,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(|e| VcpuError::Create(index, e))?;
        Ok(Self {
            index,
            fd,
            io_bus,
            mmio_bus,
            mem,
            reflector: None,
            seccomp: false,
        })
    }

    /// The vCPU thread installs its seccomp filter ([`crate::seccomp`]) before the guest's
    /// first instruction.
    pub fn enable_seccomp(&mut self) {
        self.seccomp = true;
    }

    /// Reflects KVM emulation failures as the exceptions they architecturally are
    /// (`vstate::reflect`). Call after `configure`: it reads the vCPU's final CPUID.
    pub fn enable_emulation_reflection(
        &mut self,
        log: Arc<ReflectionLog>,
    ) -> Result<(), VcpuError> {
        let reflector =
            Reflector::new(&self.fd, log).map_err(|e| VcpuError::Reflect(self.index, e))?;
        self.reflector = Some(reflector);
        Ok(())
    }

    /// Sets CPUID, MSRs, FPU and LAPIC; the boot vCPU also gets its long-mode entry state.
    /// The others wait for the guest's INIT/SIPI in the in-kernel LAPIC.
    pub fn configure(
        &self,
        supported_cpuid: &CpuId,
        num_vcpus: u8,
        template: CpuTemplate,
        boot: Option<BootEntry>,
    ) -> Result<(), VcpuError> {
        let i = self.index;
        let cpuid = vcpu_cpuid(supported_cpuid, i, num_vcpus, template)
            .map_err(|e| VcpuError::Cpuid(i, e))?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(|e| VcpuError::SetCpuid(i, e))?;
        if i == 0 {
            self.warn_forced_cpuid(&cpuid, template);
        }
        setup_msrs(&self.fd).map_err(|e| VcpuError::Msrs(i, e))?;
        setup_fpu(&self.fd).map_err(|e| VcpuError::Regs(i, e))?;
        setup_lapic(&self.fd).map_err(|e| VcpuError::Lapic(i, e))?;
        if let Some(boot) = boot {
            setup_boot_vcpu(&self.fd, boot.entry, boot.cr3).map_err(|e| VcpuError::Regs(i, e))?;
        }
        Ok(())
    }

    fn warn_forced_cpuid(&self, wanted: &CpuId, template: CpuTemplate) {
        let actual = match self.fd.get_cpuid2(KVM_MAX_CPUID_ENTRIES) {
            Ok(actual) => actual,
            Err(e) => {
                log::debug!("KVM_GET_CPUID2 failed, cannot check the CPUID template: {e}");
                return;
            }
        };
        let forced = forced_bits(wanted.as_slice(), actual.as_slice());
        if forced.is_empty() {
            return;
        }
        let detail: Vec<String> = forced
            .iter()
            .map(|f| {
                format!(
                    "leaf {:#x}.{} {:?} {:#010x}",
                    f.function, f.index, f.reg, f.bits
                )
            })
            .collect();
        let mut leaves: Vec<String> = forced
            .iter()
            .map(|f| format!("{:#x}", f.function))
            .collect();
        leaves.dedup();
        if template == CpuTemplate::Host {
            log::debug!("KVM adds CPUID bits: {}", detail.join(", "));
        } else {
            // One line: on PVM hosts this shows on every start.
            log::warn!(
                "KVM keeps host CPUID bits the {template} template clears (leaves {}); hide \
                 them with the guest kernel's command line (noxsave, clearcpuid=)",
                leaves.join(", ")
            );
            log::debug!("forced CPUID bits: {}", detail.join(", "));
        }
    }

    /// Runs the vCPU on its own thread until `stop` is set (and the thread kicked) or the guest
    /// stops; a stop reason goes to `exit`.
    pub fn start(
        self,
        stop: Arc<AtomicBool>,
        exit: Arc<VmExitSignal>,
    ) -> Result<JoinHandle<()>, VcpuError> {
        let index = self.index;
        std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || self.run_loop(&stop, &exit))
            .map_err(|e| VcpuError::Spawn(index, e))
    }

    fn run_loop(mut self, stop: &AtomicBool, exit: &VmExitSignal) {
        kick::set_thread_kvm_run(self.fd.get_kvm_run());
        if self.index == 0 {
            log::debug!(
                "first KVM_RUN: process CPU time {} us",
                process_cpu_time_us()
            );
        }
        if self.seccomp {
            if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadRole::Vcpu) {
                exit.signal(VmExitReason::VcpuFault {
                    vcpu: self.index,
                    details: crate::config::error_chain(&e),
                });
                return;
            }
        }
        while !stop.load(Ordering::Acquire) {
            match self.run_once() {
                ExitOutcome::Continue => {}
                ExitOutcome::Stop(reason) => {
                    exit.signal(reason);
                    break;
                }
                ExitOutcome::Fault(what) => {
                    log::error!("vCPU {} stopped: {what}", self.index);
                    let details = format!("{what}\n{}", dump::dump_state(&self.fd, &self.mem));
                    exit.signal(VmExitReason::VcpuFault {
                        vcpu: self.index,
                        details,
                    });
                    break;
                }
            }
        }
        kick::set_thread_kvm_run(std::ptr::null_mut());
    }

    fn run_once(&mut self) -> ExitOutcome {
        let Vcpu {
            fd,
            io_bus,
            mmio_bus,
            ..
        } = self;
        let outcome = match fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !io_bus.read(u64::from(port), data) {
                    // Nothing there: a floating ISA bus reads all ones.
                    data.fill(0xff);
                }
                ExitOutcome::Continue
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                io_bus.write(u64::from(port), data);
                ExitOutcome::Continue
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !mmio_bus.read(addr, data) {
                    log::debug!("unhandled MMIO read of {} bytes at {addr:#x}", data.len());
                    data.fill(0);
                }
                ExitOutcome::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !mmio_bus.write(addr, data) {
                    log::debug!("unhandled MMIO write of {} bytes at {addr:#x}", data.len());
                }
                ExitOutcome::Continue
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_RESET => ExitOutcome::Stop(VmExitReason::GuestReset),
                KVM_SYSTEM_EVENT_SHUTDOWN => ExitOutcome::Stop(VmExitReason::GuestPowerOff),
                other => ExitOutcome::Fault(format!("unexpected system event {other}")),
            },
            // Without an in-kernel irqchip HLT would come here; with it, only a halted vCPU
            // that nothing can wake (interrupts off) ends up in userspace.
            Ok(VcpuExit::Hlt) => ExitOutcome::Stop(VmExitReason::GuestPowerOff),
            Ok(VcpuExit::Shutdown) => {
                ExitOutcome::Fault("KVM_EXIT_SHUTDOWN (triple fault)".to_string())
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => ExitOutcome::Fault(format!(
                "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on host CPU {cpu}"
            )),
            Ok(VcpuExit::InternalError) => return self.handle_internal_error(),
            Ok(other) => ExitOutcome::Fault(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A kick (or another signal): clear the request and re-check `stop`.
                fd.set_kvm_immediate_exit(0);
                ExitOutcome::Continue
            }
            Err(e) => ExitOutcome::Fault(format!("KVM_RUN failed: {e}")),
        };
        outcome
    }

    /// KVM_EXIT_INTERNAL_ERROR: KVM could not handle an exit, most often because its instruction
    /// emulator does not implement the guest's instruction (suberror 1).
    ///
    /// With reflection on, an emulation failure whose instruction architecturally raises an
    /// exception delivers it and the guest goes on (`vstate::reflect`).
    fn handle_internal_error(&mut self) -> ExitOutcome {
        // SAFETY: KVM filled the `internal` member of the union for this exit reason.
        let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
        let mut not_reflected = String::new();
        if let (kvm_bindings::KVM_INTERNAL_ERROR_EMULATION, Some(reflector)) =
            (internal.suberror, &self.reflector)
        {
            match reflector.reflect(self.index, &self.fd, &self.mem) {
                Ok(()) => return ExitOutcome::Continue,
                Err(e) => not_reflected = format!("\n{:#}", anyhow::Error::from(e)),
            }
        }
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let kind = match internal.suberror {
            kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
            kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
            kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failure",
            _ => "other",
        };
        ExitOutcome::Fault(format!(
            "KVM_EXIT_INTERNAL_ERROR suberror {} ({kind}), data {:x?}{not_reflected}",
            internal.suberror,
            &internal.data[..ndata]
        ))
    }
}
