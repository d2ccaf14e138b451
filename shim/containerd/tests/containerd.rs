//! End-to-end: a private containerd (Debian's 1.6) runs containers through our shim with the
//! `namespaces` back-end (the agent on the host in fresh namespaces; see docs/containerd.md).
//!
//! Needs root, containerd, ctr, umoci and busybox-static:
//! `cargo test -p containerd-shim-rust-vm-v2 -- --include-ignored`

mod common;

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use common::{alive, descendants, Containerd, IMAGE, IMAGE_NO_CMD, NO_CPU_SHARES, RUNTIME};

const NEEDS_ROOT: &str = "needs root, containerd, ctr, umoci and busybox-static";

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `ctr run --rm` with our runtime and returns (exit code, stdout, stderr).
fn run(
    ctd: &Containerd,
    id: &str,
    extra: &[&str],
    args: &[&str],
    input: Option<&[u8]>,
) -> (i32, String, String) {
    let mut argv = vec!["run", "--rm", "--runtime", RUNTIME];
    argv.extend_from_slice(&NO_CPU_SHARES);
    argv.extend_from_slice(extra);
    argv.push(IMAGE);
    argv.push(id);
    argv.extend_from_slice(args);
    let out = ctd.ctr_input(&argv, input);
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn run_detached(ctd: &Containerd, id: &str, annotations: &[&str]) {
    run_detached_cmd(ctd, id, annotations, &["sleep", "1000"]);
}

fn run_detached_cmd(ctd: &Containerd, id: &str, annotations: &[&str], cmd: &[&str]) {
    ctd.ctr_ok(&run_detached_argv(id, annotations, cmd));
    ctd.wait_for_status(id, Some("RUNNING"), Duration::from_secs(20));
}

/// `ctr run -d` of `cmd` in container `id` with our runtime and `annotations`.
fn run_detached_argv<'a>(id: &'a str, annotations: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["run", "-d", "--runtime", RUNTIME];
    argv.extend_from_slice(&NO_CPU_SHARES);
    for a in annotations {
        argv.push("--annotation");
        argv.push(a);
    }
    argv.extend_from_slice(&[IMAGE, id]);
    argv.extend_from_slice(cmd);
    argv
}

/// Removes pod `id` (its sandbox container) and checks that nothing of its shim is left:
/// `pids` are the sandbox's processes as seen while the pod ran.
fn remove_pod_and_assert_clean(ctd: &Containerd, id: &str, shim: u32, mut pids: Vec<u32>) {
    let socket = ctd.shim_socket(id);
    remove(ctd, id);
    pids.push(shim);
    assert_clean(
        ctd,
        &[socket],
        &[common::sandbox_state_dir("default", id)],
        &pids,
    );
}

/// Kills, deletes and removes a task and its container.
fn remove(ctd: &Containerd, id: &str) {
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    ctd.wait_for_status(id, Some("STOPPED"), Duration::from_secs(20));
    let deleted = ctd.ctr(&["task", "delete", id]);
    let (_, stderr) = text(&deleted);
    assert!(deleted.status.success(), "{stderr}");
    assert!(
        stderr.contains("exit code 137"),
        "{id} not killed by SIGKILL: {stderr}"
    );
    ctd.ctr_ok(&["containers", "rm", id]);
}

/// Nothing of the shim is left: no shim process, no sandbox processes, no mounts, no socket,
/// no sandbox state.
fn assert_clean(
    ctd: &Containerd,
    sockets: &[std::path::PathBuf],
    state_dirs: &[std::path::PathBuf],
    pids: &[u32],
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shims = ctd.shim_pids();
        let live: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        let mounts = ctd.mounts();
        let sockets_left: Vec<_> = sockets.iter().filter(|s| s.exists()).collect();
        let dirs_left: Vec<_> = state_dirs.iter().filter(|d| d.exists()).collect();
        if shims.is_empty()
            && live.is_empty()
            && mounts.is_empty()
            && sockets_left.is_empty()
            && dirs_left.is_empty()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: shims {shims:?}, processes {live:?}, mounts {mounts:?}, sockets {sockets_left:?}, state {dirs_left:?}\n{}",
            common::tail(&ctd.log(), 30)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn echo_exit_codes_and_stdin() {
    let _serial = common::serial();
    let ctd = Containerd::start("basic");

    let (code, stdout, stderr) = run(&ctd, "echo", &[], &["echo", "hi"], None);
    assert_eq!((code, stdout.as_str()), (0, "hi\n"), "stderr: {stderr}");

    let (code, _, stderr) = run(&ctd, "exit3", &[], &["sh", "-c", "exit 3"], None);
    assert_eq!(code, 3, "stderr: {stderr}");

    // (The container's init is PID 1 of its namespace, immune to its own SIGKILL; a killed
    // init's 137 is checked where the tests kill tasks.)
    let (code, _, stderr) = run(
        &ctd,
        "child137",
        &[],
        // `; exit $?` keeps sh from exec'ing (and so becoming PID 1).
        &["sh", "-c", "sh -c 'kill -9 $$'; exit $?"],
        None,
    );
    assert_eq!(code, 137, "stderr: {stderr}");

    let (code, stdout, stderr) = run(
        &ctd,
        "stderr",
        &[],
        &["sh", "-c", "echo out; echo err >&2"],
        None,
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "err\n");

    // ctr run passes its stdin through.
    let (code, stdout, stderr) = run(&ctd, "stdin", &[], &["cat"], Some(b"piped through\n"));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "piped through\n"),
        "stderr: {stderr}"
    );

    assert_clean(
        &ctd,
        &[],
        &[common::sandbox_state_dir("default", "echo")],
        &[],
    );
    let _ = NEEDS_ROOT;
}

