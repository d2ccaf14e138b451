//! cgroup v2: one directory per container under the rust-vm parent. Limits from
//! `linux.resources`, the device program (`devices`), stats, OOM kill counts and killing
//! everything inside.
//!
//! Apart from the device program, only file reads and writes are used, so tests run against a
//! temporary directory tree that looks like cgroup v2 (`cpu.max`, `memory.events`, ...).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::devices;
use super::error::SpecError;

/// The spec field the device rules come from.
pub const DEVICES_FIELD: &str = "linux.resources.devices";

/// Controllers the agent enables for its containers, when the kernel offers them.
const CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids"];
const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// A container's usage as its cgroup v2 files say (`Stats` at the crate root).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_usage_usec: u64,
    pub cpu_user_usec: u64,
    pub cpu_system_usec: u64,
    /// `None` without the memory controller.
    pub memory_usage_bytes: Option<u64>,
    /// `None` when unlimited (or without the memory controller).
    pub memory_limit_bytes: Option<u64>,
    /// `None` without the pids controller.
    pub pids_current: Option<u64>,
    /// `None` when unlimited (or without the pids controller).
    pub pids_limit: Option<u64>,
    /// `None` without the memory controller.
    pub oom_kills: Option<u64>,
}

#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    /// The agent's parent cgroup: levels between it and `path` are removed with the container
    /// once empty.
    root: PathBuf,
}

/// An error with the file it happened on.
#[derive(Debug)]
pub struct CgroupIoError {
    pub path: PathBuf,
    pub what: String,
    pub source: io::Error,
}

type Result<T> = std::result::Result<T, CgroupIoError>;

fn io_err(path: &Path, what: impl Into<String>) -> impl FnOnce(io::Error) -> CgroupIoError {
    let path = path.to_path_buf();
    let what = what.into();
    move |source| CgroupIoError { path, what, source }
}

/// OCI cpu shares (2..262144, cgroup v1) to cgroup v2 cpu.weight (1..10000), the linear
/// mapping the kernel documentation and runc use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The interface files and values `resources` turns into, in write order.
pub fn resource_writes(
    r: &LinuxResources,
) -> std::result::Result<Vec<(String, String)>, SpecError> {
    let mut w = Vec::new();
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares() {
            w.push(("cpu.weight".into(), shares_to_weight(shares).to_string()));
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let period = cpu.period().unwrap_or(DEFAULT_CPU_PERIOD);
            if period == 0 {
                return Err(SpecError::new(
                    "linux.resources.cpu.period",
                    "must not be 0",
                ));
            }
            let quota = match cpu.quota() {
                Some(q) if q > 0 => q.to_string(),
                Some(0) => {
                    return Err(SpecError::new(
                        "linux.resources.cpu.quota",
                        "0 would stop the container; use -1 for no limit",
                    ))
                }
                _ => "max".to_string(),
            };
            w.push(("cpu.max".into(), format!("{quota} {period}")));
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            w.push(("cpuset.cpus".into(), cpus.to_string()));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            w.push(("cpuset.mems".into(), mems.to_string()));
        }
        if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
            return Err(SpecError::new(
                "linux.resources.cpu.realtimeRuntime",
                "realtime scheduling limits do not exist in cgroup v2",
            ));
        }
    }
    if let Some(mem) = r.memory() {
        let limit = mem.limit();
        if let Some(l) = limit {
            w.push((
                "memory.max".into(),
                limit_value(l, "linux.resources.memory.limit")?,
            ));
        }
        if let Some(res) = mem.reservation() {
            w.push((
                "memory.low".into(),
                limit_value(res, "linux.resources.memory.reservation")?,
            ));
        }
        if let Some(swap) = mem.swap() {
            // OCI's swap is memory+swap; v2's memory.swap.max is swap alone.
            let value = match (swap, limit) {
                (-1, _) => "max".to_string(),
                (0, _) => String::new(),
                (_, None) | (_, Some(-1)) | (_, Some(0)) => {
                    return Err(SpecError::new(
                        "linux.resources.memory.swap",
                        "a swap limit needs a memory limit",
                    ))
                }
                (s, Some(l)) if s < l => {
                    return Err(SpecError::new(
                        "linux.resources.memory.swap",
                        format!("{s} is below the memory limit {l} (it counts memory+swap)"),
                    ))
                }
                (s, Some(l)) => (s - l).to_string(),
            };
            if !value.is_empty() {
                w.push(("memory.swap.max".into(), value));
            }
        }
        if mem.kernel().is_some() || mem.kernel_tcp().is_some() {
            return Err(SpecError::new(
                "linux.resources.memory.kernel",
                "kernel memory limits do not exist in cgroup v2",
            ));
        }
        if mem.disable_oom_killer() == Some(true) {
            return Err(SpecError::new(
                "linux.resources.memory.disableOOMKiller",
                "cannot be disabled in cgroup v2",
            ));
        }
    }
    if let Some(pids) = r.pids() {
        let v = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".to_string()
        };
        w.push(("pids.max".into(), v));
    }
    for (key, value) in r.unified().iter().flatten() {
        if key.contains('/') || key.starts_with('.') || !key.contains('.') {
            return Err(SpecError::new(
                format!("linux.resources.unified.{key}"),
                "not a cgroup interface file name",
            ));
        }
        if key.starts_with("cgroup.") {
            return Err(SpecError::new(
                format!("linux.resources.unified.{key}"),
                "cgroup.* files are managed by the agent",
            ));
        }
        w.push((key.clone(), value.clone()));
    }
    Ok(w)
}

