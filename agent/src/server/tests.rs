//! Server tests over a real Unix socket with the plain-process runtime (no root needed).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::{Process, ProcessBuilder, Spec};
use rust_vm_protocol::{
    read_frame, write_frame, AgentMode, Client, ClientError, ConsoleSize, ContainerStatus,
    CreateContainer, ErrorCode, Exec, Response, RootfsSource, StreamKind,
};

use super::fake::ProcessRuntime;
use super::Server;
use crate::listener::{ListenAddress, Listener};
use crate::reaper;

struct TestAgent {
    _dir: tempfile::TempDir,
    server: Arc<Server>,
    addr: String,
    path: std::path::PathBuf,
    shut_down: Arc<AtomicBool>,
}

impl TestAgent {
    fn start() -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = Listener::bind(&ListenAddress::Unix(path.clone())).unwrap();
        let shut_down = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&shut_down);
        let server = Server::new(
            Box::new(ProcessRuntime),
            reaper::for_tests(),
            AgentMode::Host,
            Box::new(move || flag.store(true, Ordering::SeqCst)),
        );
        let serving = Arc::clone(&server);
        thread::spawn(move || serving.serve(listener));
        TestAgent {
            server,
            addr: format!("unix:{}", path.display()),
            path,
            _dir: dir,
            shut_down,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.addr).unwrap()
    }

    fn raw(&self) -> UnixStream {
        UnixStream::connect(&self.path).unwrap()
    }
}

fn process(args: &[&str]) -> Process {
    ProcessBuilder::default()
        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .env(vec![
            "PATH=/usr/bin:/bin".to_string(),
            "GREETING=hi".to_string(),
        ])
        .cwd("/")
        .build()
        .unwrap()
}

fn create(id: &str, args: &[&str]) -> CreateContainer {
    let mut spec = Spec::default();
    spec.set_process(Some(process(args)));
    CreateContainer {
        container_id: id.into(),
        spec: Box::new(spec),
        rootfs: RootfsSource::Directory { path: "/".into() },
        terminal: false,
        console_size: None,
        stdin: true,
    }
}

fn read_all(mut stream: UnixStream) -> String {
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    let err = result.expect_err("the agent should refuse");
    err.code()
        .unwrap_or_else(|| panic!("not a remote error: {err}"))
}

#[test]
fn version_and_ping() {
    let agent = TestAgent::start();
    let client = agent.client();
    client.ping().unwrap();
    let version = client.version().unwrap();
    assert_eq!(version.protocol, rust_vm_protocol::PROTOCOL_VERSION);
    assert_eq!(version.mode, AgentMode::Host);
    assert!(!version.cgroups);
}

/// The host-mode agent runs in a network namespace that is not the pod's: it changes nothing.
#[test]
fn configure_network_is_refused_in_host_mode() {
    let agent = TestAgent::start();
    let client = agent.client();
    let err = client
        .call::<rust_vm_protocol::Empty>(rust_vm_protocol::Operation::ConfigureNetwork(
            Default::default(),
        ))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unsupported), "{err}");
    assert!(
        err.to_string()
            .contains("the host-mode agent has no VM network to configure"),
        "{err}"
    );
}

#[test]
fn exit_code_and_output_produced_before_attach() {
    let agent = TestAgent::start();
    let client = agent.client();
    let script = "echo out; echo err >&2; echo $GREETING; exit 3";
    let created = client
        .create_container(create("c", &["/bin/sh", "-c", script]))
        .unwrap();
    assert!(created.pid > 0);
    assert_eq!(client.state("c").unwrap().status, ContainerStatus::Created);
    client.start("c").unwrap();
    let status = client.wait("c", None).unwrap();
    assert_eq!((status.exit_code, status.signal), (3, None));
    assert_eq!(client.state("c").unwrap().status, ContainerStatus::Stopped);
    // Attached only after the exit: nothing was lost.
    assert_eq!(
        read_all(client.attach("c", None, StreamKind::Stdout).unwrap()),
        "out\nhi\n"
    );
    assert_eq!(
        read_all(client.attach("c", None, StreamKind::Stderr).unwrap()),
        "err\n"
    );
    // Waiting again gives the same answer.
    assert_eq!(client.wait("c", None).unwrap().exit_code, 3);
    client.remove_container("c", false).unwrap();
    assert_eq!(code(client.state("c")), ErrorCode::NotFound);
}

