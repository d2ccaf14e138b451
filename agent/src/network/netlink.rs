//! [`NetOps`] over an rtnetlink socket (synchronous: the agent has no async runtime).

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rust_vm_netlink::Handle;
use rust_vm_protocol::IpCidr;

use super::{Link, LinkChange, Mac, Neighbour, NetOps, Route};

/// The agent's [`NetOps`] on the shared rtnetlink client.
pub struct Netlink {
    handle: Handle,
}

fn family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        Ok(Netlink {
            handle: Handle::new()?,
        })
    }

    fn change(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.handle.execute(message, flags)
    }

    /// A veth pair, the first end with `mac`: a link to configure in the root tests (the host's
    /// kernel may lack the dummy driver).
    #[cfg(test)]
    pub fn add_veth(&mut self, name: &str, mac: Mac, peer: &str) -> io::Result<()> {
        use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkInfo};
        let mut peer_message = LinkMessage::default();
        peer_message
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Address(mac.0.to_vec()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
            ]),
        ];
        self.change(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }
}

impl NetOps for Netlink {
    fn links(&mut self) -> io::Result<Vec<Link>> {
        let links = self.handle.links().map_err(|e| e.source)?;
        Ok(links
            .into_iter()
            .map(|link| Link {
                index: link.index,
                name: link.name,
                mac: link.mac.try_into().ok().map(Mac),
                mtu: link.mtu,
                up: link.up,
            })
            .collect())
    }

    fn set_link(&mut self, index: u32, change: &LinkChange) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        match change {
            LinkChange::Down => message.header.change_mask = LinkFlags::Up,
            LinkChange::Up => {
                message.header.flags = LinkFlags::Up;
                message.header.change_mask = LinkFlags::Up;
            }
            LinkChange::Rename(name) => {
                message.attributes.push(LinkAttribute::IfName(name.clone()))
            }
            LinkChange::Mtu(mtu) => message.attributes.push(LinkAttribute::Mtu(*mtu)),
        }
        self.change(RouteNetlinkMessage::SetLink(message), 0)
    }

    fn add_address(&mut self, index: u32, address: &IpCidr) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = family(address.address);
        message.header.prefix_len = address.prefix_len;
        message.header.index = index;
        message.header.scope = AddressScope::Universe;
        let ip = address.address;
        match ip {
            IpAddr::V4(v4) => {
                message.attributes.push(AddressAttribute::Local(ip));
                message.attributes.push(AddressAttribute::Address(ip));
                // As `ip addr add ... brd +` and the CNI plugins: the subnet's broadcast.
                if address.prefix_len < 31 {
                    let host_bits = u32::MAX >> address.prefix_len;
                    let broadcast = u32::from(v4) | host_bits;
                    message
                        .attributes
                        .push(AddressAttribute::Broadcast(broadcast.into()));
                }
            }
            IpAddr::V6(_) => {
                message.header.flags = AddressHeaderFlags::Nodad;
                message.attributes.push(AddressAttribute::Address(ip));
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        self.change(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn add_route(&mut self, index: u32, route: &Route) -> io::Result<()> {
        let destination = route.destination;
        let mut message = RouteMessage::default();
        message.header.address_family = family(destination.address);
        message.header.destination_prefix_length = destination.prefix_len;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Static;
        message.header.scope = if route.link_scope() {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        message.header.kind = RouteType::Unicast;
        if destination.prefix_len > 0 {
            message
                .attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    destination.address,
                )));
        }
        if let Some(gateway) = route.gateway {
            message
                .attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        }
        message.attributes.push(RouteAttribute::Oif(index));
        if let Some(source) = route.source {
            message
                .attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(source)));
        }
        if let Some(metric) = route.metric {
            message.attributes.push(RouteAttribute::Priority(metric));
        }
        self.change(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn add_neighbour(&mut self, index: u32, neighbour: &Neighbour) -> io::Result<()> {
        let mut message = NeighbourMessage::default();
        message.header.family = family(neighbour.address);
        message.header.ifindex = index;
        message.header.state = NeighbourState::Permanent;
        message.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::from(neighbour.address)),
            NeighbourAttribute::LinkLayerAddress(neighbour.mac.0.to_vec()),
        ];
        // REPLACE: an entry the kernel learnt already becomes the permanent one.
        self.change(
            RouteNetlinkMessage::NewNeighbour(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }
}
