//! The one place the agent collects exit statuses. It is PID 1 in the guest and a child
//! subreaper in host mode, so every process of every container (and every orphan) ends up here.
//!
//! A dedicated thread blocks in `waitid(P_ALL, WNOWAIT)` rather than handling SIGCHLD: no signal
//! mask or handler needs to be set up, so nothing of that kind leaks into container processes.
//! `WNOWAIT` lets the thread learn *which* pid exited before reaping it. A registered pid is
//! reaped and reported at once. For an unknown pid the thread first takes the spawn lock
//! exclusively: creates and execs hold it shared until their new pids are registered, so a pid
//! whose create is still in progress is registered before its exit is looked up (no exit is lost,
//! and an exit of an unrelated, reaped-and-reused pid is never mistaken for it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rust_vm_protocol::ExitStatus;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the exit status of one process is published.
#[derive(Default)]
pub struct ExitCell {
    status: Mutex<Option<ExitStatus>>,
    exited: Condvar,
}

impl ExitCell {
    pub fn set(&self, status: ExitStatus) {
        *lock(&self.status) = Some(status);
        self.exited.notify_all();
    }

    pub fn get(&self) -> Option<ExitStatus> {
        *lock(&self.status)
    }

    #[cfg(test)]
    pub fn wait(&self) -> ExitStatus {
        let mut status = lock(&self.status);
        loop {
            if let Some(status) = *status {
                return status;
            }
            status = self.exited.wait(status).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`ExitCell::wait`], but gives up (`None`) once `gone` is set and [`ExitCell::wake`]
    /// called: the one who asked has gone away.
    pub fn wait_unless(&self, gone: &AtomicBool) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        loop {
            if let Some(status) = *status {
                return Some(status);
            }
            // Checked under the lock that `wake` takes, so a wake-up is never missed.
            if gone.load(Ordering::SeqCst) {
                return None;
            }
            status = self.exited.wait(status).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Wakes every waiter to look at its `gone` flag again.
    pub fn wake(&self) {
        let _status = lock(&self.status);
        self.exited.notify_all();
    }

    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut status = lock(&self.status);
        loop {
            if status.is_some() {
                return *status;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            status = self
                .exited
                .wait_timeout(status, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Converts a wait status into the protocol's form: the code, or 128 + signal.
pub fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus {
            exit_code: code,
            signal: None,
        }),
        WaitStatus::Signaled(_, signal, _) => Some(ExitStatus {
            exit_code: 128 + signal as i32,
            signal: Some(signal as i32),
        }),
        _ => None,
    }
}

#[derive(Default)]
struct Shared {
    /// Shared by spawners, exclusive for the reaper looking up an unknown pid.
    spawn: RwLock<()>,
    watchers: Mutex<HashMap<i32, Arc<ExitCell>>>,
    /// Set when a child may have been created since the reaper last found none.
    kicked: Mutex<bool>,
    kick: Condvar,
}

#[derive(Clone)]
pub struct Reaper {
    shared: Arc<Shared>,
}

/// Held while creating processes; see the module documentation.
pub struct SpawnGuard<'a> {
    shared: &'a Shared,
    _spawn: RwLockReadGuard<'a, ()>,
}

impl SpawnGuard<'_> {
    /// Registers `pid` (a direct child) and returns where its exit will be published.
    pub fn watch(&self, pid: i32) -> Arc<ExitCell> {
        let cell = Arc::new(ExitCell::default());
        lock(&self.shared.watchers).insert(pid, Arc::clone(&cell));
        cell
    }
}

impl Drop for SpawnGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.shared.kicked) = true;
        self.shared.kick.notify_all();
    }
}