#[test]
fn killed_by_signal_is_128_plus_signal() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("k", &["/bin/sleep", "100"]))
        .unwrap();
    client.start("k").unwrap();
    client.signal("k", None, libc::SIGKILL, false).unwrap();
    let status = client.wait("k", None).unwrap();
    assert_eq!((status.exit_code, status.signal), (137, Some(9)));
    assert_eq!(
        code(client.signal("k", None, libc::SIGTERM, false)),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(
        code(client.signal("k", None, 0, false)),
        ErrorCode::InvalidArgument
    );
}

#[test]
fn signal_reaches_a_handler() {
    let agent = TestAgent::start();
    let client = agent.client();
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    client
        .create_container(create("t", &["/bin/sh", "-c", script]))
        .unwrap();
    let mut out = client.attach("t", None, StreamKind::Stdout).unwrap();
    client.start("t").unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    client.signal("t", None, libc::SIGTERM, false).unwrap();
    assert_eq!(client.wait("t", None).unwrap().exit_code, 7);
    assert_eq!(read_all(out), "got-term\n");
}

#[test]
fn stdin_stream_is_piped_through_and_closed_by_shutdown() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("cat", &["/bin/cat"]))
        .unwrap();
    let out = client.attach("cat", None, StreamKind::Stdout).unwrap();
    let mut stdin = client.attach("cat", None, StreamKind::Stdin).unwrap();
    assert_eq!(
        code(client.attach("cat", None, StreamKind::Stdin)),
        ErrorCode::AlreadyExists
    );
    client.start("cat").unwrap();
    stdin.write_all(b"hello through a pipe\n").unwrap();
    stdin.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(out), "hello through a pipe\n");
    assert_eq!(client.wait("cat", None).unwrap().exit_code, 0);
}

#[test]
fn write_stdin_and_close_stdin_operations() {
    let agent = TestAgent::start();
    let client = agent.client();
    client.create_container(create("w", &["/bin/cat"])).unwrap();
    client.start("w").unwrap();
    client.write_stdin("w", None, b"abc").unwrap();
    client.close_stdin("w", None).unwrap();
    assert_eq!(client.wait("w", None).unwrap().exit_code, 0);
    assert_eq!(
        read_all(client.attach("w", None, StreamKind::Stdout).unwrap()),
        "abc"
    );
    assert_eq!(
        code(client.write_stdin("w", None, b"late")),
        ErrorCode::FailedPrecondition
    );
}

#[test]
fn without_stdin_a_reader_sees_eof() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut req = create("n", &["/bin/cat"]);
    req.stdin = false;
    client.create_container(req).unwrap();
    client.start("n").unwrap();
    assert_eq!(client.wait("n", None).unwrap().exit_code, 0);
    assert_eq!(
        code(client.attach("n", None, StreamKind::Stdin)),
        ErrorCode::FailedPrecondition
    );
}

#[test]
fn ids_are_checked() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("dup", &["/bin/true"]))
        .unwrap();
    let err = client
        .create_container(create("dup", &["/bin/true"]))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AlreadyExists));
    assert!(err.to_string().contains("`dup`"), "{err}");
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert_eq!(
            code(client.create_container(create(bad, &["/bin/true"]))),
            ErrorCode::InvalidArgument,
            "{bad:?}"
        );
    }
    assert_eq!(code(client.start("nope")), ErrorCode::NotFound);
    assert_eq!(code(client.wait("dup", Some("nope"))), ErrorCode::NotFound);
    client.remove_container("dup", false).unwrap();
}

#[test]
fn runtime_errors_are_passed_on() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut req = create("bad", &["/bin/true"]);
    req.spec.set_process(None);
    let err = client.create_container(req).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
    assert!(err.to_string().contains("process"), "{err}");
    // The id is free again after a failed create.
    client
        .create_container(create("bad", &["/bin/true"]))
        .unwrap();
}

#[test]
fn start_twice_is_refused() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("s", &["/bin/sleep", "100"]))
        .unwrap();
    client.start("s").unwrap();
    assert_eq!(code(client.start("s")), ErrorCode::FailedPrecondition);
    client.remove_container("s", true).unwrap();
}

