//! The verbs' bookkeeping without root: `create` end to end with recorded syscalls (the
//! forks are real, the namespaces and mounts are not), its rollback, and `update`/`stats`
//! against a directory tree shaped like cgroup v2.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder};

use super::support::{spec_from, spec_json};
use crate::cgroup::Cgroup;
use crate::syscalls::recording::{Call, RecordingSyscalls};
use crate::syscalls::FileKind;
use crate::{
    CgroupConfig, Container, ContainerError, CreateRequest, RootfsSource, RuntimeConfig, Status,
    StdioSpec, DEFAULT_STEP_TIMEOUT,
};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("rust-vm-lifecycle-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn devnull_pipes() -> StdioSpec {
    let f = || fs::File::open("/dev/null").expect("/dev/null").into();
    StdioSpec::Pipes {
        stdin: None,
        stdout: f(),
        stderr: f(),
    }
}

#[test]
fn an_init_failure_unmounts_the_block_device_and_removes_the_state() {
    let tmp = TempDir::new("rollback");
    let sys = Arc::new(RecordingSyscalls::new());
    // The container process fails at its /proc mount; the agent must undo its own steps.
    sys.fail_when(|c| match c {
        Call::Mount {
            fstype: Some(t), ..
        } if t == "proc" => Some(libc::EPERM),
        _ => None,
    });
    let err = Container::create_with_config(
        CreateRequest {
            id: "rb".into(),
            spec: spec_from(&spec_json(&["sh"])),
            rootfs: RootfsSource::BlockDevice {
                device: "/dev/vdb".into(),
                fstype: "ext4".into(),
                readonly: true,
            },
            stdio: devnull_pipes(),
        },
        sys.clone(),
        RuntimeConfig {
            cgroups: CgroupConfig::Disabled,
            state_dir: tmp.0.join("state"),
            step_timeout: DEFAULT_STEP_TIMEOUT,
        },
    )
    .expect_err("the init fails");
    match &err {
        ContainerError::InitFailed { message, .. } => {
            assert!(message.contains("mounts[0] (/proc)"), "{message}")
        }
        other => panic!("unexpected {other}"),
    }
    let target = tmp.0.join("state/rb/rootfs");
    let calls = sys.calls();
    let agent_side: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            matches!(
                c,
                Call::FlushBlockDevice(..) | Call::Mount { .. } | Call::Umount2(..)
            )
        })
        .collect();
    assert_eq!(
        agent_side,
        [
            // Stale guest cache of a rewritten disk slot is dropped before the mount.
            &Call::FlushBlockDevice("/dev/vdb".into()),
            &Call::Mount {
                source: Some("/dev/vdb".into()),
                target: target.clone(),
                fstype: Some("ext4".into()),
                flags: MsFlags::MS_RDONLY,
                data: None,
            },
            &Call::Umount2(target, MntFlags::empty()),
        ]
    );
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::Kill(_, libc::SIGKILL))),
        "the intermediate and init are killed: {calls:?}"
    );
    assert!(
        !tmp.0.join("state/rb").exists(),
        "the state directory is removed"
    );
}

#[test]
fn a_block_device_whose_cache_cannot_be_dropped_is_not_mounted() {
    let tmp = TempDir::new("flush");
    let sys = Arc::new(RecordingSyscalls::new());
    sys.fail_when(|c| matches!(c, Call::FlushBlockDevice(..)).then_some(libc::ENXIO));
    let err = Container::create_with_config(
        CreateRequest {
            id: "fl".into(),
            spec: spec_from(&spec_json(&["sh"])),
            rootfs: RootfsSource::BlockDevice {
                device: "/dev/vdc".into(),
                fstype: "ext4".into(),
                readonly: false,
            },
            stdio: devnull_pipes(),
        },
        sys.clone(),
        RuntimeConfig {
            cgroups: CgroupConfig::Disabled,
            state_dir: tmp.0.join("state"),
            step_timeout: DEFAULT_STEP_TIMEOUT,
        },
    )
    .expect_err("the flush fails");
    let text = err.to_string();
    assert!(
        text.contains("dropping cached blocks of /dev/vdc"),
        "{text}"
    );
    assert!(
        !sys.calls().iter().any(|c| matches!(c, Call::Mount { .. })),
        "nothing is mounted: {:?}",
        sys.calls()
    );
    assert!(!tmp.0.join("state/fl").exists(), "state directory removed");
}

