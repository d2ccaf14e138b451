//! Pod networking on the `vm` back-end through containerd, with the bridge CNI plugin as a CRI
//! runtime calls it. Everything happens in network namespaces this test makes: a "node"
//! namespace holds the CNI bridge (the pods' gateway), each pod gets a namespace the plugin
//! wires to it, and containerd is told to run the pod in that namespace (`--with-ns`), as the
//! CRI plugin does. No traffic reaches the machine's own interfaces.
//!
//! One test, two VMs: node → pod TCP (a 256 KiB echo, with the MTU of 1450 the plugin set), pod →
//! node TCP, pod → pod across the two VMs where the second pod has a /32 address with a
//! link-scope gateway route and a static neighbour (Calico's set-up); then the second pod's VMM
//! and the first pod's shim killed with SIGKILL, and neither pod namespace keeps a tap or a
//! redirect.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Containerd, GUEST_STEP, IMAGE, NO_CPU_SHARES, RUNTIME};

const KERNEL: &str = "/var/lib/rust-vm/vmlinux";
const CNI_BIN: &str = "/usr/lib/cni";
const SUBNET: &str = "10.199.9.0/24";
const GATEWAY: &str = "10.199.9.1";
const ECHO_PORT: u16 = 7001;
const MTU: u32 = 1450;

/// A network namespace made with `ip netns add`, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("rvm-{role}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        Netns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a thread inside this namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(self.path()).expect("open the namespace");
        std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bridge plugin's `command` (ADD or DEL) for `pod`, run inside `node` so that the bridge
/// and the veths' host ends live there. Returns the pod's address (ADD).
fn cni(node: &Netns, command: &str, pod: &Netns, ipam_dir: &Path) -> Option<String> {
    let plugin = Path::new(CNI_BIN).join("bridge");
    assert!(
        plugin.is_file(),
        "{} missing: install containernetworking-plugins (scripts/setup.sh)",
        plugin.display()
    );
    let config = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "rvm-e2e",
        "type": "bridge",
        "bridge": "rvmbr0",
        "isGateway": true,
        "ipMasq": false,
        "mtu": MTU,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
            "dataDir": ipam_dir,
        }
    });
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", node.path().display()))
        .arg(&plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.name)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the bridge plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(config.to_string().as_bytes())
        .expect("write the CNI config");
    let out = child.wait_with_output().expect("bridge plugin");
    assert!(
        out.status.success(),
        "bridge {command}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if command != "ADD" {
        return None;
    }
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("CNI result");
    let address = result["ips"][0]["address"].as_str().expect("an address");
    Some(address.split('/').next().expect("address").to_string())
}

/// What the sandbox may leave in a pod namespace: our tap and ingress qdiscs.
fn leftovers(pod: &Netns) -> Vec<String> {
    let mut left = Vec::new();
    if pod.ip(&["-o", "link"]).contains("rvm-tap0") {
        left.push("tap rvm-tap0".to_string());
    }
    let qdiscs = Command::new("tc")
        .args(["-n", &pod.name, "qdisc", "show"])
        .output()
        .expect("tc");
    for line in String::from_utf8_lossy(&qdiscs.stdout).lines() {
        if line.contains("ingress") {
            left.push(line.to_string());
        }
    }
    left
}

fn wait_for_no_leftovers(pod: &Netns) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = leftovers(pod);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{} keeps {left:?}", pod.name);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn vm_config(ctd: &Containerd) -> PathBuf {
    let vmm = common::workspace_binary("rust-vm-vmm", "rust-vm-vmm");
    let config = ctd.dir.join("vm.toml");
    std::fs::write(
        &config,
        format!("backend = \"vm\"\nvmm = \"{}\"\n", vmm.display()),
    )
    .expect("write vm.toml");
    config
}

