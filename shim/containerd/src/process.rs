//! One process of a task, a container's init or an exec: its state as containerd sees it.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::types::task::Status;

use crate::stdio::{ProcessIo, StdioPaths};

/// How a process ended, as containerd reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub status: u32,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Stopped,
}

impl Phase {
    pub fn status(self) -> Status {
        match self {
            Phase::Created => Status::CREATED,
            Phase::Running => Status::RUNNING,
            Phase::Stopped => Status::STOPPED,
        }
    }
}

struct State {
    phase: Phase,
    pid: u32,
    exit: Option<Exit>,
    io: Option<Arc<ProcessIo>>,
}

pub struct Process {
    pub container_id: String,
    /// `None` for the container's init process.
    pub exec_id: Option<String>,
    pub stdio: StdioPaths,
    /// The OCI process of an exec, kept until the exec is started.
    pub exec_spec: Option<oci_spec::runtime::Process>,
    /// Set once a thread waits for this process in the agent.
    pub watched: AtomicBool,
    state: Mutex<State>,
    exited: Condvar,
}

impl Process {
    pub fn new(
        container_id: &str,
        exec_id: Option<&str>,
        stdio: StdioPaths,
        exec_spec: Option<oci_spec::runtime::Process>,
    ) -> Process {
        Process {
            container_id: container_id.to_owned(),
            exec_id: exec_id.map(str::to_owned),
            stdio,
            exec_spec,
            watched: AtomicBool::new(false),
            state: Mutex::new(State {
                phase: Phase::Created,
                pid: 0,
                exit: None,
                io: None,
            }),
            exited: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id containerd names this process by in events: the exec id, or the container id.
    pub fn event_id(&self) -> &str {
        self.exec_id.as_deref().unwrap_or(&self.container_id)
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    pub fn exit(&self) -> Option<Exit> {
        self.lock().exit.clone()
    }

    pub fn io(&self) -> Option<Arc<ProcessIo>> {
        self.lock().io.clone()
    }

    /// Records the agent's pid and the stdio copiers of a process that now exists.
    pub fn set_created(&self, pid: u32, io: ProcessIo) {
        let mut state = self.lock();
        state.pid = pid;
        state.io = Some(Arc::new(io));
    }

    /// Created -> Running; false when the process is not in Created.
    pub fn set_running(&self) -> bool {
        let mut state = self.lock();
        if state.phase != Phase::Created {
            return false;
        }
        state.phase = Phase::Running;
        true
    }

    /// Records the exit (first one wins) and wakes every waiter. Returns whether this call set it.
    pub fn set_exited(&self, status: u32) -> bool {
        let mut state = self.lock();
        if state.exit.is_some() {
            return false;
        }
        state.phase = Phase::Stopped;
        state.exit = Some(Exit {
            status,
            at: Timestamp::now(),
        });
        self.exited.notify_all();
        true
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> Exit {
        let mut state = self.lock();
        loop {
            if let Some(exit) = &state.exit {
                return exit.clone();
            }
            state = self.exited.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn lifecycle_and_waiters() {
        let p = Arc::new(Process::new("c", None, StdioPaths::default(), None));
        assert_eq!(p.phase(), Phase::Created);
        assert_eq!(p.event_id(), "c");
        let waiter = {
            let p = Arc::clone(&p);
            thread::spawn(move || p.wait().status)
        };
        assert!(p.set_running());
        assert!(!p.set_running());
        assert!(p.set_exited(3));
        assert!(!p.set_exited(4), "the first exit wins");
        assert_eq!(waiter.join().unwrap(), 3);
        assert_eq!(p.phase(), Phase::Stopped);
        assert_eq!(p.phase().status(), Status::STOPPED);
    }

    #[test]
    fn exec_is_named_by_its_exec_id() {
        let p = Process::new("c", Some("e1"), StdioPaths::default(), None);
        assert_eq!(p.event_id(), "e1");
    }
}
