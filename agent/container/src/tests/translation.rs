//! Spec -> syscalls through `RecordingSyscalls`: what the container process would do, in
//! order, without root.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use caps::Capability;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::SFlag;

use super::support::{spec_from, spec_json};
use crate::channel::{Channel, Message};
use crate::init::{init_steps, ChildArgs, ChildStdio, Role, TerminalSize};
use crate::process::ProcessPlan;
use crate::rootfs::RootfsSetup;
use crate::syscalls::recording::{Call, RecordingSyscalls};
use crate::syscalls::FileKind;

const ROOTFS: &str = "/run/test/rootfs";

fn mount_call(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Call {
    Call::Mount {
        source: source.map(PathBuf::from),
        target: PathBuf::from(target),
        fstype: fstype.map(str::to_string),
        flags,
        data: data.map(str::to_string),
    }
}

/// Asserts `want` appears in `calls` in this order (other calls may come between).
fn assert_in_order(calls: &[Call], want: &[Call]) {
    let mut at = 0;
    for w in want {
        match calls[at..].iter().position(|c| c == w) {
            Some(i) => at += i + 1,
            None => panic!("missing (in order) {w:?}\nall calls: {calls:#?}"),
        }
    }
}

fn position(calls: &[Call], pred: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("call not found in {calls:#?}"))
}

/// Runs the whole init sequence against the recording syscalls; `Start` is already queued,
/// so it ends at the (recorded, failing) execve.
fn run_init(v: &serde_json::Value, sys: &RecordingSyscalls, new_user: bool) -> (Vec<Call>, String) {
    let (calls, err, messages) = run_init_with(v, sys, new_user, None);
    assert_eq!(messages, [Message::Ready]);
    (calls, err)
}

/// [`run_init`] with an optional terminal; also returns the messages the agent got, and
/// checks that a `Terminal` message carries a descriptor.
fn run_init_with(
    v: &serde_json::Value,
    sys: &RecordingSyscalls,
    new_user: bool,
    terminal: Option<TerminalSize>,
) -> (Vec<Call>, String, Vec<Message>) {
    let spec = spec_from(v);
    let plan =
        ProcessPlan::new(spec.process().as_ref().expect("process"), "process").expect("plan");
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(|s| crate::seccomp::compile(s).expect("profile"));
    let (agent, child) = Channel::pair().expect("pair");
    agent.send(&Message::Start).expect("queue start");
    let args = ChildArgs {
        sys,
        role: Role::Init {
            spec: &spec,
            rootfs: Path::new(ROOTFS),
            cgroup: None,
        },
        process: &plan,
        join: &[],
        new_user,
        root_mapped: new_user,
        unshare: CloneFlags::empty(),
        stdio: ChildStdio {
            fds: [10, 11, 12],
            terminal,
        },
        chan: child.raw(),
        seccomp: seccomp.as_ref(),
    };
    let err =
        init_steps(&args, &spec, Path::new(ROOTFS), None).expect_err("execve is recorded, not run");
    drop(child);
    let mut messages = Vec::new();
    while let Some((m, fd)) = agent.recv_with_fd().expect("recv") {
        assert_eq!(fd.is_some(), m == Message::Terminal, "{m:?}");
        messages.push(m);
    }
    (sys.calls(), err.to_string(), messages)
}

fn busybox_sys() -> RecordingSyscalls {
    let sys = RecordingSyscalls::new();
    sys.add_file("/bin/sh", FileKind::File);
    sys
}

