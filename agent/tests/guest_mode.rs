//! The agent as PID 1 ("guest mode"), proven on the host: it runs as the init of fresh pid,
//! mount, uts and network namespaces, which is what it is in the VM except for vsock (AF_VSOCK
//! has no loopback here, so it listens on a Unix socket) and the power-off (in a pid namespace
//! `reboot(RB_POWER_OFF)` ends the namespace instead of the machine). Needs root.

mod common;

use std::fs;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{create_request, read_all, spec_json};
use rust_vm_protocol::{AgentMode, Client, StreamKind};

struct Init {
    unshare: Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Init {
    fn start(dir: &Path) -> Init {
        Init::start_with(dir, &["--init", "--hostname", "guest-test"])
    }

    fn start_with(dir: &Path, mode_args: &[&str]) -> Init {
        let socket = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let addr = format!("unix:{}", socket.display());
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--uts",
                "--net",
                "--propagation",
                "private",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_rust-vm-agent"))
            .args(mode_args)
            .args(["--listen", &addr])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--no-cgroups", "--log-stderr", "--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("unshare (util-linux)");
        let mut init = Init { unshare, addr, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = init.unshare.try_wait() {
                panic!("agent exited with {status}:\n{}", init.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not listen:\n{}",
                init.log_text()
            );
            thread::sleep(Duration::from_millis(5));
        }
        init
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent: the only child of `unshare --fork`.
    fn agent_pid(&self) -> i32 {
        let pid = self.unshare.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .expect("children of unshare");
        children.trim().parse().expect("one child pid")
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.unshare.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if self.wait_exit(Duration::ZERO).is_none() {
            // --kill-child: unshare's death SIGKILLs the agent, the init of the pid namespace,
            // and with it everything in the namespace.
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

#[test]
#[ignore = "needs root"]
fn pid_1_sets_up_the_guest_serves_and_powers_off() {
    let bundle = common::bundle();
    let mut init = Init::start(bundle.path());
    let client = Client::connect(&init.addr).unwrap();
    assert_eq!(client.version().unwrap().mode, AgentMode::Guest);

    let agent = init.agent_pid();
    let mountinfo = fs::read_to_string(format!("/proc/{agent}/mountinfo")).unwrap();
    let mounted = |target: &str, fstype: &str| {
        mountinfo.lines().any(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let after = l.split(" - ").nth(1).unwrap_or("");
            fields.get(4) == Some(&target) && after.starts_with(&format!("{fstype} "))
        })
    };
    for (target, fstype) in [
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "devtmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/run", "tmpfs"),
        ("/sys/fs/cgroup", "cgroup2"),
    ] {
        assert!(
            mounted(target, fstype),
            "{fstype} on {target} missing:\n{mountinfo}"
        );
    }

    // A container without uts and network namespaces shows the guest's hostname and loopback.
    let mut spec = spec_json(&["sh", "-c", "hostname; ip link show lo"]);
    spec["linux"]["namespaces"] = serde_json::json!([{ "type": "pid" }, { "type": "mount" }]);
    spec.as_object_mut().unwrap().remove("hostname");
    client
        .create_container(create_request(&bundle, "probe", &spec))
        .unwrap_or_else(|e| panic!("create: {e}\n{}", init.log_text()));
    let out = client.attach("probe", None, StreamKind::Stdout).unwrap();
    client.start("probe").unwrap();
    let text = read_all(out);
    assert_eq!(client.wait("probe", None).unwrap().exit_code, 0, "{text}");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("guest-test"));
    let lo = lines.next().unwrap_or_default();
    assert!(lo.contains("<LOOPBACK,UP"), "lo is not up: {text:?}");

    // An orphan reparented to PID 1 is reaped: the shell's background child outlives it.
    let mut spec = spec_json(&["sh", "-c", "sleep 0.2 & exit 0"]);
    spec["linux"]["namespaces"] = serde_json::json!([{ "type": "mount" }]);
    spec.as_object_mut().unwrap().remove("hostname");
    client
        .create_container(create_request(&bundle, "orphan", &spec))
        .unwrap();
    client.start("orphan").unwrap();
    assert_eq!(client.wait("orphan", None).unwrap().exit_code, 0);
    thread::sleep(Duration::from_millis(600));
    let zombies: Vec<String> = fs::read_to_string(format!("/proc/{agent}/task/{agent}/children"))
        .unwrap()
        .split_whitespace()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        })
        .map(str::to_owned)
        .collect();
    assert!(
        zombies.is_empty(),
        "unreaped children of PID 1: {zombies:?}"
    );
    client.remove_container("orphan", false).unwrap();
    client.remove_container("probe", false).unwrap();

    client.shutdown().unwrap();
    let status = init
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the agent did not power off:\n{}", init.log_text()));
    // reboot(RB_POWER_OFF) in a pid namespace ends its init as if by SIGINT.
    assert!(
        status.signal() == Some(libc::SIGINT) || status.code() == Some(128 + libc::SIGINT),
        "{status}\n{}",
        init.log_text()
    );
    assert!(
        init.log_text().contains("powering off"),
        "{}",
        init.log_text()
    );
}

/// The shim's namespaces back-end runs the agent as PID 1 of fresh namespaces on a Unix socket:
/// that is host mode (no guest mounts, logs on stderr), not guest mode.
#[test]
#[ignore = "needs root"]
fn pid_1_on_a_unix_socket_is_host_mode() {
    let bundle = common::bundle();
    let mut init = Init::start_with(bundle.path(), &[]);
    let client = Client::connect(&init.addr).unwrap();
    assert_eq!(client.version().unwrap().mode, AgentMode::Host);
    let agent = init.agent_pid();
    // Same mounts on /dev as the host: nothing mounted by a guest setup.
    let dev_mounts = |path: String| {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some("/dev"))
            .count()
    };
    assert_eq!(
        dev_mounts(format!("/proc/{agent}/mountinfo")),
        dev_mounts("/proc/self/mountinfo".into()),
        "host mode mounted on /dev"
    );
    client.shutdown().unwrap();
    let status = init
        .wait_exit(Duration::from_secs(15))
        .expect("the agent exits");
    assert!(status.success(), "{status}\n{}", init.log_text());
}