#[test]
fn exec_into_a_running_container() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("e", &["/bin/sleep", "100"]))
        .unwrap();
    let exec = |exec_id: &str, args: &[&str]| Exec {
        container_id: "e".into(),
        exec_id: exec_id.into(),
        process: Box::new(process(args)),
        console_size: None,
        stdin: false,
    };
    assert_eq!(
        code(client.exec(exec("early", &["/bin/true"]))),
        ErrorCode::FailedPrecondition
    );
    client.start("e").unwrap();
    let started = client
        .exec(exec("x1", &["/bin/sh", "-c", "echo from-exec; exit 4"]))
        .unwrap();
    assert!(started.pid > 0);
    assert_eq!(client.wait("e", Some("x1")).unwrap().exit_code, 4);
    assert_eq!(
        read_all(client.attach("e", Some("x1"), StreamKind::Stdout).unwrap()),
        "from-exec\n"
    );
    client.exec(exec("x2", &["/bin/sleep", "100"])).unwrap();
    assert_eq!(
        code(client.exec(exec("x2", &["/bin/true"]))),
        ErrorCode::AlreadyExists
    );
    let pids = client.list_processes("e").unwrap();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // An exec id can be reused once its process has exited.
    client.exec(exec("x1", &["/bin/true"])).unwrap();
    assert_eq!(client.wait("e", Some("x1")).unwrap().exit_code, 0);
    assert_eq!(client.state("e").unwrap().execs, vec!["x1", "x2"]);
    assert_eq!(
        code(client.remove_exec("e", "x2")),
        ErrorCode::FailedPrecondition
    );
    client.remove_exec("e", "x1").unwrap();
    assert_eq!(code(client.remove_exec("e", "x1")), ErrorCode::NotFound);
    assert_eq!(code(client.wait("e", Some("x1"))), ErrorCode::NotFound);
    assert_eq!(client.state("e").unwrap().execs, vec!["x2"]);
    client.signal("e", None, libc::SIGKILL, true).unwrap();
    assert_eq!(client.wait("e", Some("x2")).unwrap().signal, Some(9));
    assert_eq!(client.wait("e", None).unwrap().signal, Some(9));
}

/// Execs racing for one id: one runs, the others are refused; none runs untracked.
#[test]
fn concurrent_execs_with_one_id_start_one_process() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("race", &["/bin/sleep", "100"]))
        .unwrap();
    client.start("race").unwrap();
    let clients: Vec<Client> = (0..12).map(|_| agent.client()).collect();
    let barrier = Arc::new(std::sync::Barrier::new(clients.len()));
    let racers: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                c.exec(Exec {
                    container_id: "race".into(),
                    exec_id: "same".into(),
                    process: Box::new(process(&["/bin/sleep", "100"])),
                    console_size: None,
                    stdin: false,
                })
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let started = results.iter().filter(|r| r.is_ok()).count();
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Some(ErrorCode::AlreadyExists), "{refused}");
    }
    let pids = client.list_processes("race").unwrap();
    assert_eq!(
        (started, pids.len()),
        (1, 2),
        "the init and one exec: {pids:?}"
    );
    client.remove_container("race", true).unwrap();
}

#[test]
fn terminal_process() {
    let agent = TestAgent::start();
    let client = agent.client();
    let mut req = create(
        "tty",
        &[
            "/bin/sh",
            "-c",
            "test -t 0 && test -t 1 && echo is-a-tty; stty size; read line; echo got:$line",
        ],
    );
    req.terminal = true;
    req.console_size = Some(ConsoleSize {
        rows: 33,
        cols: 101,
    });
    client.create_container(req).unwrap();
    assert_eq!(
        code(client.attach("tty", None, StreamKind::Stderr)),
        ErrorCode::InvalidArgument
    );
    let out = client.attach("tty", None, StreamKind::Stdout).unwrap();
    client.start("tty").unwrap();
    client.resize_tty("tty", None, 40, 120).unwrap_or(());
    client.write_stdin("tty", None, b"typed\n").unwrap();
    assert_eq!(client.wait("tty", None).unwrap().exit_code, 0);
    let text = read_all(out);
    assert!(text.contains("is-a-tty"), "{text:?}");
    assert!(text.contains("got:typed"), "{text:?}");
    // The size is either the initial one or the resized one, depending on timing.
    assert!(
        text.contains("33 101") || text.contains("40 120"),
        "{text:?}"
    );
    assert_eq!(
        code(client.resize_tty("tty", Some("none"), 1, 1)),
        ErrorCode::NotFound
    );
}