/// The pty comes from the container's /dev/ptmx: opened after pivot_root, made the controlling
/// terminal and stdio, and its master sent to the agent before `Ready`, all before the
/// process drops privileges.
#[test]
fn a_terminal_is_opened_inside_the_container_after_pivot_root() {
    let mut v = spec_json(&["sh"]);
    v["process"]["terminal"] = true.into();
    v["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    let sys = busybox_sys();
    let size = TerminalSize {
        rows: 40,
        cols: 132,
    };
    let (calls, err, messages) = run_init_with(&v, &sys, false, Some(size));
    assert!(err.starts_with("exec /bin/sh"), "{err}");
    assert_eq!(messages, [Message::Terminal, Message::Ready]);
    let pivot = position(&calls, |c| matches!(c, Call::PivotRoot(..)));
    let open = position(&calls, |c| *c == Call::OpenPty(40, 132));
    let ctty = position(&calls, |c| matches!(c, Call::SetControllingTerminal(_)));
    let Call::SetControllingTerminal(slave) = calls[ctty] else {
        unreachable!()
    };
    let stdio: Vec<usize> = (0..3)
        .map(|t| position(&calls, |c| *c == Call::Dup2(slave, t)))
        .collect();
    let setuid = position(&calls, |c| *c == Call::Setresuid(1000));
    let chown = position(&calls, |c| *c == Call::Fchown(slave, 1000, 1000));
    assert!(open < chown && chown < setuid, "{calls:#?}");
    assert!(pivot < open && open < ctty, "{calls:#?}");
    assert!(stdio.iter().all(|&d| ctty < d && d < setuid), "{calls:#?}");
    // Until then stdio is what the agent passed (/dev/null for a terminal process).
    assert!(position(&calls, |c| *c == Call::Dup2(10, 0)) < pivot);
}

#[test]
fn init_runs_the_whole_sequence_in_order() {
    let mut v = spec_json(&["sh", "-c", "true"]);
    v["process"]["user"] =
        serde_json::json!({"uid": 1000, "gid": 1001, "additionalGids": [5], "umask": 0o027});
    v["process"]["cwd"] = "/home".into();
    v["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}]);
    let sys = busybox_sys();
    let (calls, err) = run_init(&v, &sys, false);
    assert!(err.starts_with("exec /bin/sh"), "{err}");
    let slave_rec = MsFlags::MS_SLAVE | MsFlags::MS_REC;
    assert_in_order(
        &calls,
        &[
            Call::Setsid,
            Call::Dup2(10, 0),
            Call::Dup2(11, 1),
            Call::Dup2(12, 2),
            Call::Umask(0),
            mount_call(None, "/", None, slave_rec, None),
            mount_call(
                Some(ROOTFS),
                ROOTFS,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            ),
            mount_call(
                Some("proc"),
                "/run/test/rootfs/proc",
                Some("proc"),
                MsFlags::empty(),
                None,
            ),
            mount_call(
                Some("tmpfs"),
                "/run/test/rootfs/dev",
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
                Some("mode=755,size=65536k"),
            ),
            mount_call(
                Some("devpts"),
                "/run/test/rootfs/dev/pts",
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            ),
            Call::Mknod(
                "/run/test/rootfs/dev/null".into(),
                SFlag::S_IFCHR,
                0o666,
                nix::sys::stat::makedev(1, 3),
            ),
            Call::Mknod(
                "/run/test/rootfs/dev/tty".into(),
                SFlag::S_IFCHR,
                0o666,
                nix::sys::stat::makedev(5, 0),
            ),
            Call::Symlink("/proc/self/fd".into(), "/run/test/rootfs/dev/fd".into()),
            Call::Symlink("pts/ptmx".into(), "/run/test/rootfs/dev/ptmx".into()),
            Call::Chdir(ROOTFS.into()),
            Call::PivotRoot(".".into(), ".".into()),
            mount_call(None, ".", None, slave_rec, None),
            Call::Umount2(".".into(), MntFlags::MNT_DETACH),
            Call::Chdir("/".into()),
            Call::Sethostname("box".into()),
            Call::CloexecFrom(3),
            Call::Setrlimit(libc::RLIMIT_NOFILE as i32, 1024, 4096),
            Call::Setgroups(vec![5]),
            Call::Setresgid(1001),
            Call::Setresuid(1000),
            Call::Umask(0o027),
            Call::Chdir("/home".into()),
            Call::Execve(
                CString::new("/bin/sh").expect("c"),
                ["sh", "-c", "true"]
                    .map(|s| CString::new(s).expect("c"))
                    .to_vec(),
                ["PATH=/bin:/sbin", "FOO=bar"]
                    .map(|s| CString::new(s).expect("c"))
                    .to_vec(),
            ),
        ],
    );
    // Without a `capabilities` section the sets are left as the user switch leaves them.
    assert!(!calls.iter().any(|c| matches!(c, Call::SetCapabilities(..))));
}

#[test]
fn bind_options_become_a_bind_and_a_remount() {
    let mut v = spec_json(&["sh"]);
    v["mounts"] = serde_json::json!([
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro", "nosuid", "rprivate"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["bind"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
    ]);
    let sys = busybox_sys();
    sys.add_file("/srv/data", FileKind::Directory);
    sys.add_file("/etc/resolv.conf", FileKind::File);
    sys.set_mount_flags(
        "/run/test/rootfs/data",
        MsFlags::MS_NODEV | MsFlags::MS_RELATIME,
    );
    // Each case spells out its set-up and the calls it expects: the cases differ in the spec
    // and in the calls, and reading one case top to bottom is the point.
    let setup = RootfsSetup {
        sys: &sys,
        spec: &spec_from(&v),
        rootfs: Path::new(ROOTFS),
        in_user_ns: false,
        own_cgroup: None,
    };
    setup.prepare().expect("prepare");
    let calls = sys.calls();
    assert_in_order(
        &calls,
        &[
            // No /dev mount in the spec: the agent puts a tmpfs there itself.
            mount_call(
                Some("tmpfs"),
                "/run/test/rootfs/dev",
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
                Some("mode=755,size=65536k"),
            ),
            Call::MkdirAll("/run/test/rootfs/data".into(), 0o755),
            mount_call(
                Some("/srv/data"),
                "/run/test/rootfs/data",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            ),
            // The remount keeps the locked nodev it found.
            mount_call(
                None,
                "/run/test/rootfs/data",
                None,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV,
                None,
            ),
            mount_call(
                None,
                "/run/test/rootfs/data",
                None,
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                None,
            ),
            Call::CreateFile("/run/test/rootfs/etc/resolv.conf".into()),
            mount_call(
                Some("/etc/resolv.conf"),
                "/run/test/rootfs/etc/resolv.conf",
                None,
                MsFlags::MS_BIND,
                None,
            ),
            mount_call(
                Some("sysfs"),
                "/run/test/rootfs/sys",
                Some("sysfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
                None,
            ),
            mount_call(
                Some("cgroup"),
                "/run/test/rootfs/sys/fs/cgroup",
                Some("cgroup2"),
                MsFlags::MS_RDONLY,
                None,
            ),
            mount_call(
                Some("mqueue"),
                "/run/test/rootfs/dev/mqueue",
                Some("mqueue"),
                MsFlags::empty(),
                None,
            ),
        ],
    );
    // A plain bind has nothing to remount.
    let resolv_mounts = calls
        .iter()
        .filter(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/run/test/rootfs/etc/resolv.conf")))
        .count();
    assert_eq!(resolv_mounts, 1);
}

#[test]
fn a_cgroup_mount_binds_the_containers_own_cgroup_read_only() {
    // No cgroup namespace in the spec (containerd on a cgroup v1 host): as with runc, the
    // container's /sys/fs/cgroup is its own cgroup, where it reads its limits.
    let mut v = spec_json(&["sh"]);
    v["mounts"] = serde_json::json!([
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]);
    let sys = busybox_sys();
    let own = "/sys/fs/cgroup/rust-vm/k8s.io/c1";
    sys.add_file(own, FileKind::Directory);
    let setup = RootfsSetup {
        sys: &sys,
        spec: &spec_from(&v),
        rootfs: Path::new(ROOTFS),
        in_user_ns: false,
        own_cgroup: Some(Path::new(own)),
    };
    setup.prepare().expect("prepare");
    let calls = sys.calls();
    assert_in_order(
        &calls,
        &[
            Call::MkdirAll("/run/test/rootfs/sys/fs/cgroup".into(), 0o755),
            mount_call(
                Some(own),
                "/run/test/rootfs/sys/fs/cgroup",
                None,
                MsFlags::MS_BIND,
                None,
            ),
            mount_call(
                None,
                "/run/test/rootfs/sys/fs/cgroup",
                None,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_RELATIME
                    | MsFlags::MS_RDONLY,
                None,
            ),
        ],
    );
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "cgroup2")),
        "no fresh cgroup2 mount: {calls:?}"
    );
}

#[test]
fn masked_and_readonly_paths_and_readonly_root() {
    let mut v = spec_json(&["sh"]);
    v["root"]["readonly"] = true.into();
    v["linux"]["maskedPaths"] = serde_json::json!(["/proc/kcore", "/proc/acpi", "/proc/missing"]);
    v["linux"]["readonlyPaths"] = serde_json::json!(["/proc/sys", "/proc/gone"]);
    v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
    let sys = busybox_sys();
    sys.add_file("/proc/kcore", FileKind::File);
    sys.add_file("/proc/acpi", FileKind::Directory);
    sys.add_file("/proc/sys", FileKind::Directory);
    sys.set_mount_flags("/", MsFlags::MS_NOSUID);
    let setup = RootfsSetup {
        sys: &sys,
        spec: &spec_from(&v),
        rootfs: Path::new(ROOTFS),
        in_user_ns: false,
        own_cgroup: None,
    };
    setup.finalize().expect("finalize");
    let ro_remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    // Sysctls first: once /proc/sys is read-only they could not be written (podman sets one).
    assert_eq!(
        sys.calls(),
        vec![
            Call::WriteFile("/proc/sys/net/ipv4/ip_forward".into(), b"1".to_vec()),
            mount_call(
                Some("/proc/sys"),
                "/proc/sys",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None
            ),
            mount_call(None, "/proc/sys", None, ro_remount | MsFlags::MS_REC, None),
            mount_call(
                Some("/dev/null"),
                "/proc/kcore",
                None,
                MsFlags::MS_BIND,
                None
            ),
            mount_call(
                Some("tmpfs"),
                "/proc/acpi",
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None
            ),
            mount_call(None, "/", None, ro_remount | MsFlags::MS_NOSUID, None),
        ]
    );
}

#[test]
fn a_missing_working_directory_is_made_before_the_root_goes_read_only() {
    let mut v = spec_json(&["sh"]);
    v["root"]["readonly"] = true.into();
    v["process"]["cwd"] = "/work/dir".into();
    let sys = busybox_sys();
    let setup = RootfsSetup {
        sys: &sys,
        spec: &spec_from(&v),
        rootfs: Path::new(ROOTFS),
        in_user_ns: false,
        own_cgroup: None,
    };
    setup.finalize().expect("finalize");
    let ro_remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    assert_eq!(
        sys.calls(),
        vec![
            Call::MkdirAll("/work/dir".into(), 0o755),
            mount_call(None, "/", None, ro_remount, None),
        ]
    );
}

#[test]
fn devices_in_a_user_namespace_are_bind_mounted() {
    let mut v = spec_json(&["sh"]);
    v["linux"]["devices"] = serde_json::json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600, "uid": 0, "gid": 0}]);
    let sys = busybox_sys();
    let setup = RootfsSetup {
        sys: &sys,
        spec: &spec_from(&v),
        rootfs: Path::new(ROOTFS),
        in_user_ns: true,
        own_cgroup: None,
    };
    setup.prepare().expect("prepare");
    let calls = sys.calls();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Mknod(..))),
        "no mknod in a user namespace"
    );
    assert_in_order(
        &calls,
        &[
            Call::CreateFile("/run/test/rootfs/dev/null".into()),
            mount_call(
                Some("/dev/null"),
                "/run/test/rootfs/dev/null",
                None,
                MsFlags::MS_BIND,
                None,
            ),
            Call::CreateFile("/run/test/rootfs/dev/fuse".into()),
            mount_call(
                Some("/dev/fuse"),
                "/run/test/rootfs/dev/fuse",
                None,
                MsFlags::MS_BIND,
                None,
            ),
        ],
    );

    let sys = busybox_sys();
    let setup = RootfsSetup {
        sys: &sys,
        spec: &spec_from(&v),
        rootfs: Path::new(ROOTFS),
        in_user_ns: false,
        own_cgroup: None,
    };
    setup.prepare().expect("prepare");
    assert_in_order(
        &sys.calls(),
        &[
            Call::Mknod(
                "/run/test/rootfs/dev/fuse".into(),
                SFlag::S_IFCHR,
                0o600,
                nix::sys::stat::makedev(10, 229),
            ),
            Call::Chown("/run/test/rootfs/dev/fuse".into(), Some(0), Some(0)),
        ],
    );
}

