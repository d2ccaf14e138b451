//! `stats`, `pids` and `oom_kills`.

use std::fs;
use std::path::Path;

use oci_spec::runtime::LinuxNamespaceType;

use super::cgroup::CgroupStats;
use super::error::ContainerError;
use super::Container;

impl Container {
    fn cgroup_or(&self, what: &'static str) -> Result<&super::cgroup::Cgroup, ContainerError> {
        self.cgroup.as_ref().ok_or(ContainerError::CgroupsDisabled {
            id: self.id.clone(),
            what,
        })
    }

    pub fn stats(&self) -> Result<CgroupStats, ContainerError> {
        self.cgroup_or("stats")?
            .stats()
            .map_err(|e| self.cgroup_err(e))
    }

    /// `None` without the memory controller.
    pub fn oom_kills(&self) -> Result<Option<u64>, ContainerError> {
        self.cgroup_or("the OOM kill count")?
            .oom_kills()
            .map_err(|e| self.cgroup_err(e))
    }

    /// Every process of the container (agent pid namespace numbers). From `cgroup.procs`
    /// with cgroups; without, the processes sharing the init's pid namespace (or only the
    /// init and exec'd processes still alive when there is no pid namespace).
    pub fn pids(&self) -> Result<Vec<i32>, ContainerError> {
        if let Some(cg) = &self.cgroup {
            return cg.pids().map_err(|e| self.cgroup_err(e));
        }
        let alive = |pid: i32| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
        if !self.namespaces.contains(&LinuxNamespaceType::Pid) {
            return Ok(std::iter::once(self.init_pid)
                .chain(self.exec_pids.iter().copied())
                .filter(|&p| alive(p))
                .collect());
        }
        let Ok(ns) = fs::read_link(format!("/proc/{}/ns/pid", self.init_pid)) else {
            return Ok(Vec::new());
        };
        let entries =
            fs::read_dir("/proc").map_err(|e| ContainerError::sys(&self.id, "listing /proc", e))?;
        let mut pids: Vec<i32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|pid: &i32| {
                fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns)
                    && !is_zombie(*pid)
            })
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }
}

/// Exited but not reaped yet (the agent's reaper owns waitpid).
pub(crate) fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
