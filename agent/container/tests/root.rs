//! Real containers from a busybox rootfs, created directly through the API. The test is the
//! reaper here (the agent's reaper in production). Needs root.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

mod support;

use rust_vm_container::{
    CgroupConfig, Container, ContainerError, CreateRequest, LinuxSyscalls, ProcessHandle,
    RootfsSource, RuntimeConfig, StdioSpec, DEFAULT_STEP_TIMEOUT,
};
use support::swap::{SwapBeforeMount, MARKER};
use support::{mounts_under, spec_from, spec_json, BusyboxRootfs};

fn config(rootfs: &BusyboxRootfs) -> RuntimeConfig {
    RuntimeConfig {
        // This host has cgroup v1; the cgroup code is tested against a fake v2 tree.
        cgroups: CgroupConfig::Disabled,
        state_dir: rootfs.path().join("state"),
        step_timeout: DEFAULT_STEP_TIMEOUT,
    }
}

struct Output {
    read: OwnedFd,
}

impl Output {
    fn text(self) -> String {
        let mut s = String::new();
        fs::File::from(self.read)
            .read_to_string(&mut s)
            .expect("reading the container's output");
        s
    }
}

fn pipes() -> (StdioSpec, Output) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let stderr = write.try_clone().expect("dup");
    (
        StdioSpec::Pipes {
            stdin: None,
            stdout: write,
            stderr,
        },
        Output { read },
    )
}

fn create(
    rootfs: &BusyboxRootfs,
    id: &str,
    spec: serde_json::Value,
    stdio: StdioSpec,
) -> Result<(Container, ProcessHandle), ContainerError> {
    Container::create_with_config(
        CreateRequest {
            id: id.to_string(),
            spec: spec_from(&spec),
            rootfs: RootfsSource::Directory(rootfs.root()),
            stdio,
        },
        Arc::new(LinuxSyscalls),
        config(rootfs),
    )
}

fn wait(pid: i32) -> WaitStatus {
    waitpid(Pid::from_raw(pid), None).expect("waitpid")
}

/// Everything written to a pty until its slave side closed (then EIO), with CR LF as LF.
fn read_pty(master: OwnedFd) -> String {
    let mut text = Vec::new();
    let _ = fs::File::from(master).read_to_end(&mut text);
    String::from_utf8_lossy(&text).replace('\r', "")
}

/// Creates and starts `spec` on a 24x80 terminal, reads the pty to its end and reaps the
/// process: the container (still to destroy), the process's pid, its wait status and its text.
fn run_on_a_terminal(
    rootfs: &BusyboxRootfs,
    id: &str,
    spec: serde_json::Value,
) -> (Container, i32, WaitStatus, String) {
    let (mut c, h) =
        create(rootfs, id, spec, StdioSpec::Terminal { rows: 24, cols: 80 }).expect("create");
    let master = h.pty_master.expect("a pty master");
    c.start().expect("start");
    let text = read_pty(master);
    (c, h.pid, wait(h.pid), text)
}

fn assert_gone(pid: i32) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty(), "process {pid} is still there: {stat}");
}

#[test]
#[ignore = "needs root"]
fn busybox_runs_as_pid_1_with_the_specs_identity() {
    let rootfs = BusyboxRootfs::new("identity");
    let mut spec = spec_json(&[
        "sh",
        "-c",
        "echo $$; hostname; id -u; id -g; id -G; pwd; echo $FOO",
    ]);
    spec["process"]["user"] =
        serde_json::json!({"uid": 1000, "gid": 1001, "additionalGids": [1002]});
    spec["process"]["cwd"] = "/home/user".into();
    let (stdio, out) = pipes();
    let (mut c, handle) = create(&rootfs, "identity", spec, stdio).expect("create");
    assert!(handle.pty_master.is_none());
    // Blocked before exec: the init exists but has not run the program yet.
    assert!(Path::new(&format!("/proc/{}", handle.pid)).exists());
    c.start().expect("start");
    let text = out.text();
    assert_eq!(
        wait(handle.pid),
        WaitStatus::Exited(Pid::from_raw(handle.pid), 0)
    );
    assert_eq!(text, "1\nbox\n1000\n1001\n1001 1002\n/home/user\nbar\n");
    c.destroy().expect("destroy");
    assert!(mounts_under(&rootfs.root()).is_empty());
}

