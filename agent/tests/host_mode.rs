//! The agent binary in host mode, driven over the real protocol: real containers (namespaces,
//! pivot_root, ...) from a busybox rootfs. Needs root; run with `--include-ignored`.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{create_request, read_all, spec, spec_json, Agent, Bundle};
use rust_vm_protocol::{
    ClientError, ConsoleSize, ContainerStatus, ErrorCode, Exec, RootfsSource, StreamKind,
};
use rust_vm_test_support::{alive, mounts_under};

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    let err = result.expect_err("the agent should refuse");
    err.code()
        .unwrap_or_else(|| panic!("not an error from the agent: {err}"))
}

/// Runs `args` to completion in a fresh container; returns (exit code, stdout).
fn run(agent: &Agent, bundle: &Bundle, id: &str, spec_value: serde_json::Value) -> (i32, String) {
    let client = agent.client();
    client
        .create_container(create_request(bundle, id, &spec_value))
        .unwrap_or_else(|e| panic!("create {id}: {e}\n{}", agent.log_text()));
    let out = client
        .attach(id, None, StreamKind::Stdout)
        .expect("attach stdout");
    client.start(id).expect("start");
    let text = read_all(out);
    let status = client.wait(id, None).expect("wait");
    client.remove_container(id, false).expect("remove");
    (status.exit_code, text)
}

#[test]
#[ignore = "needs root"]
fn container_runs_as_pid_1_with_the_specs_identity() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let mut spec_value = spec_json(&["sh", "-c", "echo $$; hostname; id; pwd; echo FOO=$FOO"]);
    spec_value["process"]["user"] =
        serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [2000]});
    spec_value["process"]["cwd"] = "/home/user".into();
    let (code, text) = run(&agent, &bundle, "ident", spec_value);
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text:?}");
    assert_eq!(lines[0], "1", "PID in the container's namespace");
    assert_eq!(lines[1], "box");
    assert!(
        lines[2].starts_with("uid=1000(user) gid=1000(user)"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains("2000(extra)"), "{}", lines[2]);
    assert_eq!(lines[3], "/home/user");
    assert_eq!(lines[4], "FOO=bar");
}

