//! Turning an OCI `process` into the final state of the container process: rlimits, user and
//! groups, capabilities, no_new_privs, umask, cwd, and the program to exec.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, CapsHashSet};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

use super::error::SpecError;
use super::step::{Context, StepError};
use super::syscalls::Syscalls;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn rlimit_resource(t: PosixRlimitType) -> i32 {
    (match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as i32
}

/// OCI capability names to the caps crate's.
pub fn to_caps(set: &Capabilities, field: &str) -> Result<CapsHashSet, SpecError> {
    set.iter()
        .map(|c| {
            let name = format!("CAP_{c}");
            caps::Capability::from_str(&name)
                .map_err(|_| SpecError::new(field, format!("{name} is unknown to this agent")))
        })
        .collect()
}

/// The five capability sets, resolved before fork so a bad name is a create error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityPlan {
    pub bounding: Option<CapsHashSet>,
    pub effective: Option<CapsHashSet>,
    pub inheritable: Option<CapsHashSet>,
    pub permitted: Option<CapsHashSet>,
    pub ambient: Option<CapsHashSet>,
}

impl CapabilityPlan {
    pub fn from_process(p: &Process, prefix: &str) -> Result<Option<Self>, SpecError> {
        let Some(c) = p.capabilities() else {
            return Ok(None);
        };
        let conv = |s: &Option<Capabilities>, name: &str| {
            s.as_ref()
                .map(|s| to_caps(s, &format!("{prefix}.capabilities.{name}")))
                .transpose()
        };
        Ok(Some(CapabilityPlan {
            bounding: conv(c.bounding(), "bounding")?,
            effective: conv(c.effective(), "effective")?,
            inheritable: conv(c.inheritable(), "inheritable")?,
            permitted: conv(c.permitted(), "permitted")?,
            ambient: conv(c.ambient(), "ambient")?,
        }))
    }
}

/// What the process needs, computed in the agent before fork.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: u32,
    pub rlimits: Vec<(i32, u64, u64)>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    pub capabilities: Option<CapabilityPlan>,
    search_path: String,
}

fn cstring(s: &str, field: String) -> Result<CString, SpecError> {
    CString::new(s).map_err(|_| SpecError::new(field, "contains NUL"))
}

impl ProcessPlan {
    pub fn new(p: &Process, prefix: &str) -> Result<Self, SpecError> {
        let args = p
            .args()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, a)| cstring(a, format!("{prefix}.args[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        if args.is_empty() {
            return Err(SpecError::new(format!("{prefix}.args"), "missing"));
        }
        let env_strs = p.env().as_deref().unwrap_or_default();
        let env = env_strs
            .iter()
            .enumerate()
            .map(|(i, e)| cstring(e, format!("{prefix}.env[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let search_path = env_strs
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let user = p.user();
        if user.username().is_some() {
            return Err(SpecError::new(
                format!("{prefix}.user.username"),
                "only numeric uid/gid are supported",
            ));
        }
        Ok(ProcessPlan {
            args,
            env,
            cwd: p.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask().unwrap_or(0o022),
            rlimits: p
                .rlimits()
                .iter()
                .flatten()
                .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
                .collect(),
            no_new_privileges: p.no_new_privileges().unwrap_or(false),
            oom_score_adj: p.oom_score_adj(),
            capabilities: CapabilityPlan::from_process(p, prefix)?,
            search_path,
        })
    }

    /// Limits that need privilege: before the user switch.
    pub fn apply_privileged(&self, sys: &dyn Syscalls) -> Result<(), StepError> {
        for &(resource, soft, hard) in &self.rlimits {
            sys.setrlimit(resource, soft, hard)
                .ctx(|| format!("setrlimit({resource}, {soft}, {hard})"))?;
        }
        if let Some(adj) = self.oom_score_adj {
            sys.write_file(
                Path::new("/proc/self/oom_score_adj"),
                adj.to_string().as_bytes(),
            )
            .ctx(|| "process.oomScoreAdj".to_string())?;
        }
        if self.no_new_privileges {
            sys.set_no_new_privs()
                .ctx(|| "process.noNewPrivileges".to_string())?;
        }
        Ok(())
    }

    /// Bounding set first, then ids (keeping capabilities across the uid change), then the
    /// other four sets, then cwd and umask as the final user.
    pub fn apply_identity(&self, sys: &dyn Syscalls) -> Result<(), StepError> {
        let caps = self.capabilities.as_ref();
        if let Some(b) = caps.and_then(|c| c.bounding.as_ref()) {
            sys.set_capabilities(CapSet::Bounding, b)
                .ctx(|| "process.capabilities.bounding".to_string())?;
        }
        if caps.is_some() {
            sys.set_keep_caps(true)
                .ctx(|| "PR_SET_KEEPCAPS".to_string())?;
        }
        sys.setgroups(&self.additional_gids)
            .ctx(|| "process.user.additionalGids".to_string())?;
        sys.setresgid(self.gid)
            .ctx(|| "process.user.gid".to_string())?;
        sys.setresuid(self.uid)
            .ctx(|| "process.user.uid".to_string())?;
        if let Some(c) = caps {
            sys.set_keep_caps(false)
                .ctx(|| "PR_SET_KEEPCAPS".to_string())?;
            for (set, name, value) in [
                (CapSet::Inheritable, "inheritable", &c.inheritable),
                // Effective before permitted: permitted may only shrink below effective
                // once effective has shrunk.
                (CapSet::Effective, "effective", &c.effective),
                (CapSet::Permitted, "permitted", &c.permitted),
                (CapSet::Ambient, "ambient", &c.ambient),
            ] {
                let empty = CapsHashSet::new();
                sys.set_capabilities(set, value.as_ref().unwrap_or(&empty))
                    .ctx(|| format!("process.capabilities.{name}"))?;
            }
        }
        sys.umask(self.umask);
        sys.chdir(&self.cwd)
            .ctx(|| format!("process.cwd {}", self.cwd.display()))?;
        Ok(())
    }

    /// args[0] as a path: itself when it has a slash, else looked up in the process's PATH.
    pub fn executable(&self, sys: &dyn Syscalls) -> Result<CString, StepError> {
        let arg0 = self.args[0].to_string_lossy().into_owned();
        if arg0.contains('/') {
            return Ok(self.args[0].clone());
        }
        for dir in self.search_path.split(':').filter(|d| !d.is_empty()) {
            let candidate = Path::new(dir).join(&arg0);
            if sys.is_executable(&candidate) {
                return CString::new(candidate.into_os_string().into_encoded_bytes())
                    .map_err(|e| StepError::new("process.args[0]", io::Error::other(e)));
            }
        }
        Err(StepError::new(
            format!(
                "process.args[0]: {arg0:?} not found in PATH {}",
                self.search_path
            ),
            io::Error::from_raw_os_error(libc::ENOENT),
        ))
    }
}
