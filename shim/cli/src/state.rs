//! What the `rust-vm` command remembers about a container, under `<root>/<id>/`:
//!
//! * `state.json`  — [`Record`], written once by whoever owns the sandbox when the container is
//!   created (the monitor for `create`/`run -d`, the `run` process itself otherwise);
//! * `started`     — created by `start` once the agent started the container;
//! * `exit.json`   — [`ExitRecord`], written by the owner when the container's init exited;
//! * `runtime.json`— the effective runtime configuration the owner started the sandbox with;
//! * `sandbox/`    — the sandbox's own state directory (sockets, image, console log);
//! * `owner.log`   — the owner's log.
//!
//! The status reported to users is derived, not stored: stopped once `exit.json` exists or the
//! owner process is gone; otherwise whatever the agent says (created, running, stopped).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rust_vm_sandbox::protocol::{Client, ContainerStatus};
use rust_vm_sandbox::Backend;
use serde::{Deserialize, Serialize};

pub const DEFAULT_ROOT: &str = "/run/rust-vm";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub backend: Backend,
    /// `unix:PATH` or `vsock-uds:PATH:PORT`.
    pub agent_address: String,
    /// The process that owns the sandbox (monitor or foreground `run`) and its start time
    /// (field 22 of /proc/PID/stat) so a recycled pid is not mistaken for it.
    pub owner_pid: u32,
    pub owner_start_time: u64,
    /// Host pid of the VMM (`vm`) or agent (`namespaces`).
    pub sandbox_pid: u32,
    /// The container init's pid as the agent sees it.
    pub init_pid: i32,
    /// The pid reported by `state`: the init's host pid (`namespaces`) or the VMM's (`vm`).
    pub pid: i32,
    /// RFC 3339, UTC.
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub exit_code: i32,
    #[serde(default)]
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The owner is setting the sandbox up (no `state.json` yet).
    Creating,
    Created,
    Running,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

pub use rust_vm_sandbox::hooks::{OciState, OCI_VERSION};

/// `<root>`: one directory per container.
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
}

impl Root {
    pub fn new(path: PathBuf) -> Root {
        Root { path }
    }

    pub fn container(&self, id: &str) -> ContainerDir {
        ContainerDir {
            id: id.to_string(),
            path: self.path.join(id),
        }
    }

    /// Creates `<root>/<id>`; fails if the id is taken.
    pub fn create(&self, id: &str) -> Result<ContainerDir> {
        rust_vm_sandbox::sandbox::validate_id(id)?;
        fs::create_dir_all(&self.path)
            .with_context(|| format!("creating state root {}", self.path.display()))?;
        let dir = self.container(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir.path) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                bail!(
                    "container {id:?} already exists (state in {})",
                    dir.path.display()
                )
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", dir.path.display())),
        }
    }

    /// An existing container's directory, or an error naming the unknown id.
    pub fn open(&self, id: &str) -> Result<ContainerDir> {
        rust_vm_sandbox::sandbox::validate_id(id)?;
        let dir = self.container(id);
        if !dir.path.is_dir() {
            bail!(
                "container {id:?} does not exist (no {})",
                dir.path.display()
            );
        }
        Ok(dir)
    }

    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    ids.push(name.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub id: String,
    pub path: PathBuf,
}

impl ContainerDir {
    pub fn record_path(&self) -> PathBuf {
        self.path.join("state.json")
    }
    pub fn exit_path(&self) -> PathBuf {
        self.path.join("exit.json")
    }
    pub fn started_path(&self) -> PathBuf {
        self.path.join("started")
    }
    pub fn runtime_path(&self) -> PathBuf {
        self.path.join("runtime.json")
    }
    pub fn sandbox_dir(&self) -> PathBuf {
        self.path.join("sandbox")
    }
    pub fn owner_log(&self) -> PathBuf {
        self.path.join("owner.log")
    }

    pub fn write_record(&self, record: &Record) -> Result<()> {
        write_atomic(&self.record_path(), &serde_json::to_vec_pretty(record)?)
    }

    pub fn record(&self) -> Result<Option<Record>> {
        read_json(&self.record_path())
    }

    pub fn write_exit(&self, exit: &ExitRecord) -> Result<()> {
        write_atomic(&self.exit_path(), &serde_json::to_vec(exit)?)
    }

    pub fn exit(&self) -> Result<Option<ExitRecord>> {
        read_json(&self.exit_path())
    }

    pub fn owner_path(&self) -> PathBuf {
        self.path.join("owner.pid")
    }

    /// Records the calling process as the owner while the container is being created (before
    /// `state.json` names it), so that its death can be told from slowness.
    pub fn write_owner(&self) -> Result<()> {
        let me = std::process::id();
        let start = process_start_time(me).unwrap_or(0);
        write_atomic(&self.owner_path(), format!("{me} {start}").as_bytes())
    }