/// `configure_network` over the protocol, in the agent's own network namespace: a veth end
/// with the request's MAC is renamed, addressed and routed (the netlink details are proven by
/// the agent's unit and root tests), and a bad request names its field.
#[test]
#[ignore = "needs root"]
fn configure_network_sets_up_the_namespace_of_pid_1() {
    use rust_vm_protocol::{
        Empty, ErrorCode, InterfaceConfig, IpCidr, NeighbourConfig, NetworkConfig, Operation,
        RouteConfig,
    };
    let dir = tempfile::tempdir().unwrap();
    let init = Init::start(dir.path());
    let netns = format!("--net=/proc/{}/ns/net", init.agent_pid());
    let ip = |args: &[&str]| {
        let output = Command::new("nsenter")
            .arg(&netns)
            .arg("ip")
            .args(args)
            .output()
            .expect("nsenter, ip");
        assert!(output.status.success(), "ip {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    ip(&[
        "link",
        "add",
        "nic0",
        "address",
        "02:aa:bb:cc:dd:02",
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
    ]);
    ip(&["link", "set", "peer0", "up"]);
    let cidr = |address: &str, prefix_len| IpCidr {
        address: address.parse().unwrap(),
        prefix_len,
    };
    let mut config = NetworkConfig {
        interfaces: vec![InterfaceConfig {
            mac: "02:AA:BB:CC:DD:02".into(),
            name: "eth0".into(),
            mtu: 1400,
            addresses: vec![cidr("10.1.2.3", 32)],
        }],
        routes: vec![
            RouteConfig {
                destination: cidr("169.254.1.1", 32),
                gateway: None,
                interface: "eth0".into(),
                source: None,
                metric: None,
            },
            RouteConfig {
                destination: cidr("0.0.0.0", 0),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: "eth0".into(),
                source: None,
                metric: None,
            },
        ],
        neighbours: vec![NeighbourConfig {
            address: "169.254.1.1".parse().unwrap(),
            mac: "ee:ee:ee:ee:ee:ee".into(),
            interface: "eth0".into(),
        }],
    };
    let client = Client::connect(&init.addr).unwrap();
    let mut bad = config.clone();
    bad.routes[1].interface = "eth9".into();
    let e = client
        .call::<Empty>(Operation::ConfigureNetwork(bad))
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e}");
    assert!(
        e.to_string()
            .contains("routes[1].interface \"eth9\": not among the interfaces"),
        "{e}"
    );

    client
        .call::<Empty>(Operation::ConfigureNetwork(config.clone()))
        .unwrap_or_else(|e| panic!("{e}\n{}", init.log_text()));
    let link = ip(&["link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
    let addresses = ip(&["addr", "show", "dev", "eth0"]);
    assert!(addresses.contains("inet 10.1.2.3/32"), "{addresses}");
    let routes = ip(&["route", "show", "dev", "eth0"]);
    assert!(routes.contains("default via 169.254.1.1"), "{routes}");
    assert!(
        routes.contains("169.254.1.1 proto static scope link"),
        "{routes}"
    );
    let neighbours = ip(&["neigh", "show", "dev", "eth0"]);
    assert!(
        neighbours.contains("169.254.1.1 lladdr ee:ee:ee:ee:ee:ee PERMANENT"),
        "{neighbours}"
    );

    config.interfaces[0].mac = "02:00:00:00:00:99".into();
    let e = client
        .call::<Empty>(Operation::ConfigureNetwork(config))
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("eth0 02:aa:bb:cc:dd:02"), "{e}");
}
