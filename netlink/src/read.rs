//! What a network namespace holds, read into plain values: links, addresses, routes and
//! neighbours.

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::{Handle, NetlinkError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address (six bytes for Ethernet; empty for loopback-like links).
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    pub loopback: bool,
    pub ethernet: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub link: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// IPv6 link-local (fe80::/10): every link makes its own addresses and routes there from its MAC.
pub fn is_ipv6_link_local(address: &IpAddr) -> bool {
    matches!(address, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

/// A unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub link: Option<u32>,
    pub source: Option<IpAddr>,
    pub metric: Option<u32>,
    pub scope_link: bool,
    /// Made by the kernel for an address's prefix (protocol `kernel`).
    pub kernel: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub link: u32,
    pub address: IpAddr,
    pub mac: Vec<u8>,
    pub permanent: bool,
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn unspecified(family: AddressFamily) -> Option<IpAddr> {
    match family {
        AddressFamily::Inet => Some(IpAddr::from([0u8; 4])),
        AddressFamily::Inet6 => Some(IpAddr::from([0u8; 16])),
        _ => None,
    }
}

impl Handle {
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|e| NetlinkError::new("listing links", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(link)),
                _ => None,
            })
            .collect())
    }

    pub fn addresses(&mut self) -> Result<Vec<Address>, NetlinkError> {
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|e| NetlinkError::new("listing addresses", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(msg) => address_of(msg),
                _ => None,
            })
            .collect())
    }

    /// Unicast routes of the main table, IPv4 and IPv6.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            let replies = self
                .dump(RouteNetlinkMessage::GetRoute(request))
                .map_err(|e| NetlinkError::new("listing routes", e))?;
            routes.extend(replies.into_iter().filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(msg) => route_of(msg),
                _ => None,
            }));
        }
        Ok(routes)
    }

    pub fn neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        let mut neighbours = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = NeighbourMessage::default();
            request.header.family = family;
            let replies = self
                .dump(RouteNetlinkMessage::GetNeighbour(request))
                .map_err(|e| NetlinkError::new("listing neighbours", e))?;
            neighbours.extend(replies.into_iter().filter_map(|reply| match reply {
                RouteNetlinkMessage::NewNeighbour(msg) => neighbour_of(msg),
                _ => None,
            }));
        }
        Ok(neighbours)
    }
}

fn link_of(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        loopback: msg.header.flags.contains(LinkFlags::Loopback),
        ethernet: msg.header.link_layer_type == LinkLayerType::Ether,
    };
    for attribute in msg.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Address(mac) => link.mac = mac,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            _ => {}
        }
    }
    link
}

fn address_of(msg: AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let mut local = None;
    let mut address = None;
    for attribute in msg.attributes {
        match attribute {
            AddressAttribute::Local(a) => local = Some(a),
            AddressAttribute::Address(a) => address = Some(a),
            _ => {}
        }
    }
    Some(Address {
        link: msg.header.index,
        address: local.or(address)?,
        prefix_len: msg.header.prefix_len,
    })
}

fn route_of(msg: RouteMessage) -> Option<Route> {
    let header = &msg.header;
    let mut table = u32::from(header.table);
    let mut route = Route {
        destination: unspecified(header.address_family)?,
        prefix_len: header.destination_prefix_length,
        gateway: None,
        link: None,
        source: None,
        metric: None,
        scope_link: header.scope == RouteScope::Link,
        kernel: header.protocol == netlink_packet_route::route::RouteProtocol::Kernel,
    };
    if header.kind != RouteType::Unicast {
        return None;
    }
    for attribute in &msg.attributes {
        match attribute {
            RouteAttribute::Destination(a) => route.destination = route_ip(a)?,
            RouteAttribute::Gateway(a) => route.gateway = route_ip(a),
            RouteAttribute::Oif(index) => route.link = Some(*index),
            RouteAttribute::PrefSource(a) => route.source = route_ip(a),
            RouteAttribute::Priority(metric) => route.metric = Some(*metric),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(route)
}

fn neighbour_of(msg: NeighbourMessage) -> Option<Neighbour> {
    let mut address = None;
    let mut mac = Vec::new();
    for attribute in msg.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                address = Some(IpAddr::V4(a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                address = Some(IpAddr::V6(a))
            }
            NeighbourAttribute::LinkLayerAddress(m) => mac = m,
            _ => {}
        }
    }
    Some(Neighbour {
        link: msg.header.ifindex,
        address: address?,
        mac,
        permanent: msg.header.state == NeighbourState::Permanent,
    })
}