#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn exec_ps_kill_delete() {
    let _serial = common::serial();
    let ctd = Containerd::start("lifecycle");
    // As PID 1 of its container, the shell only dies of SIGTERM through its trap: exit 42
    // proves the signal arrived.
    run_detached_cmd(
        &ctd,
        "app",
        &[],
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; while true; do sleep 0.1; done",
        ],
    );
    let socket = ctd.shim_socket("app");
    let shim = ctd.shim_pid("app");
    let sandbox_pids = descendants(shim);
    assert!(!sandbox_pids.is_empty(), "the shim runs no sandbox process");
    common::assert_task_socket_not_inherited(shim, &sandbox_pids);

    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "app",
        "echo",
        "from exec",
    ]);
    assert_eq!(out, "from exec\n");
    let out = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "app",
        "sh",
        "-c",
        "exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{:?}", text(&out));

    let ps = ctd.ctr_ok(&["task", "ps", "app"]);
    let pids: Vec<&str> = ps.lines().skip(1).collect();
    assert!(!pids.is_empty(), "ctr task ps lists no process:\n{ps}");

    // A second exec is visible in ps while it runs.
    ctd.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "bg",
        "app",
        "sleep",
        "1000",
    ]);
    let ps2 = ctd.ctr_ok(&["task", "ps", "app"]);
    assert!(
        ps2.lines().count() > ps.lines().count(),
        "exec not in ps:\n{ps2}"
    );

    // Operations this back-end or rust-vm cannot do fail, by name, without harm.
    let paused = ctd.ctr(&["task", "pause", "app"]);
    let (_, stderr) = text(&paused);
    assert!(
        !paused.status.success() && stderr.contains("does not pause"),
        "{stderr}"
    );
    // containerd logs why it got no metrics: the agent's refusal, named.
    let metrics = ctd.ctr(&["task", "metrics", "app"]);
    assert!(!metrics.status.success());
    assert!(
        ctd.log()
            .contains("stats of app: agent refused `stats`: unsupported"),
        "{}",
        common::tail(&ctd.log(), 10)
    );
    assert_eq!(ctd.task_status("app").as_deref(), Some("RUNNING"));

    ctd.ctr_ok(&["task", "kill", "-s", "SIGTERM", "app"]);
    ctd.wait_for_status("app", Some("STOPPED"), Duration::from_secs(20));
    let deleted = ctd.ctr(&["task", "delete", "app"]);
    let (_, stderr) = text(&deleted);
    assert!(deleted.status.success(), "{stderr}");
    assert!(
        stderr.contains("exit code 42"),
        "SIGTERM did not reach the trap: {stderr}"
    );
    assert_eq!(ctd.task_status("app"), None);
    ctd.ctr_ok(&["containers", "rm", "app"]);

    let mut all = sandbox_pids;
    all.push(shim);
    assert_clean(
        &ctd,
        &[socket],
        &[common::sandbox_state_dir("default", "app")],
        &all,
    );
}