#[test]
#[ignore = "needs root"]
fn exit_codes_and_signals_reach_the_reaper() {
    let rootfs = BusyboxRootfs::new("exit");
    let (stdio, _out) = pipes();
    let (mut c, h) =
        create(&rootfs, "exit3", spec_json(&["sh", "-c", "exit 3"]), stdio).expect("create");
    c.start().expect("start");
    assert_eq!(wait(h.pid), WaitStatus::Exited(Pid::from_raw(h.pid), 3));
    c.destroy().expect("destroy");

    let (stdio, _out) = pipes();
    let (mut c, h) =
        create(&rootfs, "killed", spec_json(&["sleep", "100"]), stdio).expect("create");
    c.start().expect("start");
    c.signal(h.pid, libc::SIGKILL).expect("signal");
    assert_eq!(
        wait(h.pid),
        WaitStatus::Signaled(Pid::from_raw(h.pid), Signal::SIGKILL, false)
    );
    assert!(
        c.signal(1, libc::SIGTERM).is_err(),
        "pid 1 of the host is not the container's"
    );
    c.destroy().expect("destroy");
}

#[test]
#[ignore = "needs root"]
fn destroy_before_start_leaves_nothing() {
    let rootfs = BusyboxRootfs::new("unstarted");
    let (stdio, out) = pipes();
    let (c, h) =
        create(&rootfs, "unstarted", spec_json(&["echo", "never"]), stdio).expect("create");
    c.destroy().expect("destroy");
    assert!(matches!(
        wait(h.pid),
        WaitStatus::Signaled(_, Signal::SIGKILL, _) | WaitStatus::Exited(..)
    ));
    assert_eq!(out.text(), "", "the program must not have run");
    assert_gone(h.pid);
    assert!(mounts_under(&rootfs.root()).is_empty());
}

#[test]
#[ignore = "needs root"]
fn exec_joins_the_running_container() {
    let rootfs = BusyboxRootfs::new("exec");
    let (stdio, _out) = pipes();
    let (mut c, h) = create(&rootfs, "exec", spec_json(&["sleep", "30"]), stdio).expect("create");
    c.start().expect("start");
    let process = spec_from(&spec_json(&[
        "sh",
        "-c",
        "echo $$; hostname; cat /proc/1/cmdline",
    ]))
    .process()
    .clone()
    .expect("process");
    let (stdio, out) = pipes();
    let e = c.exec(&process, stdio).expect("exec");
    let text = out.text();
    assert_eq!(wait(e.pid), WaitStatus::Exited(Pid::from_raw(e.pid), 0));
    let lines: Vec<&str> = text.lines().collect();
    assert_ne!(lines[0], "1", "the exec'd shell is not the init");
    assert!(
        lines[0].parse::<u32>().expect("a pid") < 100,
        "a pid of the container's namespace"
    );
    assert_eq!(lines[1], "box");
    assert!(
        lines[2].starts_with("sleep"),
        "sees the container's pid 1: {text:?}"
    );
    assert!(c.pids().expect("pids").contains(&h.pid));
    c.destroy().expect("destroy");
    assert!(matches!(
        wait(h.pid),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
}

#[test]
#[ignore = "needs root"]
fn a_terminal_process_gets_a_controlling_pty() {
    let rootfs = BusyboxRootfs::new("tty");
    let mut spec = spec_json(&["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo tty-ok; tty"]);
    spec["process"]["terminal"] = true.into();
    let (c, pid, status, text) = run_on_a_terminal(&rootfs, "tty", spec);
    assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 0));
    assert!(text.contains("tty-ok"), "{text:?}");
    // The pty is the container's own (its devpts instance), so it has a name in there.
    assert!(text.contains("\n/dev/pts/0\n"), "{text:?}");
    c.destroy().expect("destroy");
}

/// Like runc: the pty belongs to the process's user, so programs that reopen their terminal
/// by name work for non-root users too.
#[test]
#[ignore = "needs root"]
fn a_terminal_belongs_to_the_processs_user() {
    let rootfs = BusyboxRootfs::new("tty-user");
    let mut spec = spec_json(&[
        "sh",
        "-c",
        "stat -c owner=%u:%g $(tty); echo reopened >$(tty)",
    ]);
    spec["process"]["terminal"] = true.into();
    spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    let (c, pid, status, text) = run_on_a_terminal(&rootfs, "tty-user", spec);
    assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 0), "{text}");
    assert!(text.contains("owner=1000:1000\n"), "{text:?}");
    assert!(text.contains("reopened\n"), "{text:?}");
    c.destroy().expect("destroy");
}