#[test]
fn capabilities_are_set_around_the_user_switch() {
    let mut v = spec_json(&["sh"]);
    v["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    v["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "effective": ["CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    });
    let sys = busybox_sys();
    let (calls, _) = run_init(&v, &sys, false);
    let one: caps::CapsHashSet = [Capability::CAP_NET_BIND_SERVICE].into_iter().collect();
    let bounding: caps::CapsHashSet = [Capability::CAP_NET_BIND_SERVICE, Capability::CAP_KILL]
        .into_iter()
        .collect();
    assert_in_order(
        &calls,
        &[
            Call::SetCapabilities("bounding", bounding),
            Call::SetKeepCaps(true),
            Call::Setgroups(vec![]),
            Call::Setresgid(1000),
            Call::Setresuid(1000),
            Call::SetKeepCaps(false),
            Call::SetCapabilities("inheritable", one.clone()),
            Call::SetCapabilities("effective", one.clone()),
            Call::SetCapabilities("permitted", one.clone()),
            Call::SetCapabilities("ambient", one),
            Call::Execve(
                CString::new("/bin/sh").expect("c"),
                vec![CString::new("sh").expect("c")],
                ["PATH=/bin:/sbin", "FOO=bar"]
                    .map(|s| CString::new(s).expect("c"))
                    .to_vec(),
            ),
        ],
    );
}

#[test]
fn seccomp_loads_late_with_no_new_privs_and_early_without() {
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    let mut v = spec_json(&["sh"]);
    v["linux"]["seccomp"] = profile.clone();
    v["process"]["noNewPrivileges"] = true.into();
    let sys = busybox_sys();
    let (calls, _) = run_init(&v, &sys, false);
    let nnp = position(&calls, |c| *c == Call::SetNoNewPrivs);
    let setuid = position(&calls, |c| matches!(c, Call::Setresuid(_)));
    let load = position(&calls, |c| *c == Call::LoadSeccomp);
    let ready_wait = position(
        &calls,
        |c| matches!(c, Call::Chdir(p) if p == Path::new("/")),
    );
    assert!(nnp < setuid && setuid < load, "{calls:#?}");
    assert!(load > ready_wait);

    let mut v = spec_json(&["sh"]);
    v["linux"]["seccomp"] = profile;
    let sys = busybox_sys();
    let (calls, _) = run_init(&v, &sys, false);
    assert!(!calls.contains(&Call::SetNoNewPrivs));
    let load = position(&calls, |c| *c == Call::LoadSeccomp);
    let setuid = position(&calls, |c| matches!(c, Call::Setresuid(_)));
    assert!(
        load < setuid,
        "without no_new_privs the filter needs CAP_SYS_ADMIN: {calls:#?}"
    );
}

#[test]
fn the_program_is_found_in_the_process_path() {
    let mut v = spec_json(&["prog", "x"]);
    v["process"]["env"] = serde_json::json!(["PATH=/opt/bin:/usr/bin"]);
    let sys = RecordingSyscalls::new();
    sys.add_file("/usr/bin/prog", FileKind::File);
    let (calls, _) = run_init(&v, &sys, false);
    assert!(calls
        .iter()
        .any(|c| matches!(c, Call::Execve(p, ..) if p.as_bytes() == b"/usr/bin/prog")));

    let sys = RecordingSyscalls::new();
    let spec = spec_from(&v);
    let plan =
        ProcessPlan::new(spec.process().as_ref().expect("process"), "process").expect("plan");
    let err = plan.executable(&sys).expect_err("not found").to_string();
    assert!(
        err.contains("process.args[0]") && err.contains("/opt/bin:/usr/bin"),
        "{err}"
    );
}

#[test]
fn a_failing_mount_stops_the_sequence_and_names_the_mount() {
    let sys = busybox_sys();
    sys.fail_when(|c| match c {
        Call::Mount {
            fstype: Some(t), ..
        } if t == "devpts" => Some(libc::EPERM),
        _ => None,
    });
    let v = spec_json(&["sh"]);
    let spec = spec_from(&v);
    let setup = RootfsSetup {
        sys: &sys,
        spec: &spec,
        rootfs: Path::new(ROOTFS),
        in_user_ns: false,
        own_cgroup: None,
    };
    let err = setup.prepare().expect_err("devpts fails").to_string();
    assert!(
        err.contains("mounts[2] (/dev/pts)") && err.contains("mounting devpts"),
        "{err}"
    );
    assert!(
        matches!(sys.calls().last(), Some(Call::Mount { fstype: Some(t), .. }) if t == "devpts")
    );
}

#[test]
fn a_refused_pivot_root_is_an_error_with_no_chroot_fallback() {
    let sys = busybox_sys();
    sys.fail_when(|c| matches!(c, Call::PivotRoot(..)).then_some(libc::EINVAL));
    let spec = spec_from(&spec_json(&["sh"]));
    let setup = RootfsSetup {
        sys: &sys,
        spec: &spec,
        rootfs: Path::new(ROOTFS),
        in_user_ns: false,
        own_cgroup: None,
    };
    let err = setup.pivot().expect_err("EINVAL").to_string();
    assert!(err.contains("pivot_root into"), "{err}");
    assert_eq!(
        sys.calls(),
        vec![
            Call::Chdir(ROOTFS.into()),
            Call::PivotRoot(".".into(), ".".into()),
        ],
        "nothing after the refusal"
    );
}