#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn pod_containers_share_one_sandbox() {
    let _serial = common::serial();
    let ctd = Containerd::start("pod");
    run_detached(
        &ctd,
        "pod1",
        &[
            "io.kubernetes.cri.container-type=sandbox",
            "io.kubernetes.cri.sandbox-id=pod1",
        ],
    );
    run_detached(
        &ctd,
        "app1",
        &[
            "io.kubernetes.cri.container-type=container",
            "io.kubernetes.cri.sandbox-id=pod1",
        ],
    );
    run_detached(
        &ctd,
        "app2",
        &[
            "io.kubernetes.cri.container-type=container",
            "io.kubernetes.cri.sandbox-id=pod1",
        ],
    );
    let socket = ctd.shim_socket("pod1");
    assert_eq!(
        ctd.shim_socket("app1"),
        socket,
        "app1 is served by another shim"
    );
    assert_eq!(
        ctd.shim_socket("app2"),
        socket,
        "app2 is served by another shim"
    );
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim per pod, found {shims:?}");
    let shim = shims[0];
    for id in ["pod1", "app1", "app2"] {
        assert_eq!(ctd.shim_pid(id), shim, "shim.pid of {id}");
    }
    // One sandbox: the shim has one direct child (the namespaces sandbox), and every
    // container's processes are its descendants.
    let children: Vec<u32> = common::processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| common::parent_pid(pid) == Some(shim))
        .collect();
    assert_eq!(
        children.len(),
        1,
        "the pod shim runs {} sandboxes: {children:?}",
        children.len()
    );
    let sleepers = common::processes()
        .into_iter()
        .filter(|(_, argv)| {
            argv.first().is_some_and(|a| a == "sleep") && argv.get(1).is_some_and(|a| a == "1000")
        })
        .map(|(pid, _)| pid)
        .filter(|pid| descendants(children[0]).contains(pid))
        .count();
    assert_eq!(
        sleepers, 3,
        "the three containers do not all run in the pod's sandbox"
    );
    // The app containers see their own rootfs (mounted inside the sandbox after it started).
    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "ls",
        "app2",
        "ls",
        "/bin/busybox",
    ]);
    assert_eq!(out, "/bin/busybox\n");

    let sandbox_pids = descendants(shim);
    remove(&ctd, "app1");
    remove(&ctd, "app2");
    assert_eq!(
        ctd.shim_pids(),
        vec![shim],
        "the pod shim must stay while its sandbox container runs"
    );
    assert_eq!(ctd.task_status("pod1").as_deref(), Some("RUNNING"));
    remove_pod_and_assert_clean(&ctd, "pod1", shim, sandbox_pids);
}

/// A guest that stops answering (here the host-mode agent, stopped) holds no task call for good:
/// a pod member's create fails at the agent timeout (20 s in these tests), naming it, and the
/// pod goes as usual once its agent answers again.
#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn a_silent_agent_fails_a_create_in_time() {
    let _serial = common::serial();
    let ctd = Containerd::start("silent");
    let pod = [
        "io.kubernetes.cri.container-type=sandbox",
        "io.kubernetes.cri.sandbox-id=pod1",
    ];
    run_detached(&ctd, "pod1", &pod);
    let shim = ctd.shim_pid("pod1");
    let in_pod = descendants(shim);
    let agents: Vec<u32> = common::processes()
        .into_iter()
        .filter(|(pid, argv)| {
            in_pod.contains(pid)
                && argv.first().is_some_and(|a| a.ends_with("rust-vm-agent"))
                && argv.iter().any(|a| a == "--listen")
        })
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(agents.len(), 1, "the pod's agent: {agents:?}");
    let agent = agents[0] as i32;
    // SAFETY: kill(2) on the sandbox's agent.
    assert_eq!(unsafe { libc::kill(agent, libc::SIGSTOP) }, 0);
    let argv = run_detached_argv(
        "app1",
        &[
            "io.kubernetes.cri.container-type=container",
            "io.kubernetes.cri.sandbox-id=pod1",
        ],
        &["sleep", "1000"],
    );
    let started = Instant::now();
    let out = ctd.ctr(&argv);
    let took = started.elapsed();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(agent, libc::SIGCONT) }, 0);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "a stopped agent created app1");
    assert!(
        stderr.contains("no response to `create_container` within 20s"),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_secs(20) && took < Duration::from_secs(40),
        "took {took:?}"
    );
    let _ = ctd.ctr(&["containers", "rm", "app1"]);
    remove_pod_and_assert_clean(&ctd, "pod1", shim, descendants(shim));
}

#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn task_survives_containerd_restart() {
    let _serial = common::serial();
    let mut ctd = Containerd::start("restart");
    run_detached(&ctd, "survivor", &[]);
    let pid_before = ctd.ctr_ok(&["task", "ls"]);
    let shim = ctd.shim_pid("survivor");

    ctd.restart();
    assert!(alive(shim), "the shim died with containerd");
    ctd.wait_for_status("survivor", Some("RUNNING"), Duration::from_secs(20));
    assert_eq!(
        ctd.ctr_ok(&["task", "ls"]),
        pid_before,
        "task changed across the restart"
    );
    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        "survivor",
        "echo",
        "still here",
    ]);
    assert_eq!(out, "still here\n");

    let socket = ctd.shim_socket("survivor");
    let mut all = descendants(shim);
    all.push(shim);
    remove(&ctd, "survivor");
    assert_clean(
        &ctd,
        &[socket],
        &[common::sandbox_state_dir("default", "survivor")],
        &all,
    );
}

