//! Pod networks for tests and benchmarks, in network namespaces of their own: a "node"
//! namespace holding the bridge CNI plugin's bridge (the pods' gateway) and a namespace per pod
//! that the plugin wires to it, as a CRI runtime does. No traffic reaches the machine's own
//! interfaces.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use rust_vm_test_support::netns::Netns;

use super::{Containerd, GUEST_STEP, IMAGE, NO_CPU_SHARES};

pub const CNI_BIN: &str = "/usr/lib/cni";
pub const SUBNET: &str = "10.199.9.0/24";
pub const GATEWAY: &str = "10.199.9.1";
/// Where pods run `nc -ll -p ECHO_PORT -e /bin/cat`.
pub const ECHO_PORT: u16 = 7001;
pub const MTU: u32 = 1450;

/// The bridge plugin's `command` (ADD or DEL) for `pod`, run inside `node` so that the bridge
/// and the veths' host ends live there. Returns the pod's address (ADD).
pub fn cni(node: &Netns, command: &str, pod: &Netns, ipam_dir: &Path) -> Option<String> {
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
            "routes": [{"dst": "0.0.0.0/0"}],
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

/// Connects from inside `node` to the echo server of the pod at `address`, retrying until the
/// pod listens (at most [`GUEST_STEP`]).
pub fn connect_echo(address: &str) -> TcpStream {
    let target = format!("{address}:{ECHO_PORT}");
    let started = Instant::now();
    loop {
        match TcpStream::connect_timeout(
            &target.parse().expect("socket address"),
            Duration::from_secs(5),
        ) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(GUEST_STEP))
                    .expect("read timeout");
                return stream;
            }
            Err(e) if started.elapsed() < GUEST_STEP => {
                eprintln!("connecting to {target}: {e}; again");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("connecting to {target}: {e}"),
        }
    }
}

/// Sends `data` to `address` and reads as much back (the echo server), from inside `node`.
pub fn echo_through(node: &Netns, address: String, data: Vec<u8>) -> (Vec<u8>, Duration) {
    node.run(move || {
        let mut stream = connect_echo(&address);
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

/// The MAC of `link` in `ns`.
pub fn mac_of(ns: &Netns, link: &str) -> String {
    ns.ip(&["-o", "link", "show", link])
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("{link} has no MAC"))
        .to_string()
}

/// `ctr run -d` of a pod sandbox container in `pod`'s network namespace running `command`, under
/// `runtime` (with `config` as its runtime config when given), then waits until it runs.
pub fn run_pod(
    ctd: &Containerd,
    runtime: &str,
    config: Option<&Path>,
    id: &str,
    pod: &Netns,
    command: &[&str],
) {
    let config_arg = config.map(|c| c.to_string_lossy().into_owned());
    let with_ns = format!("network:{}", pod.path().display());
    let sandbox_id = format!("io.kubernetes.cri.sandbox-id={id}");
    let mut argv = vec!["run", "-d", "--runtime", runtime];
    argv.extend_from_slice(&NO_CPU_SHARES);
    if let Some(config) = &config_arg {
        argv.extend_from_slice(&["--runtime-config-path", config]);
    }
    argv.extend_from_slice(&[
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
