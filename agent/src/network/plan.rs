//! Checking a `configure_network` request before anything changes, and the order it is applied
//! in: every field is checked here, so a bad request leaves the guest's network untouched and
//! its error names the field.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rust_vm_protocol::{IpCidr, NetworkConfig};

use super::NetworkError;

/// Linux's limit on a link name (IFNAMSIZ, 16, counts the terminating NUL).
const MAX_NAME_LEN: usize = 15;
/// The least MTU of an Ethernet link (ETH_MIN_MTU) and the most of virtio-net.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;
/// IPv6 is disabled on a link with a smaller MTU (IPV6_MIN_MTU).
const IPV6_MIN_MTU: u32 = 1280;

/// An Ethernet address; parsing accepts either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Mac, &'static str> {
        const WANTED: &str = "not a MAC address (six hex octets: aa:bb:cc:dd:ee:ff)";
        let mut mac = [0u8; 6];
        let mut octets = s.split(':');
        for byte in &mut mac {
            let octet = octets.next().ok_or(WANTED)?;
            if octet.len() != 2 {
                return Err(WANTED);
            }
            *byte = u8::from_str_radix(octet, 16).map_err(|_| WANTED)?;
        }
        if octets.next().is_some() {
            return Err(WANTED);
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub mac: Mac,
    pub name: String,
    pub mtu: u32,
    pub addresses: Vec<IpCidr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpCidr,
    pub gateway: Option<IpAddr>,
    pub interface: String,
    pub source: Option<IpAddr>,
    pub metric: Option<u32>,
}

impl Route {
    /// Link scope: the destination is on the link (IPv4 only; the kernel keeps no scope for
    /// IPv6 routes, which are all universe).
    pub fn link_scope(&self) -> bool {
        self.gateway.is_none() && self.destination.address.is_ipv4()
    }
}

/// As `ip route` writes it: `default via 169.254.1.1 dev eth0`.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.destination.prefix_len == 0 {
            write!(f, "default")?;
        } else {
            write!(f, "{}", self.destination)?;
        }
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        write!(f, " dev {}", self.interface)?;
        if let Some(source) = self.source {
            write!(f, " src {source}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub address: IpAddr,
    pub mac: Mac,
    pub interface: String,
}

/// A checked request, routes in the order they are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
}