#[test]
#[ignore = "needs root"]
fn exit_codes_0_3_and_128_plus_signal() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    assert_eq!(run(&agent, &bundle, "zero", spec_json(&["true"])).0, 0);
    assert_eq!(
        run(&agent, &bundle, "three", spec_json(&["sh", "-c", "exit 3"])).0,
        3
    );
    let client = agent.client();
    client
        .create_container(create_request(
            &bundle,
            "nine",
            &spec_json(&["sleep", "100"]),
        ))
        .unwrap();
    client.start("nine").unwrap();
    client.signal("nine", None, libc::SIGKILL, false).unwrap();
    let status = client.wait("nine", None).unwrap();
    assert_eq!((status.exit_code, status.signal), (137, Some(9)));
    assert_eq!(
        client.state("nine").unwrap().status,
        ContainerStatus::Stopped
    );
    client.remove_container("nine", false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_signal_is_delivered_to_the_container() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    // A PID 1 ignores signals it has no handler for, so the shell installs one.
    let script = "trap 'echo caught USR1; exit 42' USR1; echo ready; while :; do sleep 1; done";
    client
        .create_container(create_request(
            &bundle,
            "sig",
            &spec_json(&["sh", "-c", script]),
        ))
        .unwrap();
    let mut out = client.attach("sig", None, StreamKind::Stdout).unwrap();
    client.start("sig").unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    client.signal("sig", None, libc::SIGUSR1, false).unwrap();
    assert_eq!(client.wait("sig", None).unwrap().exit_code, 42);
    assert_eq!(read_all(out), "caught USR1\n");
    client.remove_container("sig", false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn stdin_is_piped_through() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    let mut req = create_request(&bundle, "cat", &spec_json(&["sh", "-c", "wc -c; cat"]));
    req.stdin = true;
    client.create_container(req).unwrap();
    let out = client.attach("cat", None, StreamKind::Stdout).unwrap();
    let mut stdin = client.attach("cat", None, StreamKind::Stdin).unwrap();
    client.start("cat").unwrap();
    let payload = vec![b'x'; 300_000];
    stdin.write_all(&payload).unwrap();
    stdin.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(out).trim(), "300000");
    assert_eq!(client.wait("cat", None).unwrap().exit_code, 0);
    client.remove_container("cat", false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn exec_into_a_running_container() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    client
        .create_container(create_request(
            &bundle,
            "host",
            &spec_json(&["sleep", "100"]),
        ))
        .unwrap();
    client.start("host").unwrap();
    let mut process = spec(&spec_json(&[
        "sh",
        "-c",
        "echo $$; hostname; cat /proc/1/cmdline; exit 5",
    ]))
    .process()
    .clone()
    .unwrap();
    process.set_cwd("/tmp".into());
    let started = client
        .exec(Exec {
            container_id: "host".into(),
            exec_id: "e1".into(),
            process: Box::new(process),
            console_size: None,
            stdin: false,
        })
        .unwrap_or_else(|e| panic!("exec: {e}\n{}", agent.log_text()));
    assert!(started.pid > 0);
    assert_eq!(client.wait("host", Some("e1")).unwrap().exit_code, 5);
    let text = read_all(
        client
            .attach("host", Some("e1"), StreamKind::Stdout)
            .unwrap(),
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_ne!(lines[0], "1", "the exec is not the container's init");
    assert_eq!(lines[1], "box", "the exec joined the uts namespace");
    assert!(
        lines[2].starts_with("sleep"),
        "the exec sees the container's pid 1: {text:?}"
    );
    let pids = client.list_processes("host").unwrap();
    assert!(
        pids.contains(&client.state("host").unwrap().pid),
        "{pids:?}"
    );
    client.remove_container("host", true).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_terminal_process() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    let script = "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; tty; stty size; read line; echo got:$line";
    let mut req = create_request(&bundle, "tty", &spec_json(&["sh", "-c", script]));
    req.terminal = true;
    req.console_size = Some(ConsoleSize {
        rows: 40,
        cols: 132,
    });
    client
        .create_container(req)
        .unwrap_or_else(|e| panic!("create: {e}\n{}", agent.log_text()));
    assert_eq!(
        code(client.attach("tty", None, StreamKind::Stderr)),
        ErrorCode::InvalidArgument
    );
    let out = client.attach("tty", None, StreamKind::Stdout).unwrap();
    let mut stdin = client.attach("tty", None, StreamKind::Stdin).unwrap();
    client.start("tty").unwrap();
    stdin.write_all(b"over the pty\n").unwrap();
    assert_eq!(client.wait("tty", None).unwrap().exit_code, 0);
    let text = read_all(out);
    assert!(text.contains("is-a-tty"), "{text:?}");
    assert!(
        text.contains("/dev/pts/0"),
        "the container's own pty: {text:?}"
    );
    assert!(text.contains("40 132"), "{text:?}");
    assert!(text.contains("got:over the pty"), "{text:?}");
    client.remove_container("tty", false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn tty_resize_reaches_the_process() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    let script = "read line; stty size";
    let mut req = create_request(&bundle, "rs", &spec_json(&["sh", "-c", script]));
    req.terminal = true;
    client.create_container(req).unwrap();
    let out = client.attach("rs", None, StreamKind::Stdout).unwrap();
    client.start("rs").unwrap();
    client.resize_tty("rs", None, 50, 160).unwrap();
    client.write_stdin("rs", None, b"go\n").unwrap();
    assert_eq!(client.wait("rs", None).unwrap().exit_code, 0);
    assert!(read_all(out).contains("50 160"));
    client.remove_container("rs", false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn stats_and_updates_need_cgroups() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    assert!(!client.version().unwrap().cgroups);
    client
        .create_container(create_request(&bundle, "st", &spec_json(&["sleep", "100"])))
        .unwrap();
    client.start("st").unwrap();
    let err = client.stats("st").unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unsupported), "{err}");
    assert!(err.to_string().contains("cgroups are disabled"), "{err}");
    let resources = serde_json::from_value(serde_json::json!({"pids": {"limit": 10}})).unwrap();
    let err = client.update_resources("st", resources).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unsupported), "{err}");
    let mut limit = spec_json(&["true"]);
    limit["linux"]["resources"] = serde_json::json!({"pids": {"limit": 10}});
    let err = client
        .create_container(create_request(&bundle, "limited", &limit))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    assert!(err.to_string().contains("linux.resources"), "{err}");
    client.remove_container("st", true).unwrap();
}

