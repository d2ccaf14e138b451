//! `destroy`: kill what is left, unmount the block-device rootfs, remove the cgroup and the
//! state directory. Nothing of the container stays behind.

use std::fs;
use std::io;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::MntFlags;

use super::error::ContainerError;
use super::stats::is_zombie;
use super::syscalls::Syscalls;
use super::Container;
use std::os::fd::AsRawFd;

const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until each pid has exited (zombie or gone); reaping is the agent's business.
pub(crate) fn wait_exited(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let running = pids
            .iter()
            .any(|&p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(p));
        if !running {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Unmounts, retrying while the last users go away; detaches as a last resort so the
/// mount at least disappears from the namespace.
pub(crate) fn unmount_with_retry(sys: &dyn Syscalls, target: &Path) -> io::Result<()> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        match sys.umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                log::warn!("{} still busy, detaching it", target.display());
                return sys.umount2(target, MntFlags::MNT_DETACH);
            }
            Err(e) => return Err(e),
        }
    }
}

impl Container {
    /// Kills what is left, unmounts, removes the cgroup: nothing stays behind. Errors list
    /// every leftover (the rest is still cleaned up).
    pub fn destroy(mut self) -> Result<(), ContainerError> {
        let problems = self.teardown();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ContainerError::Cleanup {
                id: self.id.clone(),
                problems,
            })
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut problems = Vec::new();
        // An init still waiting for `start` exits when its channel closes; kill it anyway.
        self.start_chan = None;
        let others = self.pids().unwrap_or_default();
        if let Some(cg) = &self.cgroup {
            let sys = self.sys.as_ref();
            if let Err(e) = cg.kill_all(&|pid| sys.kill(pid, libc::SIGKILL)) {
                problems.push(format!(
                    "killing through {}: {}",
                    e.path.display(),
                    e.source
                ));
            }
        }
        // Killing the init of a pid namespace kills everything in it.
        let _ = self
            .sys
            .pidfd_send_signal(self.init_pidfd.as_raw_fd(), libc::SIGKILL);
        if self.cgroup.is_none() {
            for &pid in others.iter().filter(|&&p| p != self.init_pid) {
                let _ = self.sys.kill(pid, libc::SIGKILL);
            }
        }
        if !self.wait_init_exit(EXIT_TIMEOUT) {
            problems.push(format!(
                "the init {} did not exit after SIGKILL",
                self.init_pid
            ));
        }
        let others: Vec<i32> = others.into_iter().filter(|&p| p != self.init_pid).collect();
        if !wait_exited(&others, EXIT_TIMEOUT) {
            problems.push(format!("processes {others:?} did not exit after SIGKILL"));
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.remove(EXIT_TIMEOUT) {
                problems.push(format!("removing {}: {}", e.path.display(), e.source));
            }
        }
        if let Some(m) = &self.block_mount {
            if let Err(e) = unmount_with_retry(self.sys.as_ref(), m) {
                problems.push(format!("unmounting {}: {e}", m.display()));
            }
        }
        if let Some(d) = &self.state_dir {
            if let Err(e) = fs::remove_dir_all(d) {
                problems.push(format!("removing {}: {e}", d.display()));
            }
        }
        problems
    }
}

impl Drop for Container {
    /// A container dropped without `destroy` is still torn down.
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        log::warn!(
            "container {} dropped without destroy; tearing it down",
            self.id
        );
        for p in self.teardown() {
            log::error!("container {}: {p}", self.id);
        }
    }
}