#[test]
fn resize_without_terminal_is_refused() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("r", &["/bin/true"]))
        .unwrap();
    assert_eq!(
        code(client.resize_tty("r", None, 1, 1)),
        ErrorCode::FailedPrecondition
    );
}

#[test]
fn remove_running_needs_force_and_kills() {
    let agent = TestAgent::start();
    let client = agent.client();
    let pid = client
        .create_container(create("rm", &["/bin/sleep", "100"]))
        .unwrap()
        .pid;
    client.start("rm").unwrap();
    assert_eq!(
        code(client.remove_container("rm", false)),
        ErrorCode::FailedPrecondition
    );
    client.remove_container("rm", true).unwrap();
    assert_eq!(code(client.state("rm")), ErrorCode::NotFound);
    // SAFETY: signal 0 only checks whether the pid exists.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "pid {pid} still exists");
}

#[test]
fn remove_created_container_kills_its_init() {
    let agent = TestAgent::start();
    let client = agent.client();
    let pid = client
        .create_container(create("cr", &["/bin/true"]))
        .unwrap()
        .pid;
    client.remove_container("cr", false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: signal 0 only checks whether the pid exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(Instant::now() < deadline, "pid {pid} still exists");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn wait_does_not_block_other_requests() {
    let agent = TestAgent::start();
    let client = Arc::new(agent.client());
    client
        .create_container(create("slow", &["/bin/sleep", "100"]))
        .unwrap();
    client.start("slow").unwrap();
    let waiter = {
        let client = Arc::clone(&client);
        thread::spawn(move || client.wait("slow", None))
    };
    thread::sleep(Duration::from_millis(50));
    let before = Instant::now();
    client.ping().unwrap();
    assert!(before.elapsed() < Duration::from_secs(1));
    assert!(!waiter.is_finished());
    client.signal("slow", None, libc::SIGTERM, false).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap().signal, Some(libc::SIGTERM));
}

/// A client that sends `wait` and goes away must not leave a thread behind until the process
/// exits (which may be never).
#[test]
fn a_wait_whose_client_went_away_ends() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("long", &["/bin/sleep", "100"]))
        .unwrap();
    client.start("long").unwrap();
    let mut conns = Vec::new();
    for id in 1..=3 {
        let mut conn = agent.raw();
        let wait = rust_vm_protocol::Request {
            id,
            op: rust_vm_protocol::Operation::Wait(rust_vm_protocol::ProcessRef {
                container_id: "long".into(),
                exec_id: None,
            }),
        };
        write_frame(&mut conn, &wait.encode().unwrap()).unwrap();
        conns.push(conn);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while agent.server.requests_waiting() < 3 {
        assert!(Instant::now() < deadline, "the waits never started");
        thread::sleep(Duration::from_millis(10));
    }
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(2);
    while agent.server.requests_waiting() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} wait threads outlived their clients",
            agent.server.requests_waiting()
        );
        thread::sleep(Duration::from_millis(10));
    }
    // A wait whose client stays is still answered.
    let waiter = thread::spawn(move || client.wait("long", None).map(|s| (s, client)));
    thread::sleep(Duration::from_millis(50));
    let other = agent.client();
    other.signal("long", None, libc::SIGKILL, false).unwrap();
    let (status, _client) = waiter.join().unwrap().unwrap();
    assert_eq!(status.signal, Some(libc::SIGKILL));
    other.remove_container("long", false).unwrap();
}

/// A client that attached to a silent process's output and went away frees the stream (and
/// its thread) without waiting for output that may never come.
#[test]
fn an_abandoned_output_attachment_is_released() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("quiet", &["/bin/sleep", "100"]))
        .unwrap();
    client.start("quiet").unwrap();
    drop(client.attach("quiet", None, StreamKind::Stdout).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        match client.attach("quiet", None, StreamKind::Stdout) {
            Ok(stream) => break stream,
            Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {
                assert!(Instant::now() < deadline, "still attached: {e}");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("attach: {e}"),
        }
    };
    // A client that only half-closes (shutdown of its write side) is still attached.
    again.shutdown(Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        code(client.attach("quiet", None, StreamKind::Stdout)),
        ErrorCode::AlreadyExists
    );
    client.signal("quiet", None, libc::SIGKILL, false).unwrap();
    assert_eq!(read_all(again), "");
    assert_eq!(
        client.wait("quiet", None).unwrap().signal,
        Some(libc::SIGKILL)
    );
    client.remove_container("quiet", false).unwrap();
}