impl Reaper {
    /// Starts the reaper thread.
    pub fn start() -> std::io::Result<Reaper> {
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reap_forever(&theirs))?;
        Ok(Reaper { shared })
    }

    /// Call before creating processes and hold until their pids are registered with
    /// [`SpawnGuard::watch`].
    pub fn spawn_guard(&self) -> SpawnGuard<'_> {
        SpawnGuard {
            shared: &self.shared,
            _spawn: self.shared.spawn.read().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

fn reap_forever(shared: &Shared) {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::__WALL;
    loop {
        match waitid(Id::All, flags) {
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                reap(shared, pid);
            }
            Err(Errno::ECHILD) => {
                let mut kicked = lock(&shared.kicked);
                while !*kicked {
                    kicked = shared.kick.wait(kicked).unwrap_or_else(|e| e.into_inner());
                }
                *kicked = false;
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                log::error!("waitid failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn reap(shared: &Shared, pid: Pid) {
    let watched = lock(&shared.watchers).contains_key(&pid.as_raw());
    // Only an unknown pid needs to wait for creates in progress (see the module documentation).
    let _spawn = (!watched).then(|| shared.spawn.write().unwrap_or_else(|e| e.into_inner()));
    let status = match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
        Ok(status) => status,
        Err(e) => {
            log::warn!("reaping pid {pid}: {e}");
            return;
        }
    };
    let Some(exit) = exit_status(status) else {
        return;
    };
    match lock(&shared.watchers).remove(&pid.as_raw()) {
        Some(cell) => {
            log::debug!("pid {pid} exited: {exit:?}");
            cell.set(exit);
        }
        None => log::debug!("reaped unwatched pid {pid}: {exit:?}"),
    }
}

/// The test process's one reaper. Unit tests share their process with other tests that wait
/// for their own children, so this one reaps only the pids it watches, by polling.
#[cfg(test)]
pub fn for_tests() -> Reaper {
    static REAPER: std::sync::OnceLock<Reaper> = std::sync::OnceLock::new();
    REAPER
        .get_or_init(|| {
            let shared = Arc::new(Shared::default());
            let theirs = Arc::clone(&shared);
            thread::spawn(move || loop {
                let watched: Vec<i32> = lock(&theirs.watchers).keys().copied().collect();
                for pid in watched {
                    let _spawn = theirs.spawn.write().unwrap_or_else(|e| e.into_inner());
                    let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
                    if let Ok(status) = waitpid(Pid::from_raw(pid), Some(flags)) {
                        if let Some(exit) = exit_status(status) {
                            if let Some(cell) = lock(&theirs.watchers).remove(&pid) {
                                cell.set(exit);
                            }
                        }
                    }
                }
                thread::sleep(Duration::from_millis(2));
            });
            Reaper { shared }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    // The reaper, not `Child::wait`, collects these children. (The production loop,
    // `reap_forever`, is exercised through the agent binary by tests/host_mode.rs.)
    #[allow(clippy::zombie_processes)]
    fn exit_codes_and_signals() {
        let reaper = for_tests();
        let spawn = |script: &str| {
            let guard = reaper.spawn_guard();
            let child = Command::new("/bin/sh")
                .arg("-c")
                .arg(script)
                .spawn()
                .unwrap();
            guard.watch(child.id() as i32)
        };
        let ok = spawn("exit 0");
        let three = spawn("exit 3");
        let killed = spawn("kill -9 $$");
        assert_eq!(
            ok.wait(),
            ExitStatus {
                exit_code: 0,
                signal: None
            }
        );
        assert_eq!(
            three.wait(),
            ExitStatus {
                exit_code: 3,
                signal: None
            }
        );
        assert_eq!(
            killed.wait(),
            ExitStatus {
                exit_code: 137,
                signal: Some(9)
            }
        );
        // The reaper goes back to sleep when there are no children, and wakes for new ones.
        thread::sleep(Duration::from_millis(50));
        let again = spawn("exit 5");
        assert_eq!(
            again
                .wait_timeout(Duration::from_secs(10))
                .map(|s| s.exit_code),
            Some(5)
        );
    }

    #[test]
    fn wait_timeout_expires() {
        let cell = ExitCell::default();
        assert_eq!(cell.wait_timeout(Duration::from_millis(10)), None);
        cell.set(ExitStatus {
            exit_code: 1,
            signal: None,
        });
        assert_eq!(
            cell.wait_timeout(Duration::from_millis(10))
                .map(|s| s.exit_code),
            Some(1)
        );
    }
}