/// `ctr run -d` of a pod sandbox container in `pod`'s network namespace running `command`.
fn run_pod(ctd: &Containerd, config: &Path, id: &str, pod: &Netns, command: &[&str]) {
    let config_arg = config.to_string_lossy().into_owned();
    let with_ns = format!("network:{}", pod.path().display());
    let sandbox_id = format!("io.kubernetes.cri.sandbox-id={id}");
    let mut argv = vec!["run", "-d", "--runtime", RUNTIME];
    argv.extend_from_slice(&NO_CPU_SHARES);
    argv.extend_from_slice(&[
        "--runtime-config-path",
        &config_arg,
        "--with-ns",
        &with_ns,
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        &sandbox_id,
        IMAGE,
        id,
    ]);
    argv.extend_from_slice(command);
    ctd.ctr_ok(&argv);
    ctd.wait_for_status(id, Some("RUNNING"), GUEST_STEP);
}

fn exec(ctd: &Containerd, id: &str, name: &str, script: &str) -> String {
    ctd.ctr_ok(&["task", "exec", "--exec-id", name, id, "sh", "-c", script])
}

/// Sends `data` to `address` and reads as much back (the echo server), from inside `node`.
fn echo_through(node: &Netns, address: String, data: Vec<u8>) -> (Vec<u8>, Duration) {
    node.run(move || {
        let target = format!("{address}:{ECHO_PORT}");
        let started = Instant::now();
        let mut stream = loop {
            match TcpStream::connect_timeout(
                &target.parse().expect("socket address"),
                Duration::from_secs(5),
            ) {
                Ok(stream) => break stream,
                Err(e) if started.elapsed() < GUEST_STEP => {
                    eprintln!("connecting to {target}: {e}; again");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => panic!("connecting to {target}: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(GUEST_STEP))
            .expect("read timeout");
        let started = Instant::now();
        let mut writer = stream.try_clone().expect("clone");
        let len = data.len();
        let sender = std::thread::spawn(move || writer.write_all(&data).expect("send"));
        let mut back = vec![0u8; len];
        stream.read_exact(&mut back).expect("echo back");
        sender.join().expect("sender");
        (back, started.elapsed())
    })
}

#[test]
#[ignore = "needs root, /dev/kvm, containerd and the CNI plugins; boots two guests"]
fn pods_reach_the_node_and_each_other_through_the_bridge_cni_and_leave_nothing() {
    assert!(Path::new("/dev/kvm").exists(), "/dev/kvm missing");
    assert!(
        Path::new(KERNEL).is_file(),
        "{KERNEL} missing: run guest-kernel/build.sh"
    );
    let _serial = common::serial();
    let ctd = Containerd::start("vmnet");
    let config = vm_config(&ctd);
    let ipam = ctd.dir.join("cni-ipam");
    let node = Netns::new("node");
    let pod1 = Netns::new("pod1");
    let pod2 = Netns::new("pod2");
    node.ip(&["link", "set", "lo", "up"]);
    let address1 = cni(&node, "ADD", &pod1, &ipam).expect("pod1 address");
    let address2 = cni(&node, "ADD", &pod2, &ipam).expect("pod2 address");
    // pod2 the Calico way: a /32, the gateway reached by a link-scope route, and a static
    // neighbour entry for it (the bridge's own MAC).
    pod2.ip(&["addr", "del", &format!("{address2}/24"), "dev", "eth0"]);
    pod2.ip(&["addr", "add", &format!("{address2}/32"), "dev", "eth0"]);
    pod2.ip(&["route", "add", GATEWAY, "dev", "eth0", "scope", "link"]);
    pod2.ip(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"]);
    let bridge_mac = node
        .ip(&["-o", "link", "show", "rvmbr0"])
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("the bridge's MAC")
        .to_string();
    pod2.ip(&[
        "neigh",
        "add",
        GATEWAY,
        "lladdr",
        &bridge_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);

    let echo = format!("nc -ll -p {ECHO_PORT} -e /bin/cat");
    let started = Instant::now();
    run_pod(&ctd, &config, "netpod1", &pod1, &["sh", "-c", &echo]);
    eprintln!("pod1 ({address1}) running after {:?}", started.elapsed());

    // The guest's interface is the pod's: its address, MTU and default route.
    let shown = exec(
        &ctd,
        "netpod1",
        "show",
        "cat /sys/class/net/eth0/mtu /sys/class/net/eth0/address; ip -o -4 addr show eth0; ip route",
    );
    assert!(shown.contains(&format!("{MTU}\n")), "{shown}");
    assert!(shown.contains(&format!("inet {address1}/24")), "{shown}");
    assert!(shown.contains(&format!("default via {GATEWAY}")), "{shown}");
    let pod1_mac = pod1
        .ip(&["-o", "link", "show", "eth0"])
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("eth0's MAC")
        .to_string();
    assert!(
        shown.contains(&pod1_mac),
        "guest NIC without the pod's MAC: {shown}"
    );

    // Node → pod: 256 KiB through the echo server and back, many segments at MTU 1450.
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let (back, took) = echo_through(&node, address1.clone(), data.clone());
    assert!(back == data, "the echo came back different");
    eprintln!("node → pod1 → node: 256 KiB echoed in {took:?}");

    // Pod → node: the pod connects to a listener on the gateway address.
    let listener = node.run(|| TcpListener::bind((GATEWAY, 7002)).expect("listen on the gateway"));
    let accepted = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut text = String::new();
        conn.read_to_string(&mut text).expect("read");
        (peer.ip().to_string(), text)
    });
    exec(
        &ctd,
        "netpod1",
        "client",
        &format!("echo hello-from-pod1 | nc -w 10 {GATEWAY} 7002"),
    );
    let (peer, text) = accepted.join().expect("listener");
    assert_eq!(
        (peer.as_str(), text.as_str()),
        (address1.as_str(), "hello-from-pod1\n")
    );

    // Pod → pod across two VMs, from the /32 pod through the gateway.
    let started = Instant::now();
    run_pod(&ctd, &config, "netpod2", &pod2, &["sleep", "1000"]);
    eprintln!("pod2 ({address2}/32) running after {:?}", started.elapsed());
    let routes = exec(
        &ctd,
        "netpod2",
        "routes",
        "ip route; ip neigh show dev eth0",
    );
    assert!(
        routes.contains(&format!("{GATEWAY} dev eth0 scope link"))
            && routes.contains(&format!("default via {GATEWAY} dev eth0"))
            && routes.contains(&format!("{GATEWAY} lladdr {bridge_mac} PERMANENT")),
        "{routes}"
    );
    let reply = exec(
        &ctd,
        "netpod2",
        "ping-pod1",
        &format!("echo from-pod2 | nc -w 10 {address1} {ECHO_PORT}"),
    );
    assert_eq!(reply, "from-pod2\n");

    // pod2's VMM killed: the task stops, and its namespace keeps no tap and no redirect.
    let state2 = common::sandbox_state_dir("default", "netpod2");
    let vmm2 = rust_vm_test_support::vmm_pids(&state2.to_string_lossy());
    assert_eq!(vmm2.len(), 1, "pod2's VMM: {vmm2:?}");
    // SAFETY: kill(2) of pod2's VMM, found by its state directory.
    unsafe { libc::kill(vmm2[0] as i32, libc::SIGKILL) };
    ctd.wait_for_status("netpod2", Some("STOPPED"), GUEST_STEP);
    wait_for_no_leftovers(&pod2);
    ctd.ctr_ok(&["task", "delete", "netpod2"]);
    ctd.ctr_ok(&["containers", "rm", "netpod2"]);

    // pod1's shim killed: its VMM dies with it, and containerd's cleanup (`shim delete`)
    // removes the redirect the sandbox could not.
    let shim1 = ctd.shim_pid("netpod1");
    // SAFETY: kill(2) of pod1's shim, found by its socket.
    unsafe { libc::kill(shim1 as i32, libc::SIGKILL) };
    ctd.wait_for_status("netpod1", Some("STOPPED"), GUEST_STEP);
    let _ = ctd.ctr(&["task", "delete", "netpod1"]);
    ctd.ctr_ok(&["containers", "rm", "netpod1"]);
    wait_for_no_leftovers(&pod1);

    cni(&node, "DEL", &pod1, &ipam);
    cni(&node, "DEL", &pod2, &ipam);
}
