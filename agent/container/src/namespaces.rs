//! Which namespaces a container gets: created fresh (unshare) or joined (setns by path).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::error::ContainerError;

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// /proc/<pid>/ns/<name> for each type.
fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// setns order: the user namespace first (it grants the rights for the others), the mount
/// namespace last (it changes how later paths resolve).
fn join_rank(t: LinuxNamespaceType) -> u8 {
    match t {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 2,
        _ => 1,
    }
}

#[derive(Debug)]
pub struct NamespacePlan {
    /// A new user namespace (its id maps are written by the agent).
    pub new_user: bool,
    /// Every other namespace to create.
    pub unshare: CloneFlags,
    /// Namespaces to join, in setns order.
    pub join: Vec<(OwnedFd, CloneFlags)>,
    /// All namespace types the container has (for exec).
    pub types: Vec<LinuxNamespaceType>,
}

impl Default for NamespacePlan {
    fn default() -> Self {
        NamespacePlan {
            new_user: false,
            unshare: CloneFlags::empty(),
            join: Vec::new(),
            types: Vec::new(),
        }
    }
}

impl NamespacePlan {
    pub fn from_spec(id: &str, spec: &Spec) -> Result<Self, ContainerError> {
        let mut plan = NamespacePlan::default();
        let mut joins = Vec::new();
        for ns in spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or_default()
        {
            plan.types.push(ns.typ());
            match ns.path() {
                Some(path) => {
                    let f = File::open(path).map_err(|e| {
                        ContainerError::sys(id, format!("opening namespace {}", path.display()), e)
                    })?;
                    joins.push((ns.typ(), OwnedFd::from(f)));
                }
                None if ns.typ() == LinuxNamespaceType::User => plan.new_user = true,
                None => plan.unshare |= clone_flag(ns.typ()),
            }
        }
        joins.sort_by_key(|(t, _)| join_rank(*t));
        plan.join = joins
            .into_iter()
            .map(|(t, fd)| (fd, clone_flag(t)))
            .collect();
        Ok(plan)
    }

    /// Joining the namespaces of a running process (exec).
    pub fn join_process(
        id: &str,
        pid: i32,
        types: &[LinuxNamespaceType],
    ) -> Result<Self, ContainerError> {
        let mut types = types.to_vec();
        types.sort_by_key(|t| join_rank(*t));
        let mut plan = NamespacePlan::default();
        for t in types {
            let path = Path::new("/proc")
                .join(pid.to_string())
                .join("ns")
                .join(proc_name(t));
            // Joining our own namespace again is refused for user namespaces (EINVAL).
            if t == LinuxNamespaceType::User && same_namespace(&path, "user") {
                continue;
            }
            let f = File::open(&path)
                .map_err(|e| ContainerError::sys(id, format!("opening {}", path.display()), e))?;
            plan.join.push((OwnedFd::from(f), clone_flag(t)));
            plan.types.push(t);
        }
        Ok(plan)
    }

    pub fn join_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.join.iter().map(|(fd, _)| fd.as_raw_fd())
    }
}

fn same_namespace(other: &Path, name: &str) -> bool {
    let mine = std::fs::read_link(Path::new("/proc/self/ns").join(name));
    let theirs = std::fs::read_link(other);
    matches!((mine, theirs), (Ok(a), Ok(b)) if a == b)
}
