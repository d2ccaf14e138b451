//! `signal`: deliver a signal to one of the container's processes.

use std::os::fd::AsRawFd;

use super::error::ContainerError;
use super::Container;

impl Container {
    /// Sends `signal` to `pid`, which must be the init, an exec'd process or another process
    /// inside the container.
    pub fn signal(&self, pid: i32, signal: i32) -> Result<(), ContainerError> {
        if pid == self.init_pid {
            return self
                .sys
                .pidfd_send_signal(self.init_pidfd.as_raw_fd(), signal)
                .map_err(|e| {
                    ContainerError::sys(&self.id, format!("signal {signal} to the init"), e)
                });
        }
        // Membership now (cgroup or pid namespace), not a remembered pid that may be reused.
        let known = self.pids()?.contains(&pid);
        if !known {
            return Err(ContainerError::UnknownProcess {
                id: self.id.clone(),
                pid,
            });
        }
        self.sys
            .kill(pid, signal)
            .map_err(|e| ContainerError::sys(&self.id, format!("kill({pid}, {signal})"), e))
    }
}
