//! Checking requests, and applying them to a recording double (no root).

use std::io;
use std::net::IpAddr;

use rust_vm_protocol::{
    error_chain, ErrorCode, InterfaceConfig, IpCidr, NeighbourConfig, NetworkConfig, RouteConfig,
};

use super::plan::plan;
use super::{apply, Link, LinkChange, Mac, Neighbour, NetOps, NetworkError, Route};

const MAC: &str = "52:54:00:12:34:56";

/// Links as a guest has them, each call recorded as text; calls starting with a prefix in
/// `fail` fail with its errno.
struct Recorder {
    links: Vec<Link>,
    calls: Vec<String>,
    fail: Vec<(&'static str, i32)>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            links: vec![
                Link {
                    index: 1,
                    name: "lo".into(),
                    mac: Some(Mac([0; 6])),
                    mtu: 65536,
                    up: true,
                },
                Link {
                    index: 2,
                    name: "eth0".into(),
                    mac: Some(MAC.parse().unwrap()),
                    mtu: 1500,
                    up: true,
                },
            ],
            calls: Vec::new(),
            fail: Vec::new(),
        }
    }

    fn record(&mut self, call: String) -> io::Result<()> {
        let failure = self
            .fail
            .iter()
            .find(|(prefix, _)| call.starts_with(prefix));
        let result = match failure {
            Some(&(_, errno)) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        };
        self.calls.push(call);
        result
    }
}

impl NetOps for Recorder {
    fn links(&mut self) -> io::Result<Vec<Link>> {
        self.record("links".into())?;
        Ok(self.links.clone())
    }

    fn set_link(&mut self, index: u32, change: &LinkChange) -> io::Result<()> {
        let call = match change {
            LinkChange::Down => format!("down {index}"),
            LinkChange::Up => format!("up {index}"),
            LinkChange::Rename(name) => format!("rename {index} {name}"),
            LinkChange::Mtu(mtu) => format!("mtu {index} {mtu}"),
        };
        self.record(call)?;
        if let Some(link) = self.links.iter_mut().find(|l| l.index == index) {
            match change {
                LinkChange::Down => link.up = false,
                LinkChange::Up => link.up = true,
                LinkChange::Rename(name) => link.name = name.clone(),
                LinkChange::Mtu(mtu) => link.mtu = *mtu,
            }
        }
        Ok(())
    }

    fn add_address(&mut self, index: u32, address: &IpCidr) -> io::Result<()> {
        self.record(format!("addr {index} {address}"))
    }

    fn add_route(&mut self, index: u32, route: &Route) -> io::Result<()> {
        self.record(format!("route {index} {route}"))
    }

    fn add_neighbour(&mut self, index: u32, neighbour: &Neighbour) -> io::Result<()> {
        self.record(format!(
            "neigh {index} {} {}",
            neighbour.address, neighbour.mac
        ))
    }
}