/// The real cgroup v2 kernel interface on this host is the controller-less hierarchy at
/// /sys/fs/cgroup/unified: membership, cpu.stat and kill work there, memory and pids files do not
/// exist, and stats report what there is.
#[test]
#[ignore = "needs root and a cgroup2 mount at /sys/fs/cgroup/unified"]
fn stats_from_a_real_cgroup2_hierarchy() {
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    assert!(
        unified.join("cgroup.procs").exists(),
        "no cgroup2 at {unified:?}"
    );
    let bundle = common::bundle();
    let root = unified.join(format!("rust-vm-agent-test-{}", std::process::id()));
    let root_arg = root.display().to_string();
    let agent = Agent::start(bundle.path(), &["--cgroup-root", &root_arg]);
    let client = agent.client();
    assert!(client.version().unwrap().cgroups);
    let burn = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo burnt; sleep 100";
    client
        .create_container(create_request(
            &bundle,
            "cg",
            &spec_json(&["sh", "-c", burn]),
        ))
        .unwrap_or_else(|e| panic!("create: {e}\n{}", agent.log_text()));
    let mut out = client.attach("cg", None, StreamKind::Stdout).unwrap();
    client.start("cg").unwrap();
    let mut line = [0u8; 6];
    out.read_exact(&mut line).unwrap();
    let procs = std::fs::read_to_string(root.join("cg/cgroup.procs")).unwrap();
    let pid = client.state("cg").unwrap().pid;
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    let controllers = std::fs::read_to_string(unified.join("cgroup.controllers")).unwrap();
    let stats = client
        .stats("cg")
        .unwrap_or_else(|e| panic!("stats: {e}\n{}", agent.log_text()));
    assert!(stats.cpu_usage_ns > 0, "{stats:?}");
    // Each figure is there exactly when its controller is (here memory and pids are bound to
    // the v1 hierarchies, so both are absent).
    let has = |c: &str| controllers.split_whitespace().any(|w| w == c);
    assert_eq!(
        stats.memory_usage_bytes.is_some(),
        has("memory"),
        "{stats:?}"
    );
    assert_eq!(stats.oom_kills.is_some(), has("memory"), "{stats:?}");
    assert_eq!(stats.pids_current.is_some(), has("pids"), "{stats:?}");
    if !has("memory") {
        assert_eq!(stats.memory_limit_bytes, None, "{stats:?}");
    }
    client.remove_container("cg", true).unwrap();
    assert!(
        !root.join("cg").exists(),
        "the container's cgroup outlived remove"
    );
    drop(agent);
    let _ = std::fs::remove_dir(&root);
}

#[test]
#[ignore = "needs root"]
fn remove_leaves_no_mount_and_no_process() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    let image = bundle.path().join("rootfs.ext4");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(bundle.root())
        .arg(&image)
        .arg("16M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.success());
    let losetup = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&image)
        .output()
        .expect("losetup");
    assert!(losetup.status.success(), "{losetup:?}");
    let loopdev = String::from_utf8_lossy(&losetup.stdout).trim().to_owned();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(loopdev.clone());

    let mut req = create_request(
        &bundle,
        "rm",
        &spec_json(&["sh", "-c", "sleep 100 & sleep 100 & wait"]),
    );
    req.rootfs = RootfsSource::BlockDevice {
        device: loopdev.clone().into(),
        fstype: "ext4".into(),
        readonly: false,
    };
    client
        .create_container(req)
        .unwrap_or_else(|e| panic!("create: {e}\n{}", agent.log_text()));
    client.start("rm").unwrap();
    let state = bundle.path().join("state");
    assert!(
        !mounts_under(&state).is_empty(),
        "the block device should be mounted"
    );
    // Give the shell time to start its background child.
    let deadline = Instant::now() + Duration::from_secs(5);
    let pids = loop {
        let pids = client.list_processes("rm").unwrap();
        if pids.len() >= 3 || Instant::now() > deadline {
            break pids;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(pids.len() >= 3, "sh and two sleeps: {pids:?}");
    assert_eq!(
        code(client.remove_container("rm", false)),
        ErrorCode::FailedPrecondition
    );
    client.remove_container("rm", true).unwrap();
    assert_eq!(code(client.state("rm")), ErrorCode::NotFound);
    assert_eq!(
        mounts_under(&state),
        Vec::<String>::new(),
        "a mount outlived remove"
    );
    assert_eq!(mounts_under(&bundle.root()), Vec::<String>::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "processes outlived remove: {pids:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs root"]
fn second_create_with_the_same_id_is_refused() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    let req = create_request(&bundle, "twice", &spec_json(&["true"]));
    client.create_container(req.clone()).unwrap();
    let err = client.create_container(req).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AlreadyExists));
    assert!(err.to_string().contains("`twice`"), "{err}");
    client.remove_container("twice", false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn bad_specs_are_refused_naming_the_field() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    let mut no_args = spec_json(&["true"]);
    no_args["process"]["args"] = serde_json::json!([]);
    let err = client
        .create_container(create_request(&bundle, "bad1", &no_args))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    assert!(err.to_string().contains("process.args"), "{err}");
    let mut no_dest = spec_json(&["true"]);
    no_dest["mounts"] =
        serde_json::json!([{ "type": "tmpfs", "source": "tmpfs", "destination": "" }]);
    let err = client
        .create_container(create_request(&bundle, "bad2", &no_dest))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    assert!(err.to_string().contains("mounts[0].destination"), "{err}");
    // Nothing was left registered.
    assert_eq!(code(client.state("bad1")), ErrorCode::NotFound);
}