    /// The owner recorded by [`ContainerDir::write_owner`]: pid and start time.
    pub fn owner(&self) -> Option<(u32, u64)> {
        let text = fs::read_to_string(self.owner_path()).ok()?;
        let (pid, start) = text.trim().split_once(' ')?;
        Some((pid.parse().ok()?, start.parse().ok()?))
    }

    pub fn mark_started(&self) -> Result<()> {
        write_atomic(&self.started_path(), b"")
    }

    /// The container's status, as precise as can be learnt: see the module comment.
    pub fn status(&self) -> Result<(Status, Option<Record>)> {
        let record = self.record()?;
        if self.exit()?.is_some() {
            return Ok((Status::Stopped, record));
        }
        let Some(rec) = record else {
            // The owner has not finished creating it, or died doing so.
            return Ok(match self.owner() {
                Some((pid, start)) if owner_alive(pid, start) => (Status::Creating, None),
                _ => (Status::Stopped, None),
            });
        };
        if !owner_alive(rec.owner_pid, rec.owner_start_time) {
            return Ok((Status::Stopped, Some(rec)));
        }
        let status = match agent_client(&rec.agent_address, Duration::from_secs(5))
            .and_then(|c| c.state(&rec.id).map_err(anyhow::Error::from))
        {
            Ok(state) => match state.status {
                ContainerStatus::Created => Status::Created,
                ContainerStatus::Running => Status::Running,
                ContainerStatus::Stopped => Status::Stopped,
            },
            Err(e) => {
                log::debug!("container {}: agent state: {e:#}", rec.id);
                if self.started_path().exists() {
                    Status::Stopped
                } else {
                    Status::Created
                }
            }
        };
        Ok((status, Some(rec)))
    }

    pub fn oci_state(&self) -> Result<OciState> {
        let (status, record) = self.status()?;
        let (pid, bundle, annotations) = match &record {
            Some(r) => (
                if status == Status::Stopped { 0 } else { r.pid },
                r.bundle.clone(),
                r.annotations.clone(),
            ),
            None => (0, PathBuf::new(), BTreeMap::new()),
        };
        Ok(OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            status: status.as_str().to_string(),
            pid,
            bundle,
            annotations,
        })
    }
}

/// A protocol client with every call bounded by `timeout`.
pub fn agent_client(address: &str, timeout: Duration) -> Result<Client> {
    let mut client = Client::connect(address)
        .with_context(|| format!("connecting to the agent at {address}"))?;
    client.set_timeout(Some(timeout));
    Ok(client)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Start time of a process (clock ticks since boot), field 22 of /proc/PID/stat.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn owner_alive(pid: u32, start_time: u64) -> bool {
    match process_start_time(pid) {
        Some(t) => t == start_time && !is_zombie(pid),
        None => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// Now, as RFC 3339 UTC with nanoseconds (no date crate needed for one format).
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let now = rfc3339_now();
        assert_eq!(now.len(), 30, "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn own_start_time_is_readable_and_alive() {
        let me = std::process::id();
        let t = process_start_time(me).expect("start time");
        assert!(owner_alive(me, t));
        assert!(!owner_alive(me, t + 1));
    }

    #[test]
    fn create_refuses_a_taken_id_and_open_an_unknown_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::new(dir.path().to_path_buf());
        root.create("c1").expect("create");
        let err = root.create("c1").unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        let err = root.open("nope").unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("nope"),
            "{err}"
        );
        assert!(root.create("../x").is_err());
        assert_eq!(root.ids().expect("ids"), vec!["c1".to_string()]);
    }

    #[test]
    fn status_without_record_is_creating_and_with_exit_is_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::new(dir.path().to_path_buf());
        let c = root.create("c1").expect("create");
        // Nobody owns it (the creator died before writing anything): stopped, deletable.
        assert_eq!(c.status().expect("status").0, Status::Stopped);
        c.write_owner().expect("owner");
        assert_eq!(c.status().expect("status").0, Status::Creating);
        c.write_record(&Record {
            id: "c1".into(),
            bundle: "/b".into(),
            backend: Backend::Namespaces,
            agent_address: "unix:/nonexistent".into(),
            owner_pid: std::process::id(),
            owner_start_time: process_start_time(std::process::id()).expect("t"),
            sandbox_pid: 1,
            init_pid: 2,
            pid: 42,
            created: rfc3339_now(),
            annotations: BTreeMap::new(),
        })
        .expect("record");
        // Owner alive, agent unreachable, never started: created.
        assert_eq!(c.status().expect("status").0, Status::Created);
        c.write_exit(&ExitRecord {
            exit_code: 3,
            signal: None,
        })
        .expect("exit");
        let state = c.oci_state().expect("state");
        assert_eq!(state.status, "stopped");
        assert_eq!(state.pid, 0);
        let json = serde_json::to_value(&state).expect("json");
        assert_eq!(json["ociVersion"], OCI_VERSION);
        assert_eq!(json["bundle"], "/b");
    }
}
