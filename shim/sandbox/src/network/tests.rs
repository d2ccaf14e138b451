//! Root tests: two network namespaces of the test's own ("outside" and "pod") joined by a veth,
//! the pod end set up as a CNI plugin would (a /32 with a link-scope gateway, as Calico does).
//! No traffic leaves them.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;

const POD_MAC: &str = "02:00:0a:c7:00:02";
const GATEWAY_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// An EtherType for local experiments (IEEE 802): nothing else sends it.
const TEST_ETHERTYPE: u16 = 0x88b5;

/// A network namespace `ip netns` made for this test, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("rvm-{role}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        Netns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn file(&self) -> File {
        File::open(self.path()).expect("open netns")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod namespace whose `eth0` has a veth peer `peer0` in `outside` (10.199.0.1/24).
fn pod_namespaces() -> (Netns, Netns) {
    let outside = Netns::new("out");
    let pod = Netns::new("pod");
    outside.ip(&[
        "link", "add", "peer0", "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
    ]);
    outside.ip(&["addr", "add", "10.199.0.1/24", "dev", "peer0"]);
    outside.ip(&["link", "set", "peer0", "up", "mtu", "1450"]);
    pod.ip(&[
        "link", "set", "eth0", "address", POD_MAC, "mtu", "1450", "up",
    ]);
    pod.ip(&["addr", "add", "10.199.0.2/32", "dev", "eth0"]);
    pod.ip(&["addr", "add", "fd00:199::2/64", "dev", "eth0", "nodad"]);
    pod.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    pod.ip(&[
        "neigh",
        "add",
        "169.254.1.1",
        "lladdr",
        GATEWAY_MAC,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    (outside, pod)
}

fn cidr(text: &str) -> IpCidr {
    let (address, len) = text.split_once('/').expect("cidr");
    IpCidr {
        address: address.parse().expect("address"),
        prefix_len: len.parse().expect("prefix"),
    }
}

/// What `ns` holds: its links, qdiscs, and the ingress filters of every link.
fn inspect(
    ns: &Netns,
) -> (
    Vec<Link>,
    Vec<rust_vm_netlink::Qdisc>,
    Vec<rust_vm_netlink::Filter>,
) {
    in_namespace(&ns.file(), &ns.path(), || {
        let mut handle = Handle::new().expect("netlink");
        let links = handle.links().expect("links");
        let qdiscs = handle.qdiscs().expect("qdiscs");
        let mut filters = Vec::new();
        for link in &links {
            if qdiscs
                .iter()
                .any(|q| q.link == link.index && q.kind == "ingress")
            {
                filters.extend(handle.ingress_filters(link.index).expect("filters"));
            }
        }
        (links, qdiscs, filters)
    })
    .expect("inspect")
}

/// A raw socket on `link` of the calling thread's namespace, receiving every frame.
fn packet_socket(link: u32) -> OwnedFd {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
    assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
    // SAFETY: fd is a new socket of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = link as i32;
    // SAFETY: addr is a sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
    fd
}

fn ethertype(frame: &[u8]) -> Option<u16> {
    frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Reads frames from the non-blocking `tap` (each behind its 10-byte virtio-net header) until one
/// of `kind` arrives or `limit` passes.
fn read_tap_until(tap: &File, kind: u16, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65536];
    let mut tap = tap;
    while Instant::now() < deadline {
        match tap.read(&mut buf) {
            Ok(n) if n > 10 && ethertype(&buf[10..n]) == Some(kind) => {
                return Some(buf[10..n].to_vec())
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("reading the tap: {e}"),
        }
    }
    None
}

#[test]
#[ignore = "needs root: makes network namespaces, a veth and a tap"]
fn connect_reads_the_pod_network_redirects_both_ways_and_disconnect_leaves_nothing() {
    let (outside, pod) = pod_namespaces();
    let mut network = PodNetwork::connect(&pod.path())
        .expect("connect")
        .expect("a pod interface");

    assert_eq!(network.mac().to_string(), POD_MAC);
    assert_eq!(network.mtu(), 1450);
    let guest = network.guest_config().clone();
    assert_eq!(guest.interfaces.len(), 1);
    let eth0 = &guest.interfaces[0];
    assert_eq!(
        (eth0.name.as_str(), eth0.mac.as_str(), eth0.mtu),
        ("eth0", POD_MAC, 1450)
    );
    assert_eq!(
        eth0.addresses,
        vec![cidr("10.199.0.2/32"), cidr("fd00:199::2/64")]
    );
    // The link-scope gateway route comes before the default route through it; the prefix route
    // the kernel made for the IPv6 address is the guest kernel's to make.
    let routes: Vec<_> = guest
        .routes
        .iter()
        .map(|r| (r.destination.to_string(), r.gateway.map(|g| g.to_string())))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("169.254.1.1/32".to_string(), None),
            ("0.0.0.0/0".to_string(), Some("169.254.1.1".to_string())),
        ]
    );
    assert_eq!(guest.neighbours.len(), 1);
    assert_eq!(guest.neighbours[0].address.to_string(), "169.254.1.1");
    assert_eq!(guest.neighbours[0].mac, GATEWAY_MAC);

    let (links, qdiscs, filters) = inspect(&pod);
    let tap = links
        .iter()
        .find(|l| l.name == TAP_NAME)
        .expect("tap in the pod namespace");
    let eth0 = links.iter().find(|l| l.name == "eth0").expect("eth0");
    assert!(tap.up);
    assert_eq!(tap.mtu, 1450);
    for link in [tap.index, eth0.index] {
        assert!(qdiscs.iter().any(|q| q.link == link && q.kind == "ingress"));
    }
    assert!(filters
        .iter()
        .any(|f| f.link == eth0.index && f.redirect_to == Some(tap.index)));
    assert!(filters
        .iter()
        .any(|f| f.link == tap.index && f.redirect_to == Some(eth0.index)));

    // Inbound: whatever reaches eth0 comes out of the tap (here the ARP request a UDP send to the
    // pod's address starts with).
    let tap_file = network.tap().expect("tap").try_clone().expect("clone tap");
    in_namespace(&outside.file(), &outside.path(), || {
        let socket = std::net::UdpSocket::bind("10.199.0.1:0").expect("bind");
        socket.send_to(b"hello", "10.199.0.2:9").expect("send");
    })
    .expect("outside");
    let arp = read_tap_until(&tap_file, 0x0806, Duration::from_secs(5))
        .expect("the ARP request for the pod's address came out of the tap");
    assert_eq!(&arp[38..42], &[10, 199, 0, 2], "ARP target");

    // Outbound: a frame written to the tap leaves through eth0 and reaches its peer.
    let peer = inspect(&outside)
        .0
        .into_iter()
        .find(|l| l.name == "peer0")
        .expect("peer0");
    let got = in_namespace(&outside.file(), &outside.path(), move || {
        let socket = packet_socket(peer.index);
        let mut frame = vec![0u8; 10]; // virtio-net header: no offloads
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[0x02, 0, 0x0a, 0xc7, 0, 0x02]);
        frame.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
        frame.extend_from_slice(&[0x42; 46]);
        (&tap_file).write_all(&frame).expect("write to the tap");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: buf is ours and as long as given; MSG_DONTWAIT keeps it non-blocking.
            let n = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 14 && ethertype(&buf[..n as usize]) == Some(TEST_ETHERTYPE) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    })
    .expect("outside");
    assert!(got, "the frame written to the tap reached the veth peer");

    network.disconnect().expect("disconnect");
    let (links, qdiscs, filters) = inspect(&pod);
    assert!(
        links.iter().all(|l| l.name != TAP_NAME),
        "tap left: {links:?}"
    );
    assert!(
        qdiscs.iter().all(|q| q.kind != "ingress"),
        "qdisc left: {qdiscs:?}"
    );
    assert!(filters.is_empty(), "filters left: {filters:?}");
    network
        .disconnect()
        .expect("a second disconnect does nothing");
}