fn cidr(s: &str) -> IpCidr {
    let (address, prefix_len) = s.split_once('/').unwrap();
    IpCidr {
        address: address.parse().unwrap(),
        prefix_len: prefix_len.parse().unwrap(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn route(destination: &str, gateway: Option<&str>, interface: &str) -> RouteConfig {
    RouteConfig {
        destination: cidr(destination),
        gateway: gateway.map(ip),
        interface: interface.into(),
        source: None,
        metric: None,
    }
}

/// Calico's shape: a /32, the gateway reached by a link-scope route, sent gateway route first
/// to prove the order is the agent's.
fn calico(mac: &str, name: &str) -> NetworkConfig {
    NetworkConfig {
        interfaces: vec![InterfaceConfig {
            mac: mac.into(),
            name: name.into(),
            mtu: 1450,
            addresses: vec![cidr("10.1.2.3/32"), cidr("fd00::5/64")],
        }],
        routes: vec![
            route("0.0.0.0/0", Some("169.254.1.1"), name),
            route("169.254.1.1/32", None, name),
            route("::/0", Some("fd00::1"), name),
        ],
        neighbours: vec![NeighbourConfig {
            address: ip("169.254.1.1"),
            mac: "EE:EE:EE:EE:EE:EE".into(),
            interface: name.into(),
        }],
    }
}

fn run(ops: &mut Recorder, config: &NetworkConfig) -> Result<(), NetworkError> {
    apply(ops, &plan(config)?)
}

fn invalid_message(config: &NetworkConfig) -> String {
    let e = plan(config).expect_err("a bad request");
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    error_chain(&e)
}

#[test]
fn renames_sets_mtu_adds_addresses_before_up_then_link_routes_first() {
    let mut ops = Recorder::new();
    run(&mut ops, &calico("52:54:00:12:34:56", "pod0")).unwrap();
    assert_eq!(
        ops.calls,
        [
            "links",
            "down 2",
            "rename 2 pod0",
            "mtu 2 1450",
            "addr 2 10.1.2.3/32",
            "addr 2 fd00::5/64",
            "up 2",
            "route 2 169.254.1.1/32 dev pod0",
            "route 2 default via 169.254.1.1 dev pod0",
            "route 2 default via fd00::1 dev pod0",
            "neigh 2 169.254.1.1 ee:ee:ee:ee:ee:ee",
        ]
    );
}

#[test]
fn a_link_of_the_right_name_and_mtu_is_not_taken_down() {
    let mut ops = Recorder::new();
    let mut config = calico(MAC, "eth0");
    config.interfaces[0].mtu = 1500;
    run(&mut ops, &config).unwrap();
    assert!(
        !ops.calls
            .iter()
            .any(|c| c.starts_with("down") || c.starts_with("rename") || c.starts_with("mtu")),
        "{:?}",
        ops.calls
    );
    assert_eq!(ops.calls[3], "up 2", "{:?}", ops.calls);
}

#[test]
fn the_mac_matches_in_either_case() {
    let mut ops = Recorder::new();
    run(
        &mut ops,
        &calico("52:54:00:12:34:56".to_uppercase().as_str(), "eth0"),
    )
    .unwrap();
    assert!(ops.calls.contains(&"up 2".to_owned()), "{:?}", ops.calls);
}

#[test]
fn routes_keep_their_order_within_each_group() {
    let mut config = calico(MAC, "eth0");
    config.routes = vec![
        route("10.0.0.0/8", Some("169.254.1.1"), "eth0"),
        route("169.254.1.1/32", None, "eth0"),
        route("0.0.0.0/0", Some("169.254.1.1"), "eth0"),
        route("192.168.0.0/16", None, "eth0"),
    ];
    let routes: Vec<String> = plan(&config)
        .unwrap()
        .routes
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        routes,
        [
            "169.254.1.1/32 dev eth0",
            "192.168.0.0/16 dev eth0",
            "10.0.0.0/8 via 169.254.1.1 dev eth0",
            "default via 169.254.1.1 dev eth0",
        ]
    );
}

#[test]
fn a_route_the_kernel_made_already_is_not_an_error() {
    let mut ops = Recorder::new();
    ops.fail.push(("route 2 169.254.1.1/32", libc::EEXIST));
    run(&mut ops, &calico(MAC, "eth0")).unwrap();
    assert!(
        ops.calls.iter().any(|c| c.starts_with("neigh")),
        "went on after EEXIST: {:?}",
        ops.calls
    );
}

#[test]
fn a_failing_route_names_itself_and_stops() {
    let mut ops = Recorder::new();
    ops.fail
        .push(("route 2 default via 169.254.1.1", libc::ENETUNREACH));
    let e = run(&mut ops, &calico(MAC, "eth0")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ContainerFailed);
    let text = error_chain(&e);
    assert!(
        text.starts_with("adding route default via 169.254.1.1 dev eth0: Network is unreachable"),
        "{text}"
    );
    assert!(!ops.calls.iter().any(|c| c.starts_with("neigh")));
}

#[test]
fn an_existing_address_is_an_error_naming_the_step_once() {
    let mut ops = Recorder::new();
    ops.fail.push(("addr 2 10.1.2.3/32", libc::EEXIST));
    let e = run(&mut ops, &calico(MAC, "eth0")).unwrap_err();
    let text = error_chain(&e);
    assert_eq!(
        text,
        format!(
            "adding address 10.1.2.3/32 to eth0: {}",
            io::Error::from_raw_os_error(libc::EEXIST)
        )
    );
    assert_eq!(text.matches("File exists").count(), 1, "{text}");
    assert!(!ops.calls.contains(&"up 2".to_owned()), "{:?}", ops.calls);
}

#[test]
fn a_missing_mac_is_named_with_the_links_seen_before_any_change() {
    let mut ops = Recorder::new();
    let e = run(&mut ops, &calico("02:00:00:00:00:09", "eth0")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert_eq!(
        error_chain(&e),
        "interfaces[0].mac 02:00:00:00:00:09: no link has it \
         (links: lo 00:00:00:00:00:00, eth0 52:54:00:12:34:56)"
    );
    assert_eq!(ops.calls, ["links"]);
}

#[test]
fn renaming_onto_another_links_name_is_refused() {
    let mut ops = Recorder::new();
    ops.links.push(Link {
        index: 3,
        name: "pod0".into(),
        mac: Some(Mac([2, 0, 0, 0, 0, 3])),
        mtu: 1500,
        up: false,
    });
    let e = run(&mut ops, &calico(MAC, "pod0")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::AlreadyExists);
    assert!(
        error_chain(&e).contains("renaming eth0 (52:54:00:12:34:56) to pod0"),
        "{e}"
    );
    assert_eq!(ops.calls, ["links"]);
}

#[test]
fn a_name_freed_by_an_earlier_rename_can_be_taken() {
    // eth0 becomes net1, then eth1 becomes eth0.
    let mut ops = Recorder::new();
    ops.links.push(Link {
        index: 3,
        name: "eth1".into(),
        mac: Some(Mac([2, 0, 0, 0, 0, 3])),
        mtu: 1500,
        up: false,
    });
    let mut config = calico(MAC, "net1");
    config.routes.clear();
    config.neighbours.clear();
    config.interfaces.push(InterfaceConfig {
        mac: "02:00:00:00:00:03".into(),
        name: "eth0".into(),
        mtu: 1500,
        addresses: vec![cidr("10.2.0.2/24")],
    });
    run(&mut ops, &config).unwrap();
    assert!(
        ops.calls.iter().position(|c| c == "rename 2 net1")
            < ops.calls.iter().position(|c| c == "rename 3 eth0"),
        "{:?}",
        ops.calls
    );
}

#[test]
fn a_neighbour_failure_names_the_entry() {
    let mut ops = Recorder::new();
    ops.fail.push(("neigh", libc::EINVAL));
    let e = run(&mut ops, &calico(MAC, "eth0")).unwrap_err();
    assert!(
        error_chain(&e)
            .starts_with("adding neighbour 169.254.1.1 lladdr ee:ee:ee:ee:ee:ee dev eth0: "),
        "{e}"
    );
}

#[test]
fn bad_macs_are_named_by_field() {
    let mut config = calico("zz", "eth0");
    assert!(
        invalid_message(&config).starts_with("interfaces[0].mac \"zz\": not a MAC address"),
        "{}",
        invalid_message(&config)
    );
    for bad in [
        "52:54:00:12:34",
        "52:54:00:12:34:56:78",
        "5:54:00:12:34:56",
        "52-54-00-12-34-56",
    ] {
        config.interfaces[0].mac = bad.into();
        assert!(
            invalid_message(&config).starts_with("interfaces[0].mac"),
            "{bad}"
        );
    }
    let mut config = calico(MAC, "eth0");
    config.neighbours[0].mac = "nope".into();
    assert!(invalid_message(&config).starts_with("neighbours[0].mac \"nope\""));
}

#[test]
fn prefix_lengths_past_the_family_are_refused() {
    let mut config = calico(MAC, "eth0");
    config.interfaces[0].addresses[0] = cidr("10.1.2.3/33");
    assert_eq!(
        invalid_message(&config),
        "interfaces[0].addresses[0] 10.1.2.3/33: prefix length above 32"
    );
    let mut config = calico(MAC, "eth0");
    config.interfaces[0].addresses[1] = cidr("fd00::5/129");
    assert_eq!(
        invalid_message(&config),
        "interfaces[0].addresses[1] fd00::5/129: prefix length above 128"
    );
    let mut config = calico(MAC, "eth0");
    config.routes[1].destination = cidr("169.254.1.1/40");
    assert!(invalid_message(&config).starts_with("routes[1].destination 169.254.1.1/40"));
}

#[test]
fn routes_and_neighbours_must_name_an_interface_of_the_request() {
    let mut config = calico(MAC, "eth0");
    config.routes[1].interface = "eth9".into();
    assert_eq!(
        invalid_message(&config),
        "routes[1].interface \"eth9\": not among the interfaces"
    );
    let mut config = calico(MAC, "eth0");
    config.neighbours[0].interface = "lo".into();
    assert_eq!(
        invalid_message(&config),
        "neighbours[0].interface \"lo\": not among the interfaces"
    );
}

#[test]
fn other_bad_fields_are_named() {
    type Change = fn(&mut NetworkConfig);
    let cases: Vec<(Change, &str)> = vec![
        (
            |c| c.interfaces[0].name = "a-very-long-name0".into(),
            "interfaces[0].name \"a-very-long-name0\": a link name is 1 to 15 bytes long",
        ),
        (
            |c| c.interfaces[0].name = "eth/0".into(),
            "interfaces[0].name \"eth/0\"",
        ),
        (
            |c| c.interfaces[0].mac = "00:00:00:00:00:00".into(),
            "interfaces[0].mac \"00:00:00:00:00:00\": not a unicast MAC address",
        ),
        (
            |c| c.interfaces[0].mac = "01:00:5e:00:00:01".into(),
            "interfaces[0].mac \"01:00:5e:00:00:01\": not a unicast MAC address",
        ),
        (|c| c.interfaces[0].mtu = 0, "interfaces[0].mtu 0: not 68 to 65535"),
        (
            |c| c.interfaces[0].mtu = 1000,
            "interfaces[0].addresses[1] fd00::5/64: IPv6 needs an MTU of at least 1280",
        ),
        (
            |c| c.interfaces[0].addresses[0] = cidr("224.0.0.1/32"),
            "interfaces[0].addresses[0] 224.0.0.1/32: not a unicast address",
        ),
        (
            |c| c.routes[0].destination = cidr("10.1.2.3/8"),
            "routes[0].destination 10.1.2.3/8: bits set after the prefix (the network is 10.0.0.0/8)",
        ),
        (
            |c| c.routes[0].gateway = Some(ip("fd00::1")),
            "routes[0].gateway fd00::1: not of the family of the destination 0.0.0.0/0",
        ),
        (
            |c| c.routes[2].source = Some(ip("10.1.2.3")),
            "routes[2].source 10.1.2.3: not of the family of the destination ::/0",
        ),
        (
            |c| {
                let mut second = c.interfaces[0].clone();
                second.name = "eth1".into();
                c.interfaces.push(second);
            },
            "interfaces[1].mac \"52:54:00:12:34:56\": interfaces[0] has it too",
        ),
        (
            |c| {
                let mut second = c.interfaces[0].clone();
                second.mac = "02:00:00:00:00:01".into();
                c.interfaces.push(second);
            },
            "interfaces[1].name \"eth0\": interfaces[0] has it too",
        ),
    ];
    for (change, expected) in cases {
        let mut config = calico(MAC, "eth0");
        change(&mut config);
        let message = invalid_message(&config);
        assert!(
            message.starts_with(expected),
            "{message}\nexpected: {expected}"
        );
    }
}

#[test]
fn an_empty_request_changes_nothing() {
    let mut ops = Recorder::new();
    run(&mut ops, &NetworkConfig::default()).unwrap();
    assert_eq!(ops.calls, ["links"]);
}
