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

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::net::{cni, echo_through, mac_of, run_pod, Netns, ECHO_PORT, GATEWAY, MTU};
use common::{Containerd, GUEST_STEP, RUNTIME};

const KERNEL: &str = "/var/lib/rust-vm/vmlinux";

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

fn exec(ctd: &Containerd, id: &str, name: &str, script: &str) -> String {
    ctd.ctr_ok(&["task", "exec", "--exec-id", name, id, "sh", "-c", script])
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
    let config = ctd.vm_backend_config();
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
    let bridge_mac = mac_of(&node, "rvmbr0");
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
    // Both VMs boot at once (one vCPU each, two host cores): one boot's time for both.
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            run_pod(
                &ctd,
                RUNTIME,
                Some(&config),
                "netpod1",
                &pod1,
                &["sh", "-c", &echo],
            )
        });
        s.spawn(|| {
            run_pod(
                &ctd,
                RUNTIME,
                Some(&config),
                "netpod2",
                &pod2,
                &["sleep", "1000"],
            )
        });
    });
    eprintln!(
        "pod1 ({address1}) and pod2 ({address2}/32) running after {:?}",
        started.elapsed()
    );

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
    let pod1_mac = mac_of(&pod1, "eth0");
    assert!(
        shown.contains(&pod1_mac),
        "guest NIC without the pod's MAC: {shown}"
    );

    // Node → pod: 256 KiB through the echo server and back, many segments at MTU 1450.
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let (back, took) = echo_through(&node, address1.clone(), data.clone());
    assert!(back == data, "the echo came back different");
    eprintln!("node → pod1 → node: 256 KiB echoed in {took:?}");

    // Pod → node: the pod connects to a listener on the gateway address. (busybox nc in the
    // guest sent nothing when its input had ended before it connected, as captured on the
    // bridge, and its -w is a timer on the whole exchange: input that stays open a moment and
    // an outer `timeout` instead.)
    let listener = node.run(|| TcpListener::bind((GATEWAY, 7002)).expect("listen on the gateway"));
    let accepted = std::thread::spawn(move || {
        let (conn, peer) = listener.accept().expect("accept");
        // One line, then close: busybox nc does not half-close, it waits for our end.
        let mut text = String::new();
        BufReader::new(conn).read_line(&mut text).expect("read");
        (peer.ip().to_string(), text)
    });
    exec(
        &ctd,
        "netpod1",
        "client",
        &format!("(echo hello-from-pod1; sleep 2) | timeout 60 nc {GATEWAY} 7002"),
    );
    let (peer, text) = accepted.join().expect("listener");
    assert_eq!(
        (peer.as_str(), text.as_str()),
        (address1.as_str(), "hello-from-pod1\n")
    );

    // Pod → pod across two VMs, from the /32 pod through the gateway.
    let routes = exec(
        &ctd,
        "netpod2",
        "routes",
        "ip route; ip neigh show dev eth0",
    );
    assert!(
        routes.contains(&format!("{GATEWAY} dev eth0 scope link"))
            && routes.contains(&format!("default via {GATEWAY} dev eth0"))
            && routes
                .lines()
                .any(|l| l.starts_with(&format!("{GATEWAY} lladdr {bridge_mac}"))
                    && l.trim_end().ends_with("PERMANENT")),
        "{routes}"
    );
    let reply = exec(
        &ctd,
        "netpod2",
        "ping-pod1",
        &format!("(echo from-pod2; sleep 3) | timeout 60 nc {address1} {ECHO_PORT}"),
    );
    assert_eq!(reply, "from-pod2\n");

    // pod2's VMM killed: the task stops, and once deleted its namespace keeps no tap and no
    // redirect.
    let state2 = common::sandbox_state_dir("default", "netpod2");
    let vmm2 = rust_vm_test_support::vmm_pids(&state2.to_string_lossy());
    assert_eq!(vmm2.len(), 1, "pod2's VMM: {vmm2:?}");
    // SAFETY: kill(2) of pod2's VMM, found by its state directory.
    unsafe { libc::kill(vmm2[0] as i32, libc::SIGKILL) };
    ctd.wait_for_status("netpod2", Some("STOPPED"), GUEST_STEP);
    // The pod's resources go when containerd deletes the task (as runc's do when the CRI stops
    // the pod), not when its VMM dies.
    ctd.ctr_ok(&["task", "delete", "netpod2"]);
    ctd.ctr_ok(&["containers", "rm", "netpod2"]);
    wait_for_no_leftovers(&pod2);

    // pod1's shim killed: its VMM dies with it, and containerd's cleanup (`shim delete`)
    // removes the redirect the sandbox could not.
    let shim1 = ctd.shim_pid("netpod1");
    // SAFETY: kill(2) of pod1's shim, found by its socket.
    unsafe { libc::kill(shim1 as i32, libc::SIGKILL) };
    // containerd's cleanup after a dead shim removes the task.
    ctd.wait_for_status("netpod1", None, GUEST_STEP);
    ctd.ctr_ok(&["containers", "rm", "netpod1"]);
    wait_for_no_leftovers(&pod1);

    cni(&node, "DEL", &pod1, &ipam);
    cni(&node, "DEL", &pod2, &ipam);
}