#[test]
#[ignore = "needs root"]
fn a_failed_mount_is_reported_and_rolled_back() {
    let rootfs = BusyboxRootfs::new("badmount");
    let mut spec = spec_json(&["true"]);
    spec["mounts"].as_array_mut().expect("mounts").push(serde_json::json!({
        "destination": "/data", "type": "bind", "source": "/nonexistent/rust-vm", "options": ["rbind"]
    }));
    let (stdio, _out) = pipes();
    let err = create(&rootfs, "badmount", spec, stdio).expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("mounts[3]"), "{msg}");
    assert!(mounts_under(&rootfs.root()).is_empty());
    assert!(
        !rootfs.root().join("data").exists() || fs::read_dir(rootfs.root().join("data")).is_ok()
    );
}

#[test]
#[ignore = "needs root"]
fn user_namespace_maps_root() {
    let rootfs = BusyboxRootfs::new("userns");
    let mut spec = spec_json(&["sh", "-c", "id -u; cat /proc/self/uid_map"]);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(serde_json::json!({"type": "user"}));
    spec["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // A fresh user namespace cannot mount a new devpts with a gid option it does not map.
    spec["mounts"].as_array_mut().expect("mounts").truncate(2);
    let (stdio, out) = pipes();
    let (mut c, h) = create(&rootfs, "userns", spec, stdio).expect("create");
    c.start().expect("start");
    let text = out.text();
    assert_eq!(wait(h.pid), WaitStatus::Exited(Pid::from_raw(h.pid), 0));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"));
    let map: Vec<&str> = lines.next().expect("uid_map").split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
    c.destroy().expect("destroy");
}

#[test]
#[ignore = "needs root"]
fn block_device_rootfs_is_mounted_and_unmounted() {
    let rootfs = BusyboxRootfs::new("block");
    let image = rootfs.path().join("rootfs.ext4");
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(rootfs.root())
        .arg(&image)
        .arg("16M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(ok.success());
    let loopdev = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&image)
        .output()
        .expect("losetup");
    assert!(loopdev.status.success(), "{loopdev:?}");
    let loopdev = String::from_utf8_lossy(&loopdev.stdout).trim().to_string();
    let (stdio, out) = pipes();
    let result = Container::create_with_config(
        CreateRequest {
            id: "block".into(),
            spec: spec_from(&spec_json(&["cat", "/etc/passwd"])),
            rootfs: RootfsSource::BlockDevice {
                device: loopdev.clone().into(),
                fstype: "ext4".into(),
                readonly: true,
            },
            stdio,
        },
        Arc::new(LinuxSyscalls),
        config(&rootfs),
    );
    let check = || -> Result<(), String> {
        let (mut c, h) = result.map_err(|e| e.to_string())?;
        let state = rootfs.path().join("state");
        if mounts_under(&state).is_empty() {
            return Err("the block device is not mounted".into());
        }
        c.start().map_err(|e| e.to_string())?;
        let text = out.text();
        wait(h.pid);
        c.destroy().map_err(|e| e.to_string())?;
        if !text.starts_with("root:x:0:0") {
            return Err(format!("unexpected output {text:?}"));
        }
        if !mounts_under(&state).is_empty() {
            return Err("the mount outlived destroy".into());
        }
        if state.join("block").exists() {
            return Err("the state directory outlived destroy".into());
        }
        Ok(())
    };
    let outcome = check();
    let _ = Command::new("losetup").args(["-d", &loopdev]).status();
    outcome.expect("block device rootfs");
}

fn run_to_end(rootfs: &BusyboxRootfs, id: &str, spec: serde_json::Value) -> (WaitStatus, String) {
    let (stdio, out) = pipes();
    let (mut c, h) = create(rootfs, id, spec, stdio).expect("create");
    c.start().expect("start");
    let text = out.text();
    let status = wait(h.pid);
    c.destroy().expect("destroy");
    (status, text)
}

#[test]
#[ignore = "needs root"]
fn seccomp_capabilities_rlimits_and_no_new_privs_are_enforced() {
    let rootfs = BusyboxRootfs::new("confine");
    let mut spec = spec_json(&[
        "sh",
        "-c",
        "mkdir /tmp/x 2>/dev/null || echo mkdir-denied; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; ulimit -n",
    ]);
    spec["process"]["noNewPrivileges"] = true.into();
    spec["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"],
    });
    spec["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512}]);
    spec["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    });
    let (status, text) = run_to_end(&rootfs, "confine", spec);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    // CAP_KILL is bit 5.
    assert_eq!(
        text,
        "mkdir-denied\nCapEff:\t0000000000000020\nCapBnd:\t0000000000000020\nNoNewPrivs:\t1\n256\n"
    );
    assert!(!rootfs.root().join("tmp/x").exists());
}

#[test]
#[ignore = "needs root"]
fn masked_readonly_paths_and_a_readonly_root() {
    let rootfs = BusyboxRootfs::new("masked");
    let mut spec = spec_json(&[
        "sh",
        "-c",
        "cat /proc/timer_list | wc -c; echo x > /proc/sys/kernel/domainname || echo sys-ro; touch /newfile || echo root-ro; ls /proc/irq | wc -l",
    ]);
    spec["root"]["readonly"] = true.into();
    spec["linux"]["maskedPaths"] =
        serde_json::json!(["/proc/timer_list", "/proc/irq", "/proc/nonexistent"]);
    let (status, text) = run_to_end(&rootfs, "masked", spec);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?} {text}"
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("Read-only")).collect();
    assert_eq!(lines, ["0", "sys-ro", "root-ro", "0"], "{text}");
    assert!(!rootfs.root().join("newfile").exists());
}