/// A sandbox killed with its owner leaves the redirect on the pod interface (the tap goes with
/// the last descriptor); `clean_up`, which the containerd shim's `delete` runs, removes it.
#[test]
#[ignore = "needs root: makes network namespaces, a veth and a tap"]
fn clean_up_removes_what_a_killed_sandbox_left() {
    let (_outside, pod) = pod_namespaces();
    let mut leaked = PodNetwork::connect(&pod.path())
        .expect("connect")
        .expect("a pod interface");
    // What an owner killed mid-way leaves: the tap closed, the interface still redirecting.
    drop(leaked.tap.take());
    std::mem::forget(leaked);
    let (links, qdiscs, _) = inspect(&pod);
    assert!(
        links.iter().all(|l| l.name != TAP_NAME),
        "the tap outlived its descriptors"
    );
    assert!(qdiscs.iter().any(|q| q.kind == "ingress"));

    let removed = clean_up(&pod.path()).expect("clean up");
    assert_eq!(removed, vec!["the ingress qdisc of eth0".to_string()]);
    let (_, qdiscs, filters) = inspect(&pod);
    assert!(qdiscs.iter().all(|q| q.kind != "ingress"), "{qdiscs:?}");
    assert!(filters.is_empty());
    assert!(clean_up(&pod.path()).expect("again").is_empty());
}

