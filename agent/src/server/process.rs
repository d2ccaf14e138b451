//! What the server knows about each container and process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rust_vm_protocol::{ContainerStatus, ErrorCode, ProtocolError};

use super::runtime::ContainerHandle;
use super::stdio::{AttachFlag, ProcessStdio};
use crate::reaper::ExitCell;

pub struct ProcessEntry {
    pub pid: i32,
    /// "container c1" or "exec e1 of container c1", for messages.
    pub label: String,
    pub exit: Arc<ExitCell>,
    pub stdio: ProcessStdio,
    pub stdin_attached: AttachFlag,
}

impl ProcessEntry {
    pub fn running(&self) -> bool {
        self.exit.get().is_none()
    }
}

pub struct ContainerEntry {
    pub id: String,
    /// `None` once destroyed.
    pub handle: Mutex<Option<Box<dyn ContainerHandle>>>,
    pub init: Arc<ProcessEntry>,
    pub started: Mutex<bool>,
    pub execs: Mutex<HashMap<String, Arc<ProcessEntry>>>,
    /// Exec ids being started (not in `execs` yet), so that two execs cannot take one id.
    pub execs_starting: Mutex<HashSet<String>>,
}

impl ContainerEntry {
    pub fn status(&self) -> ContainerStatus {
        if !self.init.running() {
            ContainerStatus::Stopped
        } else if *self.started.lock().unwrap_or_else(|e| e.into_inner()) {
            ContainerStatus::Running
        } else {
            ContainerStatus::Created
        }
    }

    /// Runs `f` with the container's runtime handle.
    pub fn with_handle<T>(
        &self,
        f: impl FnOnce(&mut dyn ContainerHandle) -> Result<T, ProtocolError>,
    ) -> Result<T, ProtocolError> {
        let mut handle = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        match handle.as_deref_mut() {
            Some(handle) => f(handle),
            None => Err(ProtocolError::new(
                ErrorCode::NotFound,
                format!("container `{}` is being removed", self.id),
            )),
        }
    }
}
