//! Leak checks: live processes, what they run, and mount points.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Whether a process exists and is not a zombie (a zombie is dead for a leak check).
pub fn alive(pid: impl Into<i64>) -> bool {
    let pid = pid.into();
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// `(pid, argv)` of every process (kernel threads have an empty argv).
pub fn processes() -> Vec<(u32, Vec<String>)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, argv))
        })
        .collect()
}

/// Live processes other than this one whose command line mentions `needle`: `(pid, argv joined
/// with spaces)`.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    processes()
        .into_iter()
        .filter(|(pid, _)| *pid != std::process::id())
        .map(|(pid, argv)| (pid, argv.join(" ")))
        .filter(|(pid, cmdline)| cmdline.contains(needle) && alive(*pid))
        .collect()
}

/// Live `rust-vm-vmm` processes (by argv\[0\]) with an argument mentioning `needle` (a sandbox's
/// state directory, a state root).
pub fn vmm_pids(needle: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(pid, argv)| {
            argv.first().is_some_and(|a| a.ends_with("rust-vm-vmm"))
                && argv.iter().any(|a| a.contains(needle))
                && alive(*pid)
        })
        .map(|(pid, _)| pid)
        .collect()
}

pub fn parent_pid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Every process whose ancestry includes `ancestor`.
pub fn descendants(ancestor: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| {
            let mut cur = pid;
            for _ in 0..64 {
                match parent_pid(cur) {
                    Some(p) if p == ancestor => return true,
                    Some(0) | Some(1) | None => return false,
                    Some(p) => cur = p,
                }
            }
            false
        })
        .collect()
}

/// Mount points (field 5 of mountinfo) in this process's mount namespace at or under `prefix`.
pub fn mounts_under(prefix: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(prefix))
        .collect()
}

/// Files and directories left in `dir` (none when it does not exist).
pub fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Nothing of a runtime's state root is left: no process mentions it, and it is empty.
pub fn assert_nothing_left(root: &Path) {
    let left = processes_mentioning(&root.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let left = entries(root);
    assert!(left.is_empty(), "state left behind: {left:?}");
}

/// What a process holds, read from the host: for checks of the VMM's jail.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// `/proc/PID/status` fields `Uid`, `Gid`, `Groups`, `CapInh` .. `CapAmb`, `NoNewPrivs`,
    /// `Seccomp`, as written there.
    pub status: BTreeMap<String, String>,
    /// The namespace kinds (`mnt`, `pid`, ...) it shares with this process.
    pub shared_namespaces: Vec<String>,
    /// The names in its root directory.
    pub root_entries: Vec<String>,
    /// Where its descriptors point, as the host names them.
    pub descriptors: Vec<String>,
}

impl Confinement {
    pub fn of(pid: u32) -> Confinement {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let status = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        let shared_namespaces = ["mnt", "pid", "ipc", "uts", "net", "cgroup", "user"]
            .into_iter()
            .filter(|kind| {
                let theirs = fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok();
                theirs.is_some() && theirs == fs::read_link(format!("/proc/self/ns/{kind}")).ok()
            })
            .map(str::to_string)
            .collect();
        let mut root_entries: Vec<String> = fs::read_dir(format!("/proc/{pid}/root"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        root_entries.sort();
        let descriptors = fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| fs::read_link(e.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        Confinement {
            status,
            shared_namespaces,
            root_entries,
            descriptors,
        }
    }

    pub fn field(&self, name: &str) -> &str {
        self.status.get(name).map_or("", String::as_str)
    }
}
