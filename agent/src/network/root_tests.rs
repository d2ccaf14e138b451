//! The real netlink operations in a network namespace of a test thread's own (root), read back
//! with iproute2's JSON output.

use std::process::Command;

use nix::sched::CloneFlags;
use rust_vm_protocol::{
    error_chain, ErrorCode, InterfaceConfig, IpCidr, NeighbourConfig, NetworkConfig, RouteConfig,
};
use serde_json::Value;

use super::netlink::Netlink;
use super::plan::plan;
use super::{apply, LinkChange, Mac, NetOps};

const MAC: &str = "02:aa:bb:cc:dd:01";

/// Runs `f` in a thread of its own in a fresh network namespace (the rest of the test process
/// keeps its own): the thread's netlink sockets and the commands it starts are in there.
fn in_new_netns(f: impl FnOnce() + Send + 'static) {
    let joined = std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f();
    })
    .join();
    if let Err(panic) = joined {
        std::panic::resume_unwind(panic);
    }
}

fn ip_json(args: &[&str]) -> Vec<Value> {
    let output = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(output.status.success(), "ip {args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("ip {args:?}: {e}"))
}

fn cidr(address: &str, prefix_len: u8) -> IpCidr {
    IpCidr {
        address: address.parse().unwrap(),
        prefix_len,
    }
}

fn route(destination: IpCidr, gateway: Option<&str>) -> RouteConfig {
    RouteConfig {
        destination,
        gateway: gateway.map(|g| g.parse().unwrap()),
        interface: "eth0".into(),
        source: None,
        metric: None,
    }
}

fn config() -> NetworkConfig {
    NetworkConfig {
        interfaces: vec![InterfaceConfig {
            mac: MAC.to_uppercase(),
            name: "eth0".into(),
            mtu: 1450,
            addresses: vec![cidr("10.1.2.3", 32), cidr("fd00::5", 64)],
        }],
        // Gateway routes first on purpose: the agent adds the link-scope route before them.
        routes: vec![
            route(cidr("0.0.0.0", 0), Some("169.254.1.1")),
            RouteConfig {
                metric: Some(256),
                ..route(cidr("fd00::", 64), None)
            },
            route(cidr("::", 0), Some("fd00::1")),
            RouteConfig {
                source: Some("10.1.2.3".parse().unwrap()),
                ..route(cidr("169.254.1.1", 32), None)
            },
        ],
        neighbours: vec![NeighbourConfig {
            address: "169.254.1.1".parse().unwrap(),
            mac: "ee:ee:ee:ee:ee:ee".into(),
            interface: "eth0".into(),
        }],
    }
}

fn find<'a>(list: &'a [Value], key: &str, value: &str) -> &'a Value {
    list.iter()
        .find(|v| v[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value} in {list:#?}"))
}

#[test]
#[ignore = "needs root: makes a network namespace"]
fn calico_style_network_in_a_network_namespace() {
    in_new_netns(|| {
        let mut netlink = Netlink::open().unwrap();
        let mac: Mac = MAC.parse().unwrap();
        netlink.add_veth("veth-test", mac, "peer0").unwrap();
        // A carrier for eth0, as a VMM's tap gives the guest's NIC.
        let peer = netlink
            .links()
            .unwrap()
            .into_iter()
            .find(|l| l.name == "peer0")
            .expect("peer0");
        netlink.set_link(peer.index, &LinkChange::Up).unwrap();

        let plan = plan(&config()).unwrap();
        apply(&mut netlink, &plan).unwrap();

        let links = ip_json(&["link", "show", "dev", "eth0"]);
        let link = &links[0];
        assert_eq!(link["address"], MAC, "{link:#}");
        assert_eq!(link["mtu"], 1450, "{link:#}");
        assert!(
            link["flags"].as_array().unwrap().contains(&"UP".into()),
            "{link:#}"
        );

        let addresses = ip_json(&["addr", "show", "dev", "eth0"]);
        let infos = addresses[0]["addr_info"].as_array().unwrap();
        let v4 = find(infos, "local", "10.1.2.3");
        assert_eq!(v4["prefixlen"], 32, "{v4:#}");
        let v6 = find(infos, "local", "fd00::5");
        assert_eq!(v6["prefixlen"], 64, "{v6:#}");
        assert_eq!(v6["nodad"], true, "{v6:#}");
        assert!(v6.get("tentative").is_none(), "usable at once: {v6:#}");

        let routes = ip_json(&["route", "show", "dev", "eth0"]);
        let link_route = find(&routes, "dst", "169.254.1.1");
        assert_eq!(link_route["scope"], "link", "{routes:#?}");
        assert_eq!(link_route["protocol"], "static", "{routes:#?}");
        assert_eq!(link_route["prefsrc"], "10.1.2.3", "{routes:#?}");
        let default = find(&routes, "dst", "default");
        assert_eq!(default["gateway"], "169.254.1.1", "{routes:#?}");
        assert_eq!(default["protocol"], "static", "{routes:#?}");

        let routes6 = ip_json(&["-6", "route", "show", "dev", "eth0"]);
        let default6 = find(&routes6, "dst", "default");
        assert_eq!(default6["gateway"], "fd00::1", "{routes6:#?}");
        // The kernel's prefix route stays; the request's identical one met EEXIST.
        assert_eq!(find(&routes6, "dst", "fd00::/64")["protocol"], "kernel");

        let neighbours = ip_json(&["neigh", "show", "dev", "eth0"]);
        let gateway = find(&neighbours, "dst", "169.254.1.1");
        assert_eq!(gateway["lladdr"], "ee:ee:ee:ee:ee:ee", "{gateway:#}");
        assert_eq!(gateway["state"], serde_json::json!(["PERMANENT"]));

        // A second time the addresses exist: the step and the kernel's error, once each.
        let e = apply(&mut netlink, &plan).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ContainerFailed);
        let text = error_chain(&e);
        assert!(
            text.starts_with("adding address 10.1.2.3/32 to eth0: File exists"),
            "{text}"
        );
        assert_eq!(text.matches("File exists").count(), 1, "{text}");
    });
}

#[test]
#[ignore = "needs root: makes a network namespace"]
fn a_missing_mac_names_the_links_of_the_namespace() {
    in_new_netns(|| {
        let mut netlink = Netlink::open().unwrap();
        let e = apply(&mut netlink, &plan(&config()).unwrap()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(
            error_chain(&e),
            "interfaces[0].mac 02:aa:bb:cc:dd:01: no link has it (links: lo 00:00:00:00:00:00)"
        );
    });
}
