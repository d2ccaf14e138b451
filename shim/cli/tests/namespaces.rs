//! `rust-vm` end to end with the `namespaces` back-end (the agent on the host in fresh
//! namespaces; tests and debugging only) on busybox bundles. Root only.

mod common;

use std::time::{Duration, Instant};

use common::{alive, bundle, bundle_with, without_pid_namespace, Runtime};

const ROOT: &str = "needs root (namespaces, mounts)";

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn run_echo_prints_hello_and_exits_0() {
    let rt = Runtime::namespaces();
    let bundle = bundle(&["echo", "hello"]);
    let out = rt.run(
        &[
            "run",
            "--bundle",
            &bundle.path().display().to_string(),
            "c1",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !rt.container_dir("c1").exists(),
        "run left its state behind"
    );
    let _ = ROOT;
}

fn run_exit_code(args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> Option<i32> {
    let rt = Runtime::namespaces();
    let bundle = bundle_with(args, edit);
    let out = rt.run(
        &["run", "-b", &bundle.path().display().to_string(), "c"],
        None,
    );
    out.status.code()
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn run_exit_status_is_the_containers() {
    assert_eq!(run_exit_code(&["true"], |_| {}), Some(0));
    assert_eq!(run_exit_code(&["sh", "-c", "exit 3"], |_| {}), Some(3));
    // Killed by a signal: 128 + signal, as a shell reports it.
    assert_eq!(
        run_exit_code(&["sh", "-c", "kill -KILL $$"], without_pid_namespace),
        Some(137)
    );
    assert_eq!(
        run_exit_code(&["sh", "-c", "kill -TERM $$"], without_pid_namespace),
        Some(143)
    );
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn run_pipes_stdin_through() {
    let rt = Runtime::namespaces();
    let bundle = bundle(&["cat"]);
    let input = b"line one\nline two\n".repeat(1000);
    let out = rt.run(
        &["run", "-b", &bundle.path().display().to_string(), "cat"],
        Some(&input),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, input);
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn run_keeps_stdout_and_stderr_apart() {
    let rt = Runtime::namespaces();
    let bundle = bundle(&["sh", "-c", "echo out; echo err >&2"]);
    let out = rt.run(
        &["run", "-b", &bundle.path().display().to_string(), "c"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn lifecycle_created_running_stopped_then_delete_removes_everything() {
    let rt = Runtime::namespaces();
    let io = tempfile::tempdir().expect("tempdir");
    let bundle = bundle(&["sh", "-c", "echo started; sleep 30"]);
    rt.create("life", &bundle, io.path());
    let state = rt.state("life");
    assert_eq!(state["status"], "created");
    assert_eq!(state["ociVersion"], "1.0.2");
    assert_eq!(state["id"], "life");
    assert_eq!(
        state["bundle"].as_str().map(std::path::PathBuf::from),
        Some(bundle.path().canonicalize().expect("canonical"))
    );
    let pid = state["pid"].as_u64().expect("pid") as u32;
    assert!(
        pid > 1 && alive(pid),
        "pid {pid} is not a live host process"
    );
    let sandbox = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(rt.container_dir("life").join("state.json")).expect("record"),
    )
    .expect("record json")["sandbox_pid"]
        .as_u64()
        .expect("sandbox pid") as u32;

    rt.ok(&["start", "life"]);
    assert_eq!(rt.status("life"), "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(io.path().join("stdout")).unwrap_or_default() != "started\n" {
        assert!(
            Instant::now() < deadline,
            "no output from the started container"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.ok(&["kill", "life", "KILL"]);
    rt.wait_status("life", "stopped", Duration::from_secs(10));
    assert_eq!(rt.state("life")["pid"], 0);

    rt.ok(&["delete", "life"]);
    assert!(!rt.container_dir("life").exists(), "state directory left");
    assert!(!alive(pid), "container process {pid} left");
    assert!(!alive(sandbox), "agent {sandbox} left");
    assert!(rt.ok(&["list", "--quiet"]).is_empty());
    let err = rt.fails(&["state", "life"]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn kill_delivers_the_signal() {
    let rt = Runtime::namespaces();
    let io = tempfile::tempdir().expect("tempdir");
    let bundle = bundle(&[
        "sh",
        "-c",
        "trap 'echo got USR1; exit 0' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    rt.create("sig", &bundle, io.path());
    rt.ok(&["start", "sig"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(io.path().join("stdout"))
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "container never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.ok(&["kill", "sig", "USR1"]);
    rt.wait_status("sig", "stopped", Duration::from_secs(10));
    let out = std::fs::read_to_string(io.path().join("stdout")).expect("stdout");
    assert_eq!(out, "ready\ngot USR1\n");
    let exit: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rt.container_dir("sig").join("exit.json")).expect("exit.json"),
    )
    .expect("json");
    assert_eq!(exit["exit_code"], 0);
    rt.ok(&["delete", "sig"]);
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn exec_runs_in_the_container() {
    let rt = Runtime::namespaces();
    let io = tempfile::tempdir().expect("tempdir");
    let bundle = bundle_with(&["sleep", "30"], |spec| {
        spec["hostname"] = "exec-test".into();
    });
    rt.create("ex", &bundle, io.path());
    rt.ok(&["start", "ex"]);
    let out = rt.ok(&["exec", "ex", "hostname"]);
    assert_eq!(out, "exec-test\n");
    let out = rt.run(&["exec", "ex", "sh", "-c", "echo to-err >&2; exit 5"], None);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-err\n");
    let out = rt.run(&["exec", "ex", "cat"], Some(b"via exec stdin"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via exec stdin");
    let ps = rt.ok(&["ps", "--format", "json", "ex"]);
    let pids: Vec<u32> = serde_json::from_str(&ps).expect("ps json");
    assert!(!pids.is_empty(), "ps lists no process");
    rt.ok(&["delete", "--force", "ex"]);
    assert!(!rt.container_dir("ex").exists());
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn run_detach_returns_at_once() {
    let rt = Runtime::namespaces();
    let bundle = bundle(&["sleep", "60"]);
    let started = Instant::now();
    let status = rt
        .command()
        .args(["run", "--detach", "--bundle"])
        .arg(bundle.path())
        .arg("det")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run -d");
    let took = started.elapsed();
    assert!(status.success());
    assert!(took < Duration::from_secs(15), "run --detach took {took:?}");
    assert_eq!(rt.status("det"), "running");
    let err = rt.fails(&["delete", "det"]);
    assert!(err.contains("running"), "{err}");
    rt.ok(&["delete", "--force", "det"]);
    assert!(!rt.container_dir("det").exists());
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn errors_name_the_problem() {
    let rt = Runtime::namespaces();
    let err = rt.fails(&["run", "--bundle", "/nonexistent/bundle", "x"]);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    let empty = tempfile::tempdir().expect("tempdir");
    let err = rt.fails(&[
        "create",
        "--bundle",
        &empty.path().display().to_string(),
        "x",
    ]);
    assert!(err.contains("config.json"), "{err}");
    let bad = bundle_with(&["true"], |spec| {
        spec["process"]["args"] = serde_json::json!([])
    });
    let err = rt.fails(&["create", "--bundle", &bad.path().display().to_string(), "x"]);
    assert!(err.contains("process.args"), "{err}");
    let err = rt.fails(&["start", "nope"]);
    assert!(err.contains("\"nope\" does not exist"), "{err}");
    let err = rt.fails(&["kill", "nope", "KILL"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = rt.fails(&["kill", "nope", "NOTASIGNAL"]);
    assert!(err.contains("NOTASIGNAL"), "{err}");

    let io = tempfile::tempdir().expect("tempdir");
    let bundle = bundle(&["sleep", "30"]);
    rt.create("dup", &bundle, io.path());
    let err = rt.fails(&[
        "create",
        "--bundle",
        &bundle.path().display().to_string(),
        "dup",
    ]);
    assert!(err.contains("already exists"), "{err}");
    let err = rt.fails(&["exec", "dup", "true"]);
    assert!(err.contains("created") && err.contains("running"), "{err}");
    rt.ok(&["start", "dup"]);
    let err = rt.fails(&["start", "dup"]);
    assert!(err.contains("is running"), "{err}");
    rt.ok(&["delete", "--force", "dup"]);
    // A spec the agent refuses: the error comes back naming the field.
    let refused = bundle_with(&["true"], |spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(serde_json::json!({"type": "bogus"}));
    });
    let err = rt.fails(&[
        "run",
        "--bundle",
        &refused.path().display().to_string(),
        "bad",
    ]);
    assert!(err.contains("bogus") || err.contains("namespace"), "{err}");
    assert!(!rt.container_dir("bad").exists(), "failed run left state");
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn a_killed_monitor_takes_its_sandbox_along_and_delete_cleans_up() {
    let rt = Runtime::namespaces();
    let io = tempfile::tempdir().expect("tempdir");
    let bundle = bundle(&["sleep", "60"]);
    rt.create("orphan", &bundle, io.path());
    rt.ok(&["start", "orphan"]);
    let container = rt.state("orphan")["pid"].as_u64().expect("pid") as u32;
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rt.container_dir("orphan").join("state.json")).expect("record"),
    )
    .expect("json");
    let owner = record["owner_pid"].as_u64().expect("owner") as i32;
    let agent = record["sandbox_pid"].as_u64().expect("agent") as u32;
    // SAFETY: kill(2) of the monitor this test started.
    unsafe {
        libc::kill(owner, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(agent) || alive(container) {
        assert!(
            Instant::now() < deadline,
            "agent {agent} or container {container} outlived the monitor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rt.status("orphan"), "stopped");
    let cgroup =
        rust_vm_sandbox::host_cgroup::name("orphan", &rt.container_dir("orphan").join("sandbox"));
    let cgroup_root = std::path::Path::new(rust_vm_sandbox::host_cgroup::CGROUP_ROOT);
    let hierarchy = if cgroup_root.join("cgroup.controllers").is_file() {
        cgroup_root.to_path_buf()
    } else {
        cgroup_root.join("pids")
    };
    let cgroup_dir = hierarchy.join("rust-vm").join(&cgroup);
    assert!(
        cgroup_dir.exists(),
        "the killed monitor's cgroup is not where expected"
    );
    rt.ok(&["delete", "orphan"]);
    assert!(!rt.container_dir("orphan").exists());
    assert!(!cgroup_dir.exists(), "{} left behind", cgroup_dir.display());
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn run_forwards_signals_to_the_container() {
    let rt = Runtime::namespaces();
    let bundle = bundle(&[
        "sh",
        "-c",
        "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done",
    ]);
    let mut child = rt
        .command()
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg("fwd")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("ready line");
    assert_eq!(&first, b"ready\n");
    // SAFETY: kill(2) of the `rust-vm run` this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest");
    let status = child.wait().expect("wait");
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(7));
    assert!(!rt.container_dir("fwd").exists());
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn list_and_state_show_every_container() {
    let rt = Runtime::namespaces();
    let io = tempfile::tempdir().expect("tempdir");
    let bundle = bundle_with(&["sleep", "30"], |spec| {
        spec["annotations"] = serde_json::json!({"org.example.k": "v"});
    });
    rt.create("l1", &bundle, io.path());
    rt.create("l2", &bundle, io.path());
    rt.ok(&["start", "l2"]);
    assert_eq!(rt.ok(&["list", "-q"]), "l1\nl2\n");
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).expect("json");
    let status: Vec<(&str, &str)> = list
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(status, vec![("l1", "created"), ("l2", "running")]);
    assert_eq!(rt.state("l1")["annotations"]["org.example.k"], "v");
    let table = rt.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    rt.ok(&["delete", "--force", "l1"]);
    rt.ok(&["delete", "--force", "l2"]);
    assert!(rt.ok(&["list", "-q"]).is_empty());
}

#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn run_with_a_terminal_relays_it() {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    let rt = Runtime::namespaces();
    let bundle = bundle_with(&["sh"], |spec| spec["process"]["terminal"] = true.into());
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = |fd: &OwnedFd| std::process::Stdio::from(fd.try_clone().expect("dup"));
    let mut child = rt
        .command()
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg("tty")
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .expect("run");
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    master
        .write_all(b"test -t 0 && echo tty-$((20+22)); exit 3\n")
        .expect("write");
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output.extend_from_slice(&buf[..n]),
            // EIO: every slave descriptor is closed.
            Err(_) => break,
        }
    }
    let status = child.wait().expect("wait");
    let text = String::from_utf8_lossy(&output);
    assert!(
        text.contains("tty-42"),
        "no output from the terminal: {text:?}"
    );
    assert_eq!(status.code(), Some(3), "{text:?}");
}

/// A guest that stops answering (here the host-mode agent, stopped) cannot hold its caller: a
/// create gives up at the caller's deadline or the agent timeout, whichever comes first, and the
/// pod still shuts down.
#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn a_silent_agent_fails_the_create_in_time_and_the_pod_still_goes() {
    use rust_vm_sandbox::protocol::ClientError;
    use rust_vm_sandbox::{Backend, NewContainer, Pod, PodError, RuntimeConfig};

    let bundle = bundle(&["sleep", "100"]);
    let spec =
        oci_spec::runtime::Spec::load(bundle.path().join("config.json")).expect("bundle spec");
    let rootfs = bundle.path().join("rootfs");
    let state = tempfile::tempdir().expect("tempdir");
    let mut cfg = RuntimeConfig::default().sandbox_config("silent", &state.path().join("sb"));
    cfg.backend = Backend::Namespaces;
    cfg.agent_path = common::agent();
    cfg.agent_timeout = Duration::from_secs(4);
    cfg.first_container(&rootfs, &spec);
    let pod = Pod::start(cfg).expect("pod");
    let agent_pid = pod.pid();
    // SAFETY: kill(2) on the agent we started.
    assert_eq!(unsafe { libc::kill(agent_pid as i32, libc::SIGSTOP) }, 0);

    let create = |id: &str, deadline: Option<Instant>| {
        let new = NewContainer {
            id,
            bundle: bundle.path(),
            spec: &spec,
            rootfs: &rootfs,
            terminal: false,
            console_size: None,
            stdin: false,
            deadline,
        };
        let started = Instant::now();
        let err = pod
            .create_container(&new, |_| Ok::<(), std::io::Error>(()))
            .err()
            .expect("a stopped agent cannot create");
        assert!(
            matches!(
                &err,
                PodError::Create {
                    source: ClientError::Timeout { .. },
                    ..
                }
            ),
            "{err}"
        );
        started.elapsed()
    };
    // The caller's deadline (a ttrpc request's) comes first.
    let took = create("c1", Some(Instant::now() + Duration::from_secs(1)));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // Without one, the agent timeout.
    let took = create("c2", None);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "took {took:?}"
    );

    let started = Instant::now();
    pod.shutdown().expect("shutdown");
    // The shutdown request times out (4 s), the guest gets 3 s more, then it is killed.
    assert!(started.elapsed() < Duration::from_secs(12));
    assert!(!alive(agent_pid), "the stopped agent outlived its pod");
}

/// The sandbox's host processes run in a cgroup of its own, bounded by the VM's size plus the
/// overhead, under each controller; it is gone with the sandbox.
#[test]
#[ignore = "needs root (namespaces, mounts)"]
fn the_sandbox_runs_in_a_bounded_host_cgroup_that_goes_with_it() {
    use rust_vm_sandbox::host_cgroup::{self, Limits, CGROUP_ROOT};
    use rust_vm_sandbox::{Backend, Pod, RuntimeConfig};

    let bundle = bundle(&["true"]);
    let spec =
        oci_spec::runtime::Spec::load(bundle.path().join("config.json")).expect("bundle spec");
    let state = tempfile::tempdir().expect("tempdir");
    let state_dir = state.path().join("sb");
    let mut cfg = RuntimeConfig::default().sandbox_config("bounded", &state_dir);
    cfg.backend = Backend::Namespaces;
    cfg.agent_path = common::agent();
    cfg.vcpus = 2;
    cfg.mem_mib = 300;
    cfg.first_container(&bundle.path().join("rootfs"), &spec);
    let pod = Pod::start(cfg).expect("pod");
    let name = host_cgroup::name("bounded", &state_dir);
    let membership = std::fs::read_to_string(format!("/proc/{}/cgroup", pod.pid()))
        .expect("the agent's cgroups");
    let root = std::path::Path::new(CGROUP_ROOT);
    let limits = Limits::for_vm(2, 300);
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    };
    let dirs: Vec<std::path::PathBuf> = if root.join("cgroup.controllers").is_file() {
        assert!(
            membership.contains(&format!("::/rust-vm/{name}\n")),
            "{membership}"
        );
        let dir = root.join("rust-vm").join(&name);
        assert_eq!(
            read(dir.join("memory.max")),
            limits.memory_bytes.to_string()
        );
        assert_eq!(read(dir.join("cpu.max")), "300000 100000");
        vec![dir]
    } else {
        for controller in ["memory", "cpu", "pids"] {
            assert!(
                membership.lines().any(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
                    controllers.is_some_and(|c| c.split(',').any(|c| c == controller))
                        && path == Some(format!("/rust-vm/{name}").as_str())
                }),
                "not in the {controller} cgroup: {membership}"
            );
        }
        let at = |c: &str| root.join(c).join("rust-vm").join(&name);
        assert_eq!(
            read(at("memory").join("memory.limit_in_bytes")),
            limits.memory_bytes.to_string()
        );
        assert_eq!(read(at("cpu").join("cpu.cfs_quota_us")), "300000");
        assert_eq!(read(at("pids").join("pids.max")), limits.pids.to_string());
        vec![at("memory"), at("cpu"), at("pids")]
    };
    pod.shutdown().expect("shutdown");
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