#[test]
#[ignore = "needs root"]
fn only_stdio_reaches_the_container() {
    let rootfs = BusyboxRootfs::new("fds");
    let (status, text) = run_to_end(&rootfs, "fds", spec_json(&["ls", "/proc/self/fd"]));
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    // 0-2, plus the directory ls is reading.
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
}

/// This host is cgroup v1 with an empty cgroup2 hierarchy at /sys/fs/cgroup/unified: no
/// controllers, but the real kernel interface for membership, kill and removal.
#[test]
#[ignore = "needs root and a cgroup2 mount at /sys/fs/cgroup/unified"]
fn cgroup_v2_membership_kill_and_removal_on_the_real_kernel() {
    let unified = Path::new("/sys/fs/cgroup/unified");
    assert!(
        unified.join("cgroup.procs").exists(),
        "no cgroup2 hierarchy at {unified:?}"
    );
    let rootfs = BusyboxRootfs::new("cgroup");
    let cg_root = unified.join(format!("rust-vm-test-{}", std::process::id()));
    /// Removes the test's parent cgroup even when an assertion fails.
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = fs::remove_dir(self.0.join("cg"));
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _guard = RemoveOnDrop(cg_root.clone());
    let mut spec = spec_json(&["sh", "-c", "grep '^0::' /proc/self/cgroup; sleep 30"]);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(serde_json::json!({"type": "cgroup"}));
    let (stdio, out) = pipes();
    let (mut c, h) = Container::create_with_config(
        CreateRequest {
            id: "cg".into(),
            spec: spec_from(&spec),
            rootfs: RootfsSource::Directory(rootfs.root()),
            stdio,
        },
        Arc::new(LinuxSyscalls),
        RuntimeConfig {
            cgroups: CgroupConfig::V2 {
                root: cg_root.clone(),
            },
            state_dir: rootfs.path().join("state"),
            step_timeout: DEFAULT_STEP_TIMEOUT,
        },
    )
    .expect("create");
    let cg_dir = c.cgroup_path().expect("a cgroup").to_path_buf();
    assert_eq!(cg_dir, cg_root.join("cg"));
    c.start().expect("start");
    let mut out = std::io::BufReader::new(fs::File::from(out.read));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).expect("first line");
    // The cgroup namespace's root is the container's cgroup.
    assert_eq!(first, "0::/\n");
    let procs = fs::read_to_string(cg_dir.join("cgroup.procs")).expect("cgroup.procs");
    assert!(procs.lines().any(|l| l == h.pid.to_string()), "{procs}");
    let process = spec_from(&spec_json(&["sleep", "30"]))
        .process()
        .clone()
        .expect("process");
    let (stdio, _exec_out) = pipes();
    let e = c.exec(&process, stdio).expect("exec");
    let pids = c.pids().expect("pids");
    assert!(pids.contains(&h.pid) && pids.contains(&e.pid), "{pids:?}");
    c.signal(e.pid, libc::SIGTERM)
        .expect("signal an exec'd process");
    assert!(matches!(
        wait(e.pid),
        WaitStatus::Signaled(_, Signal::SIGTERM, _)
    ));
    c.destroy().expect("destroy");
    assert!(matches!(
        wait(h.pid),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    assert!(!cg_dir.exists(), "the cgroup outlived destroy");
}

#[test]
#[ignore = "needs root"]
fn the_agents_signal_mask_and_ignored_signals_do_not_reach_the_container() {
    use nix::sys::signal::{signal, SigHandler, SigSet, SigmaskHow};
    let rootfs = BusyboxRootfs::new("signals");
    // This thread creates the container: what it blocks, fork would copy.
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGUSR1);
    blocked.thread_block().expect("block SIGUSR1");
    // SAFETY: SIG_IGN for a signal nothing in the test process uses.
    unsafe { signal(Signal::SIGUSR2, SigHandler::SigIgn) }.expect("ignore SIGUSR2");
    let (status, text) = run_to_end(
        &rootfs,
        "signals",
        spec_json(&["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]),
    );
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&blocked), None)
        .expect("unblock");
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    assert_eq!(
        text,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

fn userns_spec(args: &[&str]) -> serde_json::Value {
    let mut spec = spec_json(args);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(serde_json::json!({"type": "user"}));
    spec["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    spec["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    // proc, /dev and the container's devpts (a terminal's pty comes from it).
    spec["mounts"].as_array_mut().expect("mounts").truncate(3);
    spec
}

#[test]
#[ignore = "needs root"]
fn exec_with_a_terminal_into_a_user_namespace_container() {
    let rootfs = BusyboxRootfs::new("exec-userns");
    let (stdio, _out) = pipes();
    let (mut c, h) =
        create(&rootfs, "exec-userns", userns_spec(&["sleep", "30"]), stdio).expect("create");
    c.start().expect("start");
    let mut process = spec_from(&userns_spec(&[
        "sh",
        "-c",
        "[ -t 0 ] && echo tty; tty; id -u; cat /proc/self/uid_map; hostname",
    ]))
    .process()
    .clone()
    .expect("process");
    process.set_terminal(Some(true));
    let e = c
        .exec(
            &process,
            StdioSpec::Terminal {
                rows: 30,
                cols: 100,
            },
        )
        .expect("exec");
    let text = read_pty(e.pty_master.expect("pty master"));
    assert_eq!(wait(e.pid), WaitStatus::Exited(Pid::from_raw(e.pid), 0));
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["tty"],
            vec!["/dev/pts/0"],
            vec!["0"],
            vec!["0", "200000", "65536"],
            vec!["box"]
        ],
        "{text}"
    );
    c.destroy().expect("destroy");
    assert!(matches!(
        wait(h.pid),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
}

/// A directory on the way to a mount destination is swapped for a symlink out of the rootfs
/// right before the mount (what a container sharing that directory could do then): the mount
/// still lands where the destination was resolved, inside the rootfs.
#[test]
#[ignore = "needs root"]
fn a_symlink_swap_before_a_mount_cannot_move_it_out_of_the_rootfs() {
    let rootfs = BusyboxRootfs::new("swap");
    let root = rootfs.root();
    fs::create_dir_all(root.join("vol/a/target")).expect("mkdir");
    let outside = rootfs.path().join("outside");
    fs::create_dir_all(outside.join("target")).expect("mkdir");
    let mut spec = spec_json(&["true"]);
    spec["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/vol/a/target",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": [MARKER],
        }));
    let sys = Arc::new(SwapBeforeMount::new(root.join("vol/a"), outside.clone()));
    let (stdio, _out) = pipes();
    let (c, h) = Container::create_with_config(
        CreateRequest {
            id: "swap".into(),
            spec: spec_from(&spec),
            rootfs: RootfsSource::Directory(root.clone()),
            stdio,
        },
        sys,
        config(&rootfs),
    )
    .expect("create");
    let mountinfo =
        fs::read_to_string(format!("/proc/{}/mountinfo", h.pid)).expect("the init's mountinfo");
    c.destroy().expect("destroy");
    wait(h.pid);
    assert!(
        root.join("vol/a.real").is_dir() && root.join("vol/a").is_symlink(),
        "the swap did not happen"
    );
    let at = |point: &str| {
        mountinfo.lines().any(|l| {
            l.split(' ').nth(4) == Some(point) && l.contains(" - tmpfs ") && l.contains(MARKER)
        })
    };
    assert!(
        at("/vol/a.real/target"),
        "the tmpfs is not on the directory that was resolved:\n{mountinfo}"
    );
}