/// `write_stdin` to a process that does not read blocks once the pipe is full; when its client
/// goes away the write is given up, so no thread stays behind.
#[test]
fn a_blocked_stdin_write_whose_client_went_away_ends() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("deaf", &["/bin/sleep", "100"]))
        .unwrap();
    client.start("deaf").unwrap();
    let mut conn = agent.raw();
    let write = rust_vm_protocol::Request {
        id: 1,
        op: rust_vm_protocol::Operation::WriteStdin(rust_vm_protocol::WriteStdin {
            container_id: "deaf".into(),
            exec_id: None,
            data: vec![b'x'; 256 * 1024],
        }),
    };
    write_frame(&mut conn, &write.encode().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while agent.server.requests_waiting() < 1 {
        assert!(Instant::now() < deadline, "the write never blocked");
        thread::sleep(Duration::from_millis(10));
    }
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(3);
    while agent.server.requests_waiting() > 0 {
        assert!(
            Instant::now() < deadline,
            "a stdin write outlived its client"
        );
        thread::sleep(Duration::from_millis(10));
    }
    client.remove_container("deaf", true).unwrap();
}

#[test]
fn slow_output_reader_does_not_block_control() {
    let agent = TestAgent::start();
    let client = agent.client();
    // Four times the buffer: the process blocks until someone reads.
    let total = super::stdio::OUTPUT_BUFFER_SIZE * 4;
    let script = format!("head -c {total} /dev/zero; echo done >&2");
    client
        .create_container(create("big", &["/bin/sh", "-c", &script]))
        .unwrap();
    client.start("big").unwrap();
    let mut out = client.attach("big", None, StreamKind::Stdout).unwrap();
    // Attached but not reading: control traffic goes on.
    thread::sleep(Duration::from_millis(100));
    for _ in 0..10 {
        client.ping().unwrap();
    }
    assert_eq!(
        client.state("big").unwrap().status,
        ContainerStatus::Running
    );
    let mut got = Vec::new();
    out.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), total);
    assert_eq!(client.wait("big", None).unwrap().exit_code, 0);
    assert_eq!(
        read_all(client.attach("big", None, StreamKind::Stderr).unwrap()),
        "done\n"
    );
}

#[test]
fn stats_without_cgroups_is_unsupported() {
    let agent = TestAgent::start();
    let client = agent.client();
    client
        .create_container(create("st", &["/bin/true"]))
        .unwrap();
    assert_eq!(code(client.stats("st")), ErrorCode::Unsupported);
}

fn raw_request(conn: &mut UnixStream, body: &[u8]) -> Response {
    write_frame(conn, body).unwrap();
    let reply = read_frame(conn).unwrap().expect("a reply");
    Response::decode(&reply).unwrap()
}