#[test]
#[ignore = "needs root: makes network namespaces"]
fn a_missing_namespace_or_one_without_an_ethernet_interface_is_named_and_nothing_is_left() {
    let missing = PathBuf::from("/run/netns/rvm-no-such-namespace");
    let err = PodNetwork::connect(&missing).expect_err("missing namespace");
    assert!(matches!(err, NetworkError::Open { .. }), "{err:?}");
    assert!(crate::Chain(&err)
        .to_string()
        .contains("rvm-no-such-namespace"));

    // Loopback only is a pod without a network (`podman --network none`), not an error.
    let empty = Netns::new("empty");
    assert!(PodNetwork::connect(&empty.path())
        .expect("loopback only")
        .is_none());

    // A link that is not Ethernet cannot be the guest NIC's peer.
    empty.ip(&["tuntap", "add", "dev", "tun7", "mode", "tun"]);
    let err = PodNetwork::connect(&empty.path()).expect_err("no Ethernet interface");
    let text = crate::Chain(&err).to_string();
    assert!(matches!(err, NetworkError::NoInterface { .. }), "{text}");
    assert!(
        text.contains(&empty.name) && text.contains("links: lo, tun7"),
        "{text}"
    );
    let (links, qdiscs, _) = inspect(&empty);
    assert!(links.iter().all(|l| l.name != TAP_NAME));
    assert!(qdiscs.iter().all(|q| q.kind != "ingress"));
}

#[test]
fn only_a_network_namespace_named_by_path_is_the_pods() {
    let spec = |namespaces: serde_json::Value| -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": namespaces}
        }))
        .expect("spec")
    };
    let joined = spec(serde_json::json!([
        {"type": "pid"},
        {"type": "network", "path": "/var/run/netns/cni-1"}
    ]));
    assert_eq!(
        namespace_path(&joined),
        Some(PathBuf::from("/var/run/netns/cni-1"))
    );
    let guest = spec_for_guest(&joined);
    let kinds: Vec<_> = guest
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(kinds, vec![LinuxNamespaceType::Pid]);

    let fresh = spec(serde_json::json!([{"type": "network"}]));
    assert_eq!(namespace_path(&fresh), None);
    assert_eq!(spec_for_guest(&fresh), fresh);
    assert_eq!(namespace_path(&spec(serde_json::json!([]))), None);
}

/// Connects to `127.0.0.1:port` from inside namespace `ns`.
fn connect_in(ns: &Netns, port: u16) -> io::Result<std::net::TcpStream> {
    let file = ns.file();
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        std::net::TcpStream::connect(("127.0.0.1", port))
    })
    .join()
    .expect("the connecting thread")
}

#[test]
#[ignore = "needs root and iptables: makes a network namespace and a nat rule in it"]
fn loopback_connections_to_any_port_reach_the_dialer_with_their_port() {
    let pod = Netns::new("fwd");
    pod.ip(&["link", "set", "lo", "up"]);
    // The "guest": a Unix socket pair per connection, served by a thread echoing with the port.
    let dial: forward::Dial = std::sync::Arc::new(|port| {
        let (host, mut guest) = std::os::unix::net::UnixStream::pair()?;
        std::thread::spawn(move || {
            let mut request = Vec::new();
            let _ = guest.read_to_end(&mut request);
            let _ = write!(guest, "port {port} got ");
            let _ = guest.write_all(&request);
        });
        Ok(host)
    });
    let mut forwarder = forward::LoopbackForwarder::start(&pod.file(), &pod.path(), dial).unwrap();
    for port in [8081, 443] {
        let mut conn = connect_in(&pod, port).unwrap();
        conn.write_all(b"hi").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, format!("port {port} got hi"));
    }
    let rules = Command::new("nsenter")
        .arg(format!("--net={}", pod.path().display()))
        .args(["iptables", "-t", "nat", "-S", "OUTPUT"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(rules.contains("REDIRECT"), "{rules}");
    forwarder.stop().unwrap();
    // Stopped: the rule is gone and nothing answers on the loopback any more.
    let rules = Command::new("nsenter")
        .arg(format!("--net={}", pod.path().display()))
        .args(["iptables", "-t", "nat", "-S", "OUTPUT"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains("REDIRECT"),
        "the rule outlived stop()"
    );
    assert!(connect_in(&pod, 8081).is_err());
    // Idempotent.
    forwarder.stop().unwrap();
}