#[test]
fn a_dry_run_container_reaches_exec_only_on_start() {
    let tmp = TempDir::new("dryrun");
    let rootfs = tmp.0.join("rootfs");
    fs::create_dir_all(&rootfs).expect("rootfs");
    let sys = Arc::new(RecordingSyscalls::new());
    sys.add_file("/bin/sh", FileKind::File);
    let (mut c, handle) = Container::create_with_config(
        CreateRequest {
            id: "dry".into(),
            spec: spec_from(&spec_json(&["sh"])),
            rootfs: RootfsSource::Directory(rootfs),
            stdio: devnull_pipes(),
        },
        sys.clone(),
        RuntimeConfig {
            cgroups: CgroupConfig::Disabled,
            state_dir: tmp.0.join("state"),
            step_timeout: DEFAULT_STEP_TIMEOUT,
        },
    )
    .expect("create");
    assert!(handle.pid > 0);
    assert_eq!(c.status(), "created");
    assert!(sys.calls().contains(&Call::PidfdOpen(handle.pid)));
    // The recorded execve "fails", which start reports with the step.
    let err = c.start().expect_err("recorded exec");
    assert!(err.to_string().contains("exec /bin/sh"), "{err}");
    assert_eq!(c.status(), "stopped");
    assert!(matches!(
        c.start(),
        Err(ContainerError::InvalidState { .. })
    ));
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(handle.pid), None);
}

fn container_with_cgroup(tree: &Path, sys: Arc<RecordingSyscalls>) -> Container {
    let cg = Cgroup::create(&tree.join("rust-vm"), Path::new("c")).expect("cgroup");
    Container {
        id: "c".into(),
        spec: spec_from(&spec_json(&["sh"])),
        sys,
        status: Status::Running,
        init_pid: std::process::id() as i32,
        init_pidfd: fs::File::open("/dev/null").expect("stand-in fd").into(),
        start_chan: None,
        step_timeout: DEFAULT_STEP_TIMEOUT,
        cgroup: Some(cg),
        block_mount: None,
        state_dir: None,
        namespaces: Vec::new(),
        exec_pids: Vec::new(),
        torn_down: false,
    }
}

#[test]
fn update_and_stats_use_the_cgroup_files() {
    let tmp = TempDir::new("update");
    let mut c = container_with_cgroup(&tmp.0, Arc::new(RecordingSyscalls::new()));
    let dir = c.cgroup_path().expect("cgroup").to_path_buf();
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    c.update(&r).expect("update");
    assert_eq!(
        fs::read_to_string(dir.join("memory.max")).expect("read"),
        "67108864"
    );
    let bad = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(-5i64)
                .build()
                .expect("memory"),
        )
        .build()
        .expect("resources");
    match c.update(&bad) {
        Err(ContainerError::InvalidSpec(e)) => assert_eq!(e.field, "linux.resources.memory.limit"),
        other => panic!("unexpected {other:?}"),
    }
    fs::write(
        dir.join("cpu.stat"),
        "usage_usec 7\nuser_usec 5\nsystem_usec 2\n",
    )
    .expect("w");
    fs::write(dir.join("memory.current"), "1024\n").expect("w");
    fs::write(dir.join("pids.current"), "2\n").expect("w");
    fs::write(dir.join("pids.max"), "max\n").expect("w");
    fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").expect("w");
    let s = c.stats().expect("stats");
    assert_eq!(
        (s.cpu_usage_usec, s.memory_usage_bytes, s.memory_limit_bytes),
        (7, Some(1024), Some(67108864))
    );
    assert_eq!(
        (s.pids_current, s.pids_limit, s.oom_kills),
        (Some(2), None, Some(1))
    );
    assert_eq!(c.oom_kills().expect("oom"), Some(1));
}

#[test]
fn without_cgroups_stats_and_update_say_so() {
    let tmp = TempDir::new("nocg");
    let mut c = container_with_cgroup(&tmp.0, Arc::new(RecordingSyscalls::new()));
    c.cgroup = None;
    assert!(matches!(
        c.stats(),
        Err(ContainerError::CgroupsDisabled { .. })
    ));
    assert!(matches!(
        c.oom_kills(),
        Err(ContainerError::CgroupsDisabled { .. })
    ));
    let r = LinuxResourcesBuilder::default().build().expect("resources");
    assert!(matches!(
        c.update(&r),
        Err(ContainerError::CgroupsDisabled { .. })
    ));
}

#[test]
fn signals_go_only_to_the_containers_processes() {
    let tmp = TempDir::new("signal");
    let sys = Arc::new(RecordingSyscalls::new());
    let c = container_with_cgroup(&tmp.0, sys.clone());
    let dir = c.cgroup_path().expect("cgroup").to_path_buf();
    fs::write(dir.join("cgroup.procs"), "4242\n").expect("w");
    c.signal(4242, libc::SIGTERM).expect("a member");
    c.signal(c.init_pid(), libc::SIGHUP).expect("the init");
    assert!(matches!(
        c.signal(4243, libc::SIGTERM),
        Err(ContainerError::UnknownProcess { pid: 4243, .. })
    ));
    assert_eq!(
        sys.calls(),
        vec![
            Call::Kill(4242, libc::SIGTERM),
            Call::PidfdSendSignal(libc::SIGHUP)
        ]
    );
}
