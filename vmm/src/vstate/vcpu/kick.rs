//! Kicking vCPU threads out of KVM_RUN: a real-time signal whose handler sets `immediate_exit`
//! in the thread's own `kvm_run` page.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::VcpuError;

thread_local! {
    /// This thread's `kvm_run` page, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    KVM_RUN.with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's live kvm_run mapping, published with
            // `set_thread_kvm_run` before the first KVM_RUN and cleared after the last.
            // `immediate_exit` makes a KVM_RUN that has not started yet return EINTR at once,
            // so no kick is lost.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

/// Installs the kick handler; once per process, before vCPU threads start.
pub fn register_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), kick_handler).map_err(VcpuError::KickSignal)
}

/// Publishes this thread's `kvm_run` page to the kick handler (null: none any more).
pub(super) fn set_thread_kvm_run(run: *mut kvm_run) {
    KVM_RUN.with(|cell| cell.set(run));
}

/// Stops vCPU threads: raise `stop`, kick each thread out of KVM_RUN, and wait for them.
pub fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    log::debug!("stopping {} vCPU thread(s)", threads.len());
    for thread in &threads {
        // Failing means the thread already exited; join below still reaps it.
        let _ = thread.kill(kick_signal());
    }
    for thread in threads {
        if thread.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
    log::debug!("vCPU threads stopped");
}