fn limit_value(v: i64, field: &str) -> std::result::Result<String, SpecError> {
    match v {
        -1 => Ok("max".into()),
        v if v < 0 => Err(SpecError::new(field, format!("{v} is negative"))),
        v => Ok(v.to_string()),
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_err(path, format!("writing {value:?}")))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(io_err(path, "reading"))
}

/// A controller's file: `None` when the controller is not enabled for the cgroup.
fn read_if_present(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "reading")(e)),
    }
}

/// `key value` lines (cpu.stat, memory.events) to the value of `key`.
fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

fn max_or_number(s: &str) -> Option<u64> {
    match s.trim() {
        "max" => None,
        v => v.parse().ok(),
    }
}

impl Cgroup {
    /// Creates `<root>/<name>`, enabling the controllers on the way. Refuses to reuse an
    /// existing directory: that is another container's, or a leak.
    pub fn create(root: &Path, name: &Path) -> Result<Cgroup> {
        if let Some(parent) = root.parent() {
            enable_controllers(parent);
        }
        match fs::create_dir(root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(root, "creating the rust-vm parent cgroup")(e)),
        }
        enable_controllers(root);
        let cgroup = Cgroup {
            path: root.join(name),
            root: root.to_path_buf(),
        };
        // Another container's removal may take away an empty level just created: try again.
        let mut tries = 3;
        loop {
            match cgroup.create_levels(name) {
                Ok(()) => return Ok(cgroup),
                Err(e) if e.source.kind() == io::ErrorKind::NotFound && tries > 1 => tries -= 1,
                Err(e) => {
                    cgroup.remove_empty_levels();
                    return Err(e);
                }
            }
        }
    }

    /// Each level below the root in turn, with the controllers enabled for the next one (as
    /// for the root), the container's own level last: it must not exist yet.
    fn create_levels(&self, name: &Path) -> Result<()> {
        let mut dir = self.root.clone();
        let mut levels = name.components().peekable();
        while let Some(level) = levels.next() {
            dir.push(level);
            if levels.peek().is_none() {
                return fs::create_dir(&dir).map_err(io_err(&dir, "creating"));
            }
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&dir, "creating")(e)),
            }
            enable_controllers(&dir);
        }
        Ok(())
    }

    /// Removes the levels between the container's cgroup and the root that no other
    /// container uses (rmdir fails on a cgroup with children: that one stays).
    fn remove_empty_levels(&self) {
        for dir in self.path.ancestors().skip(1) {
            if dir == self.root || !dir.starts_with(&self.root) {
                break;
            }
            if fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the limits, then replaces the device program when the resources name devices.
    pub fn apply(&self, r: &LinuxResources) -> std::result::Result<(), ApplyError> {
        for (file, value) in resource_writes(r).map_err(ApplyError::Spec)? {
            write(&self.path.join(&file), &value).map_err(ApplyError::Io)?;
        }
        if let Some(list) = r.devices() {
            let rules = devices::rules_from_spec(list, DEVICES_FIELD).map_err(ApplyError::Spec)?;
            devices::attach(&self.path, &devices::program(&rules))
                .map_err(io_err(&self.path, "applying linux.resources.devices"))
                .map_err(ApplyError::Io)?;
        }
        Ok(())
    }

    pub fn add_process(&self, pid: i32) -> Result<()> {
        write(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(read(&self.path.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// `None` without the memory controller.
    pub fn oom_kills(&self) -> Result<Option<u64>> {
        let events = read_if_present(&self.path.join("memory.events"))?;
        Ok(events.map(|e| keyed(&e, "oom_kill").unwrap_or(0)))
    }

    /// cpu.stat is a core file of every cgroup2 cgroup; memory and pids figures exist only
    /// where their controller is enabled, and are `None` otherwise.
    pub fn stats(&self) -> Result<CgroupStats> {
        let cpu = read(&self.path.join("cpu.stat"))?;
        let file = |name: &str| read_if_present(&self.path.join(name));
        let number = |s: String| s.trim().parse().ok();
        Ok(CgroupStats {
            cpu_usage_usec: keyed(&cpu, "usage_usec").unwrap_or(0),
            cpu_user_usec: keyed(&cpu, "user_usec").unwrap_or(0),
            cpu_system_usec: keyed(&cpu, "system_usec").unwrap_or(0),
            memory_usage_bytes: file("memory.current")?.and_then(number),
            memory_limit_bytes: file("memory.max")?.and_then(|s| max_or_number(&s)),
            pids_current: file("pids.current")?.and_then(number),
            pids_limit: file("pids.max")?.and_then(|s| max_or_number(&s)),
            oom_kills: self.oom_kills()?,
        })
    }

    /// SIGKILLs everything inside: `cgroup.kill` where the kernel has it (5.14+), else each
    /// pid in `cgroup.procs` until none is left.
    pub fn kill_all(&self, kill: &dyn Fn(i32) -> io::Result<()>) -> Result<()> {
        let kill_file = self.path.join("cgroup.kill");
        if kill_file.exists() {
            return write(&kill_file, "1");
        }
        for _ in 0..10 {
            let pids = self.pids()?;
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // ESRCH: it exited meanwhile.
                let _ = kill(pid);
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Removes the directory, waiting up to `timeout` for killed processes to exit.
    pub fn remove(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => {
                    self.remove_empty_levels();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.remove_empty_levels();
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io_err(&self.path, "removing")(e)),
            }
        }
    }
}

#[derive(Debug)]
pub enum ApplyError {
    Spec(SpecError),
    Io(CgroupIoError),
}

/// Best effort: a controller the kernel lacks is simply not enabled; writes to its files fail
/// later with the file named.
fn enable_controllers(dir: &Path) {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in CONTROLLERS {
        let offered = available.split_whitespace().any(|a| a == *c);
        let on = enabled.split_whitespace().any(|a| a == *c);
        if offered && !on {
            if let Err(e) = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
                log::warn!("cannot enable the {c} controller in {}: {e}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    struct TempTree(PathBuf);
    impl TempTree {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "rust-vm-cgroup-{tag}-{}-{:?}",
                std::process::id(),
                thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).expect("temp dir");
            fs::write(p.join("cgroup.controllers"), "cpuset cpu io memory pids\n").expect("w");
            fs::write(p.join("cgroup.subtree_control"), "").expect("w");
            TempTree(p)
        }
    }
    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn resources() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .expect("cpu"),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(256i64 << 20)
                    .swap(512i64 << 20)
                    .build()
                    .expect("memory"),
            )
            .pids(
                LinuxPidsBuilder::default()
                    .limit(64i64)
                    .build()
                    .expect("pids"),
            )
            .build()
            .expect("resources")
    }

    #[test]
    fn shares_map_onto_weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(0), 100);
    }

    #[test]
    fn resources_become_v2_files() {
        let w = resource_writes(&resources()).expect("valid");
        let get = |f: &str| w.iter().find(|(k, _)| k == f).map(|(_, v)| v.as_str());
        assert_eq!(get("cpu.weight"), Some("39"));
        assert_eq!(get("cpu.max"), Some("50000 100000"));
        assert_eq!(get("memory.max"), Some("268435456"));
        assert_eq!(get("memory.swap.max"), Some("268435456"));
        assert_eq!(get("pids.max"), Some("64"));
    }

    #[test]
    fn unlimited_values_become_max() {
        let r = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(-1i64)
                    .build()
                    .expect("cpu"),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(-1i64)
                    .swap(-1i64)
                    .build()
                    .expect("mem"),
            )
            .pids(
                LinuxPidsBuilder::default()
                    .limit(-1i64)
                    .build()
                    .expect("pids"),
            )
            .build()
            .expect("resources");
        let w = resource_writes(&r).expect("valid");
        assert!(w.contains(&("cpu.max".into(), "max 100000".into())));
        assert!(w.contains(&("memory.max".into(), "max".into())));
        assert!(w.contains(&("memory.swap.max".into(), "max".into())));
        assert!(w.contains(&("pids.max".into(), "max".into())));
    }

    #[test]
    fn swap_below_memory_names_the_field() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(100i64)
                    .swap(50i64)
                    .build()
                    .expect("mem"),
            )
            .build()
            .expect("resources");
        let e = resource_writes(&r).expect_err("invalid");
        assert_eq!(e.field, "linux.resources.memory.swap");
    }

    #[test]
    fn create_enables_controllers_and_applies_limits() {
        let t = TempTree::new("apply");
        let root = t.0.join("rust-vm");
        let cg = Cgroup::create(&root, Path::new("c1")).expect("create");
        assert!(cg.path().is_dir());
        let ctl = fs::read_to_string(t.0.join("cgroup.subtree_control")).expect("read");
        assert!(
            ctl.starts_with('+'),
            "controllers enabled at the top: {ctl:?}"
        );
        cg.apply(&resources()).expect("apply");
        let read = |f: &str| fs::read_to_string(cg.path().join(f)).expect("file");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("memory.max"), "268435456");
        assert_eq!(read("pids.max"), "64");
        assert!(
            Cgroup::create(&root, Path::new("c1")).is_err(),
            "a second create must fail"
        );
    }

    #[test]
    fn stats_and_oom_kills_are_read_from_v2_files() {
        let t = TempTree::new("stats");
        let cg = Cgroup::create(&t.0.join("rust-vm"), Path::new("c2")).expect("create");
        let p = cg.path();
        fs::write(
            p.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )
        .expect("w");
        fs::write(p.join("memory.current"), "4096\n").expect("w");
        fs::write(p.join("memory.max"), "max\n").expect("w");
        fs::write(p.join("pids.current"), "3\n").expect("w");
        fs::write(p.join("pids.max"), "64\n").expect("w");
        fs::write(
            p.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n",
        )
        .expect("w");
        let s = cg.stats().expect("stats");
        assert_eq!(s.cpu_usage_usec, 1500);
        assert_eq!(s.cpu_user_usec, 1000);
        assert_eq!(s.cpu_system_usec, 500);
        assert_eq!(s.memory_usage_bytes, Some(4096));
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.pids_current, Some(3));
        assert_eq!(s.pids_limit, Some(64));
        assert_eq!(s.oom_kills, Some(2));
    }

    /// A cgroup2 hierarchy without the memory and pids controllers (like this host's
    /// /sys/fs/cgroup/unified): only the core files and cpu.stat exist.
    #[test]
    fn stats_report_what_exists_without_memory_and_pids_controllers() {
        let t = TempTree::new("stats-partial");
        let cg = Cgroup::create(&t.0.join("rust-vm"), Path::new("c4")).expect("create");
        fs::write(
            cg.path().join("cpu.stat"),
            "usage_usec 900
user_usec 600
",
        )
        .expect("w");
        let s = cg.stats().expect("stats without memory and pids files");
        assert_eq!(s.cpu_usage_usec, 900);
        assert_eq!((s.cpu_user_usec, s.cpu_system_usec), (600, 0));
        assert_eq!((s.memory_usage_bytes, s.memory_limit_bytes), (None, None));
        assert_eq!((s.pids_current, s.pids_limit), (None, None));
        assert_eq!(s.oom_kills, None);
        assert_eq!(cg.oom_kills().expect("oom kills"), None);
    }

    /// containerd and Kubernetes nest cgroupsPath (`/default/ID`, `kubepods/.../ID`): the
    /// levels created for a container go with it, unless another container still uses them.
    #[test]
    fn nested_cgroup_paths_leave_nothing_behind() {
        let t = TempTree::new("nested");
        let root = t.0.join("rust-vm");
        let cg = Cgroup::create(&root, Path::new("pod/a/c5")).expect("create");
        assert!(cg.path().is_dir());
        cg.remove(Duration::from_millis(100)).expect("remove");
        assert!(
            !root.join("pod").exists(),
            "intermediate cgroups outlived their container"
        );
        assert!(root.is_dir(), "the agent's parent cgroup stays");

        let a = Cgroup::create(&root, Path::new("pod2/a")).expect("create a");
        let b = Cgroup::create(&root, Path::new("pod2/b")).expect("create b");
        a.remove(Duration::from_millis(100)).expect("remove a");
        assert!(root.join("pod2/b").is_dir(), "b's parent is still in use");
        b.remove(Duration::from_millis(100)).expect("remove b");
        assert!(!root.join("pod2").exists());
    }

    #[test]
    fn kill_all_uses_cgroup_kill_or_each_pid() {
        let t = TempTree::new("kill");
        let cg = Cgroup::create(&t.0.join("rust-vm"), Path::new("c3")).expect("create");
        fs::write(cg.path().join("cgroup.procs"), "").expect("w");
        fs::write(cg.path().join("cgroup.kill"), "0").expect("w");
        cg.kill_all(&|_| panic!("cgroup.kill must be used"))
            .expect("kill");
        assert_eq!(
            fs::read_to_string(cg.path().join("cgroup.kill")).expect("r"),
            "1"
        );

        fs::remove_file(cg.path().join("cgroup.kill")).expect("rm");
        fs::write(cg.path().join("cgroup.procs"), "41\n42\n").expect("w");
        let killed = std::sync::Mutex::new(Vec::new());
        let procs = cg.path().join("cgroup.procs");
        cg.kill_all(&|pid| {
            killed.lock().expect("lock").push(pid);
            fs::write(&procs, "")
        })
        .expect("kill");
        assert_eq!(*killed.lock().expect("lock"), vec![41, 42]);
        fs::remove_file(cg.path().join("cgroup.procs")).expect("rm");
        cg.remove(Duration::from_millis(100)).expect("remove");
        assert!(!cg.path().exists());
    }
}
