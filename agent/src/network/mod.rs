//! `configure_network`: the pod's network in the guest. The request is checked whole first
//! ([`plan`]), then applied through [`NetOps`] (netlink in the agent, a recording double in
//! the unit tests): each interface (found by MAC) renamed, its MTU set, its addresses added and
//! then up; the routes, link-scope ones first; the permanent neighbours.

mod error;
mod netlink;
mod plan;
#[cfg(test)]
mod root_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Mutex;

use rust_vm_protocol::{IpCidr, NetworkConfig};

pub use error::NetworkError;
pub use plan::{Interface, Mac, Neighbour, Plan, Route};

/// A link as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Absent for links without an Ethernet address.
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
}

/// One change to a link, one request each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    Down,
    Rename(String),
    Mtu(u32),
    Up,
}

/// What configuring the network needs of the kernel; links are named by index.
pub trait NetOps {
    fn links(&mut self) -> io::Result<Vec<Link>>;
    fn set_link(&mut self, index: u32, change: &LinkChange) -> io::Result<()>;
    /// IPv6 addresses skip duplicate address detection, so they are usable at once.
    fn add_address(&mut self, index: u32, address: &IpCidr) -> io::Result<()>;
    fn add_route(&mut self, index: u32, route: &Route) -> io::Result<()>;
    /// A permanent entry.
    fn add_neighbour(&mut self, index: u32, neighbour: &Neighbour) -> io::Result<()>;
}

/// Checks `config` and applies it to the agent's network namespace through netlink.
pub fn configure(config: &NetworkConfig) -> Result<(), NetworkError> {
    // Two requests at once would race on the renames: one at a time.
    static APPLYING: Mutex<()> = Mutex::new(());
    let plan = plan::plan(config)?;
    let _one_at_a_time = APPLYING.lock().unwrap_or_else(|e| e.into_inner());
    let mut netlink = netlink::Netlink::open().map_err(NetworkError::Socket)?;
    apply(&mut netlink, &plan)
}

fn describe(links: &[Link]) -> String {
    let described: Vec<String> = links
        .iter()
        .map(|link| match link.mac {
            Some(mac) => format!("{} {mac}", link.name),
            None => format!("{} (no MAC)", link.name),
        })
        .collect();
    described.join(", ")
}

/// Applies a checked request: interfaces, routes, neighbours, in that order. Every link is
/// found by its MAC before the first change.
pub fn apply(ops: &mut impl NetOps, plan: &Plan) -> Result<(), NetworkError> {
    let mut links = ops.links().map_err(NetworkError::ListLinks)?;
    let mut indexes = Vec::with_capacity(plan.interfaces.len());
    for (i, iface) in plan.interfaces.iter().enumerate() {
        let link = links
            .iter()
            .find(|link| link.mac == Some(iface.mac))
            .ok_or_else(|| NetworkError::NoLinkWithMac {
                index: i,
                mac: iface.mac,
                seen: describe(&links),
            })?;
        indexes.push(link.index);
    }
    for (iface, &index) in plan.interfaces.iter().zip(&indexes) {
        configure_link(ops, &mut links, index, iface)?;
    }
    let index_of = |name: &str| {
        plan.interfaces
            .iter()
            .zip(&indexes)
            .find(|(iface, _)| iface.name == name)
            .map(|(_, &index)| index)
    };
    for route in &plan.routes {
        // The plan names only its own interfaces.
        let Some(index) = index_of(&route.interface) else {
            continue;
        };
        match ops.add_route(index, route) {
            Ok(()) => {}
            // Such as the prefix route an address made.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                log::debug!("route {route} exists already")
            }
            Err(source) => {
                return Err(NetworkError::AddRoute {
                    route: route.clone(),
                    source,
                })
            }
        }
    }
    for neighbour in &plan.neighbours {
        let Some(index) = index_of(&neighbour.interface) else {
            continue;
        };
        ops.add_neighbour(index, neighbour)
            .map_err(|source| NetworkError::AddNeighbour {
                address: neighbour.address,
                mac: neighbour.mac,
                link: neighbour.interface.clone(),
                source,
            })?;
    }
    log::info!(
        "network configured: {}; {} routes, {} neighbours",
        plan.interfaces
            .iter()
            .map(|i| format!(
                "{} {} mtu {} [{}]",
                i.name,
                i.mac,
                i.mtu,
                i.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
            .collect::<Vec<_>>()
            .join(", "),
        plan.routes.len(),
        plan.neighbours.len()
    );
    Ok(())
}

/// Down (only to rename it), renamed, MTU, addresses, up. `links` follows the renames.
fn configure_link(
    ops: &mut impl NetOps,
    links: &mut [Link],
    index: u32,
    iface: &Interface,
) -> Result<(), NetworkError> {
    let Some(at) = links.iter().position(|link| link.index == index) else {
        return Ok(());
    };
    let link = links[at].clone();
    let mut name = link.name.clone();
    if link.name != iface.name {
        if let Some(other) = links
            .iter()
            .find(|l| l.name == iface.name && l.index != index)
        {
            return Err(NetworkError::NameTaken {
                link: link.name,
                mac: iface.mac,
                name: iface.name.clone(),
                other: other.index,
            });
        }
        // The kernel renames only links that are down.
        if link.up {
            ops.set_link(index, &LinkChange::Down)
                .map_err(|source| NetworkError::SetDown {
                    link: name.clone(),
                    source,
                })?;
        }
        ops.set_link(index, &LinkChange::Rename(iface.name.clone()))
            .map_err(|source| NetworkError::Rename {
                link: name.clone(),
                name: iface.name.clone(),
                source,
            })?;
        name = iface.name.clone();
        links[at].name = name.clone();
    }
    if link.mtu != iface.mtu {
        ops.set_link(index, &LinkChange::Mtu(iface.mtu))
            .map_err(|source| NetworkError::SetMtu {
                link: name.clone(),
                mtu: iface.mtu,
                source,
            })?;
    }
    for address in &iface.addresses {
        ops.add_address(index, address)
            .map_err(|source| NetworkError::AddAddress {
                addr: *address,
                link: name.clone(),
                source,
            })?;
    }
    ops.set_link(index, &LinkChange::Up)
        .map_err(|source| NetworkError::SetUp { link: name, source })
}