#[test]
fn garbage_frame_gets_an_error_and_the_connection_survives() {
    let agent = TestAgent::start();
    let mut conn = agent.raw();
    let response = raw_request(&mut conn, b"\x00\x01not json at all");
    assert_eq!(response.id, None);
    assert_eq!(response.error.unwrap().code, ErrorCode::InvalidFrame);
    let response = raw_request(&mut conn, br#"{"v":1,"id":4,"op":"reticulate_splines"}"#);
    assert_eq!(response.id, Some(4));
    let error = response.error.unwrap();
    assert_eq!(error.code, ErrorCode::UnknownOperation);
    assert!(error.message.contains("reticulate_splines"));
    let response = raw_request(&mut conn, br#"{"v":9,"id":5,"op":"ping"}"#);
    assert_eq!(response.error.unwrap().code, ErrorCode::UnsupportedVersion);
    let response = raw_request(&mut conn, br#"{"v":1,"id":6,"op":"ping"}"#);
    assert_eq!((response.id, response.error), (Some(6), None));
}

#[test]
fn oversized_frame_gets_an_error_then_close() {
    let agent = TestAgent::start();
    let mut conn = agent.raw();
    conn.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
    conn.write_all(b"{\"v\":1").unwrap();
    let reply = read_frame(&mut conn).unwrap().expect("an error reply");
    let response = Response::decode(&reply).unwrap();
    assert_eq!(response.error.unwrap().code, ErrorCode::FrameTooLarge);
    assert!(
        read_frame(&mut conn).unwrap().is_none(),
        "connection should be closed"
    );
    agent.client().ping().unwrap();
}

#[test]
fn truncated_frame_closes_cleanly() {
    let agent = TestAgent::start();
    let mut conn = agent.raw();
    conn.write_all(&[0, 0, 0, 50]).unwrap();
    conn.write_all(b"{\"v\":1,").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    assert!(read_frame(&mut conn).unwrap().is_none());
    let mut conn = agent.raw();
    conn.write_all(&[0, 0]).unwrap();
    drop(conn);
    agent.client().ping().unwrap();
}

#[test]
fn attach_must_open_a_connection() {
    let agent = TestAgent::start();
    let mut conn = agent.raw();
    raw_request(&mut conn, br#"{"v":1,"id":1,"op":"ping"}"#);
    let response = raw_request(
        &mut conn,
        br#"{"v":1,"id":2,"op":"attach","args":{"container_id":"x","stream":"stdout"}}"#,
    );
    assert_eq!(response.error.unwrap().code, ErrorCode::FailedPrecondition);
    let client = agent.client();
    assert_eq!(
        code(client.attach("x", None, StreamKind::Stdout)),
        ErrorCode::NotFound
    );
}

#[test]
fn shutdown_removes_containers_then_replies_then_runs_the_hook() {
    let agent = TestAgent::start();
    let client = agent.client();
    let pid = client
        .create_container(create("sd", &["/bin/sleep", "100"]))
        .unwrap()
        .pid;
    client.start("sd").unwrap();
    client.shutdown().unwrap();
    // Killed by the reply (gone, or a zombie until reaped): the host may stop the VM on it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    assert!(
        matches!(state, None | Some('Z') | Some('X')),
        "the container's init still runs at the reply: {stat}"
    );
    assert_eq!(code(client.state("sd")), ErrorCode::NotFound);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.shut_down.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_hangup_remembers_each_process_once_and_wakes_its_waits() {
    let hangup = Arc::new(super::Hangup::default());
    let cell = Arc::new(crate::reaper::ExitCell::default());
    for _ in 0..100 {
        hangup.watch(&cell);
    }
    assert_eq!(super::lock(&hangup.waiting).len(), 1);
    let waiter = {
        let (hangup, cell) = (Arc::clone(&hangup), Arc::clone(&cell));
        thread::spawn(move || hangup.wait(&cell))
    };
    thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished());
    hangup.hang_up();
    assert_eq!(waiter.join().unwrap(), None);
    assert!(super::lock(&hangup.waiting).is_empty());
}

#[test]
fn port_forward_relays_a_connection_to_a_loopback_port() {
    let agent = TestAgent::start();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let echo = thread::spawn(move || {
        let (mut peer, _) = server.accept().unwrap();
        let mut request = Vec::new();
        peer.read_to_end(&mut request).unwrap();
        peer.write_all(b"you said: ").unwrap();
        peer.write_all(&request).unwrap();
    });
    let address = rust_vm_protocol::Address::Unix(agent.path.clone());
    let mut conn =
        rust_vm_protocol::port_forward_within(&address, port, Some(Duration::from_secs(5)))
            .unwrap();
    conn.write_all(b"hello").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "you said: hello");
    echo.join().unwrap();
}

#[test]
fn port_forward_to_a_closed_port_is_refused_by_name() {
    let agent = TestAgent::start();
    // Bound then closed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = rust_vm_protocol::Address::Unix(agent.path.clone());
    let err = rust_vm_protocol::port_forward_within(&address, port, Some(Duration::from_secs(5)))
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert_eq!(code(Err::<(), _>(err)), ErrorCode::FailedPrecondition);
    let mut conn = agent.raw();
    raw_request(&mut conn, br#"{"v":1,"id":1,"op":"ping"}"#);
    let response = raw_request(
        &mut conn,
        br#"{"v":1,"id":2,"op":"port_forward","args":{"port":80}}"#,
    );
    assert_eq!(response.error.unwrap().code, ErrorCode::FailedPrecondition);
}