#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn killed_shim_leaves_nothing_behind() {
    let _serial = common::serial();
    let ctd = Containerd::start("kill9");
    run_detached(&ctd, "victim", &[]);
    let shim = ctd.shim_pid("victim");
    let socket = ctd.shim_socket("victim");
    let mut all = descendants(shim);
    assert!(!all.is_empty(), "no sandbox processes under the shim");
    all.push(shim);
    assert!(!ctd.mounts().is_empty(), "the rootfs is not mounted");

    // SAFETY: kill(2) of the shim this test started through containerd.
    unsafe { libc::kill(shim as i32, libc::SIGKILL) };

    // containerd notices, reports the exit and runs `shim delete`.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = ctd.task_status("victim");
        if status.as_deref() != Some("RUNNING") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task still RUNNING after its shim was killed"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_clean(
        &ctd,
        &[socket],
        &[common::sandbox_state_dir("default", "victim")],
        &all,
    );
    let _ = ctd.ctr(&["task", "delete", "victim"]);
    ctd.ctr_ok(&["containers", "rm", "victim"]);
    assert!(!ctd.bundle("victim").exists(), "bundle left behind");
}

#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn refused_spec_names_the_field() {
    let _serial = common::serial();
    let ctd = Containerd::start("badspec");
    // The image has no command, so the spec has no process.args: the agent refuses it.
    let out = ctd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--cpu-shares",
        "0",
        IMAGE_NO_CMD,
        "noargs",
    ]);
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a spec without process.args was accepted"
    );
    assert!(
        stderr.contains("process.args"),
        "the error does not name the field: {stderr}"
    );
    let _ = ctd.ctr(&["containers", "rm", "noargs"]);
    assert_clean(
        &ctd,
        &[],
        &[common::sandbox_state_dir("default", "noargs")],
        &[],
    );
    assert!(
        fs::read_dir(ctd.dir.join("state/io.containerd.runtime.v2.task/default"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
}

#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn terminal_mode() {
    let _serial = common::serial();
    let ctd = Containerd::start("tty");
    // ctr -t needs a console on its stdin: script(1) gives it one.
    let cmd = format!(
        // The outer terminal's size reaches the container through ResizePty (ctr sends it
        // after start, hence the pause).
        "stty rows 33 cols 101; ctr --address {} run --rm -t --cpu-shares 0 --runtime {RUNTIME} \
         {IMAGE} tty1 sh -c 'test -t 0 && test -t 1 && echo on-a-terminal; sleep 1; stty size'",
        ctd.socket.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script(1)");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("on-a-terminal"),
        "no terminal in the container: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "33 101"),
        "the terminal was not resized to 33x101: {stdout}"
    );
}

#[test]
#[ignore = "needs containerd"]
fn kubernetes_config_snippet_registers_the_runtime() {
    // containerd parses the documented snippet and shows the runtime in its effective config.
    let snippet = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/kubernetes/containerd-config.toml");
    let out = std::process::Command::new("containerd")
        .arg("--config")
        .arg(&snippet)
        .args(["config", "dump"])
        .output()
        .expect("run containerd config dump");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let section = stdout
        .split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rust-vm]")
        .nth(1)
        .unwrap_or_else(|| panic!("no rust-vm runtime in the effective config:\n{stdout}"));
    let section: String = section
        .lines()
        .take_while(|l| {
            !l.trim_start()
                .starts_with("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        section.contains("runtime_type = \"io.containerd.rust-vm.v2\""),
        "{section}"
    );
    assert!(
        section.contains("ConfigPath = \"/etc/rust-vm/config.toml\""),
        "{section}"
    );
}

#[test]
#[ignore = "needs root, containerd, ctr, umoci and busybox-static"]
fn task_events_reach_containerd() {
    let _serial = common::serial();
    let ctd = Containerd::start("events");
    let log = ctd.dir.join("events.log");
    let mut events = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&ctd.socket)
        .arg("events")
        .stdout(fs::File::create(&log).expect("events log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ctr events");
    // Let the subscription reach containerd before anything happens.
    thread::sleep(Duration::from_millis(500));

    run_detached(&ctd, "ev", &[]);
    let out = ctd.ctr_ok(&["task", "exec", "--exec-id", "ex1", "ev", "true"]);
    assert_eq!(out, "");
    remove(&ctd, "ev");

    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit",
        "/tasks/delete",
    ];
    loop {
        let seen = fs::read_to_string(&log).unwrap_or_default();
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|topic| {
                !seen
                    .lines()
                    .any(|l| l.contains(topic) && l.contains("\"ev\""))
            })
            .collect();
        if missing.is_empty() {
            // The exec's exit names the exec, the init's exit the container.
            assert!(
                seen.lines()
                    .any(|l| l.contains("/tasks/exit") && l.contains("\"ex1\"")),
                "{seen}"
            );
            break;
        }
        if Instant::now() > deadline {
            let _ = events.kill();
            let _ = events.wait();
            panic!("events {missing:?} never reached containerd:\n{seen}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = events.kill();
    let _ = events.wait();
}