#[test]
#[ignore = "needs root"]
fn a_missing_program_fails_start_and_the_container_can_be_removed() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    let created = client.create_container(create_request(
        &bundle,
        "missing",
        &spec_json(&["/bin/nope"]),
    ));
    match created {
        // Refused at create (the module checks the program) or at start (exec fails).
        Err(e) => assert!(e.to_string().contains("nope"), "{e}"),
        Ok(_) => {
            let err = client.start("missing").unwrap_err();
            assert!(
                err.to_string().contains("nope") || err.code() == Some(ErrorCode::ContainerFailed),
                "{err}"
            );
            client.remove_container("missing", true).unwrap();
        }
    }
}

#[test]
#[ignore = "needs root"]
fn control_stays_responsive_while_output_is_not_read() {
    let bundle = common::bundle();
    let agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = Arc::new(agent.client());
    let flood = "head -c 20000000 /dev/zero";
    client
        .create_container(create_request(
            &bundle,
            "flood",
            &spec_json(&["sh", "-c", flood]),
        ))
        .unwrap();
    let out = client.attach("flood", None, StreamKind::Stdout).unwrap();
    client.start("flood").unwrap();
    let waiter = {
        let client = Arc::clone(&client);
        thread::spawn(move || client.wait("flood", None))
    };
    // The attached reader does not read: the process blocks, control traffic does not.
    thread::sleep(Duration::from_millis(200));
    let before = Instant::now();
    for _ in 0..20 {
        client.ping().unwrap();
    }
    assert!(before.elapsed() < Duration::from_secs(2));
    assert!(!waiter.is_finished());
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut out = out;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, 20_000_000);
    assert_eq!(waiter.join().unwrap().unwrap().exit_code, 0);
    client.remove_container("flood", false).unwrap();
}

#[test]
#[ignore = "needs root"]
fn sigterm_to_the_agent_removes_its_containers() {
    let bundle = common::bundle();
    let mut agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    client
        .create_container(create_request(
            &bundle,
            "left",
            &spec_json(&["sleep", "100"]),
        ))
        .unwrap();
    client.start("left").unwrap();
    let pid = client.state("left").unwrap().pid;
    // SAFETY: signalling the agent we started.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) };
    let status = agent
        .wait_exit(Duration::from_secs(15))
        .expect("agent exits");
    assert!(status.success(), "{status}");
    assert!(!alive(pid), "container init {pid} outlived the agent");
}

#[test]
#[ignore = "needs root"]
fn shutdown_stops_the_agent() {
    let bundle = common::bundle();
    let mut agent = Agent::start(bundle.path(), &["--no-cgroups"]);
    let client = agent.client();
    client.shutdown().unwrap();
    let status = agent
        .wait_exit(Duration::from_secs(15))
        .expect("agent exits");
    assert!(status.success(), "{status}");
}

#[test]
#[ignore = "needs root"]
fn concurrent_clients_each_get_their_own_exits() {
    let bundle = Arc::new(common::bundle());
    let agent = Arc::new(Agent::start(bundle.path(), &["--no-cgroups"]));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let bundle = Arc::clone(&bundle);
            let agent = Arc::clone(&agent);
            thread::spawn(move || {
                let client = agent.client();
                for round in 0..5 {
                    let id = format!("w{worker}-{round}");
                    let code = worker * 10 + round;
                    let script = format!("exit {code}");
                    let req = create_request(&bundle, &id, &spec_json(&["sh", "-c", &script]));
                    client
                        .create_container(req)
                        .unwrap_or_else(|e| panic!("create {id}: {e}"));
                    client.start(&id).unwrap();
                    assert_eq!(client.wait(&id, None).unwrap().exit_code, code, "{id}");
                    client.remove_container(&id, false).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
}