fn invalid(field: String, value: impl fmt::Display, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn max_prefix(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

fn check_prefix(field: &str, cidr: &IpCidr) -> Result<(), NetworkError> {
    let max = max_prefix(cidr.address);
    if cidr.prefix_len > max {
        return Err(invalid(
            field.to_owned(),
            cidr,
            format!("prefix length above {max}"),
        ));
    }
    Ok(())
}

/// An address a host may have: not unspecified, not multicast.
fn check_unicast(
    field: &str,
    value: impl fmt::Display,
    address: IpAddr,
) -> Result<(), NetworkError> {
    if address.is_unspecified() || address.is_multicast() {
        return Err(invalid(field.to_owned(), value, "not a unicast address"));
    }
    Ok(())
}

/// The address with every bit after the prefix cleared.
fn network(cidr: &IpCidr) -> IpAddr {
    match cidr.address {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(cidr.prefix_len))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(cidr.prefix_len))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// What the kernel accepts as a link name (dev_valid_name).
fn check_name(field: &str, name: &str) -> Result<(), NetworkError> {
    let reason = if name.is_empty() || name.len() > MAX_NAME_LEN {
        format!("a link name is 1 to {MAX_NAME_LEN} bytes long")
    } else if name == "." || name == ".." {
        "not a link name".to_owned()
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        "a link name has no `/`, `:` or white space".to_owned()
    } else {
        return Ok(());
    };
    Err(invalid(field.to_owned(), format!("{name:?}"), reason))
}

fn check_family(field: &str, address: IpAddr, destination: &IpCidr) -> Result<(), NetworkError> {
    if address.is_ipv4() != destination.address.is_ipv4() {
        return Err(invalid(
            field.to_owned(),
            address,
            format!("not of the family of the destination {destination}"),
        ));
    }
    Ok(())
}

fn interface_known(field: String, name: &str, names: &HashSet<&str>) -> Result<(), NetworkError> {
    if !names.contains(name) {
        return Err(invalid(
            field,
            format!("{name:?}"),
            "not among the interfaces",
        ));
    }
    Ok(())
}

fn plan_interfaces(config: &NetworkConfig) -> Result<Vec<Interface>, NetworkError> {
    let mut interfaces: Vec<Interface> = Vec::new();
    for (i, iface) in config.interfaces.iter().enumerate() {
        let field = |name: &str| format!("interfaces[{i}].{name}");
        let mac: Mac = iface
            .mac
            .parse()
            .map_err(|reason| invalid(field("mac"), format!("{:?}", iface.mac), reason))?;
        // lo has the zero MAC; a multicast MAC is no NIC's.
        if mac.0 == [0; 6] || mac.0[0] & 1 == 1 {
            return Err(invalid(
                field("mac"),
                format!("{:?}", iface.mac),
                "not a unicast MAC address",
            ));
        }
        check_name(&field("name"), &iface.name)?;
        if let Some(j) = interfaces.iter().position(|other| other.mac == mac) {
            return Err(invalid(
                field("mac"),
                format!("{:?}", iface.mac),
                format!("interfaces[{j}] has it too"),
            ));
        }
        if let Some(j) = interfaces.iter().position(|other| other.name == iface.name) {
            return Err(invalid(
                field("name"),
                format!("{:?}", iface.name),
                format!("interfaces[{j}] has it too"),
            ));
        }
        if !MTU_RANGE.contains(&iface.mtu) {
            return Err(invalid(
                field("mtu"),
                iface.mtu,
                format!("not {} to {}", MTU_RANGE.start(), MTU_RANGE.end()),
            ));
        }
        for (j, cidr) in iface.addresses.iter().enumerate() {
            let field = format!("interfaces[{i}].addresses[{j}]");
            check_prefix(&field, cidr)?;
            check_unicast(&field, cidr, cidr.address)?;
            if cidr.address.is_ipv6() && iface.mtu < IPV6_MIN_MTU {
                return Err(invalid(
                    field,
                    cidr,
                    format!(
                        "IPv6 needs an MTU of at least {IPV6_MIN_MTU}; interfaces[{i}].mtu is {}",
                        iface.mtu
                    ),
                ));
            }
        }
        interfaces.push(Interface {
            mac,
            name: iface.name.clone(),
            mtu: iface.mtu,
            addresses: iface.addresses.clone(),
        });
    }
    Ok(interfaces)
}

/// Checks every field of `config`; routes without a gateway come first (so that a gateway
/// outside every subnet, reached by a link-scope route, is reachable when its route is added),
/// in the given order otherwise.
pub fn plan(config: &NetworkConfig) -> Result<Plan, NetworkError> {
    let interfaces = plan_interfaces(config)?;
    let names: HashSet<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();

    let mut routes = Vec::with_capacity(config.routes.len());
    for (k, route) in config.routes.iter().enumerate() {
        let field = |name: &str| format!("routes[{k}].{name}");
        let destination = &route.destination;
        check_prefix(&field("destination"), destination)?;
        if network(destination) != destination.address {
            return Err(invalid(
                field("destination"),
                destination,
                format!(
                    "bits set after the prefix (the network is {}/{})",
                    network(destination),
                    destination.prefix_len
                ),
            ));
        }
        if let Some(gateway) = route.gateway {
            check_family(&field("gateway"), gateway, destination)?;
            check_unicast(&field("gateway"), gateway, gateway)?;
        }
        if let Some(source) = route.source {
            check_family(&field("source"), source, destination)?;
            check_unicast(&field("source"), source, source)?;
        }
        interface_known(field("interface"), &route.interface, &names)?;
        routes.push(Route {
            destination: *destination,
            gateway: route.gateway,
            interface: route.interface.clone(),
            source: route.source,
            metric: route.metric,
        });
    }
    // A stable sort: the given order within each group.
    routes.sort_by_key(|route| route.gateway.is_some());

    let mut neighbours = Vec::with_capacity(config.neighbours.len());
    for (k, neighbour) in config.neighbours.iter().enumerate() {
        let field = |name: &str| format!("neighbours[{k}].{name}");
        let mac: Mac = neighbour
            .mac
            .parse()
            .map_err(|reason| invalid(field("mac"), format!("{:?}", neighbour.mac), reason))?;
        check_unicast(&field("address"), neighbour.address, neighbour.address)?;
        interface_known(field("interface"), &neighbour.interface, &names)?;
        neighbours.push(Neighbour {
            address: neighbour.address,
            mac,
            interface: neighbour.interface.clone(),
        });
    }
    Ok(Plan {
        interfaces,
        routes,
        neighbours,
    })
}
