//! `signal`: deliver a signal to one of the container's processes.

use super::error::ContainerError;
use super::Container;

impl Container {
    /// Sends `signal` to `pid`, which must be the init, an exec'd process or another process
    /// inside the container.
    pub fn signal(&self, pid: i32, signal: i32) -> Result<(), ContainerError> {
        let known =
            pid == self.init_pid || self.exec_pids.contains(&pid) || self.pids()?.contains(&pid);
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
