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

use super::support::{mounts_under, spec_from, spec_json, BusyboxRootfs};
use crate::container::{
    CgroupConfig, Container, ContainerError, CreateRequest, LinuxSyscalls, ProcessHandle,
    RootfsSource, RuntimeConfig, StdioSpec,
};

fn config(rootfs: &BusyboxRootfs) -> RuntimeConfig {
    RuntimeConfig {
        // This host has cgroup v1; the cgroup code is tested against a fake v2 tree.
        cgroups: CgroupConfig::Disabled,
        state_dir: rootfs.dir.join("state"),
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
    let mut spec = spec_json(&["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo tty-ok"]);
    spec["process"]["terminal"] = true.into();
    let (mut c, h) = create(
        &rootfs,
        "tty",
        spec,
        StdioSpec::Terminal { rows: 24, cols: 80 },
    )
    .expect("create");
    let master = h.pty_master.expect("a pty master");
    c.start().expect("start");
    let mut text = Vec::new();
    // EIO once the slave side is closed.
    let _ = fs::File::from(master).read_to_end(&mut text);
    assert_eq!(wait(h.pid), WaitStatus::Exited(Pid::from_raw(h.pid), 0));
    assert!(
        String::from_utf8_lossy(&text).contains("tty-ok"),
        "{text:?}"
    );
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
    let image = rootfs.dir.join("rootfs.ext4");
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
        let state = rootfs.dir.join("state");
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
