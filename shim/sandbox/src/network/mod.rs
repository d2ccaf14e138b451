//! The pod's network: the VM joins the pod's network namespace through a tap.
//!
//! A CNI plugin (or podman) made a network namespace with an interface in it (`eth0`, one end
//! of a veth) that carries the pod's addresses and routes. [`PodNetwork::connect`] creates a tap
//! in that namespace with the interface's MTU, and tc redirects both ways between the two
//! (every frame arriving on one leaves through the other: Kata's "tcfilter" model), so the
//! guest's NIC, which gets the interface's MAC, stands where the interface stood. The addresses,
//! routes and static neighbours are read from the namespace for the agent to set in the guest.
//! The VMM runs in that namespace and gets the tap as a descriptor; it opens nothing itself.
//!
//! Undo: [`PodNetwork::disconnect`] (and drop) deletes the interface's ingress qdisc and closes
//! the tap. The tap is not persistent, so the kernel removes it, with its own qdisc and filter,
//! when the last descriptor closes: a VMM and a sandbox both killed leave no tap behind.

pub mod forward;
mod tap;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use rust_vm_netlink::{is_ipv6_link_local, Handle, Link, NetlinkError};
use rust_vm_protocol::{InterfaceConfig, IpCidr, NeighbourConfig, NetworkConfig, RouteConfig};
use vmm_config::MacAddr;

/// The tap's name in the pod's namespace.
pub const TAP_NAME: &str = "rvm-tap0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network namespace {}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("entering network namespace {}", path.display())]
    Enter { path: PathBuf, source: io::Error },
    #[error("network namespace {} has no Ethernet interface to give the VM (links: {links}): has the CNI plugin set up the pod's network?", path.display())]
    NoInterface { path: PathBuf, links: String },
    #[error("network namespace {}: interface {name} has no Ethernet address", path.display())]
    NoMac { path: PathBuf, name: String },
    #[error("network namespace {}: creating tap {TAP_NAME}", path.display())]
    Tap { path: PathBuf, source: io::Error },
    #[error("network namespace {}", path.display())]
    Netlink { path: PathBuf, source: NetlinkError },
}

/// The network namespace a container's spec names by path: the pod's network. A `network`
/// entry without a path asks for a new, empty namespace, and no entry at all for the runtime's
/// own (host networking): neither names a pod network.
pub fn namespace_path(spec: &Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == LinuxNamespaceType::Network)
        .and_then(|ns| ns.path().clone())
}

/// The spec as the agent gets it on `vm`: a network namespace named by path means "the pod's
/// network", which in the guest is the VM's own namespace, so the entry is dropped and the
/// container stays in it. Other entries are kept (one without a path still gets a new namespace).
pub fn spec_for_guest(spec: &Spec) -> Spec {
    let mut spec = spec.clone();
    if let Some(linux) = spec.linux_mut() {
        if let Some(namespaces) = linux.namespaces_mut() {
            namespaces
                .retain(|ns| !(ns.typ() == LinuxNamespaceType::Network && ns.path().is_some()));
        }
    }
    spec
}

/// The pod's interface joined to the VM's tap, and what the guest should configure.
#[derive(Debug)]
pub struct PodNetwork {
    path: PathBuf,
    namespace: File,
    tap: Option<File>,
    interface: Link,
    mac: MacAddr,
    guest: NetworkConfig,
}

impl PodNetwork {
    /// Joins the pod interface of the network namespace at `path` to a new tap. A namespace with
    /// loopback only (`podman --network none`) gives `None`: the VM has loopback only too. On
    /// error nothing is left in the namespace.
    pub fn connect(path: &Path) -> Result<Option<PodNetwork>, NetworkError> {
        let namespace = File::open(path).map_err(|source| NetworkError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let owned = path.to_path_buf();
        let Some((tap, interface, mac, guest)) =
            in_namespace(&namespace, path, move || connect_inside(&owned))??
        else {
            return Ok(None);
        };
        Ok(Some(PodNetwork {
            path: path.to_path_buf(),
            namespace,
            tap: Some(tap),
            interface,
            mac,
            guest,
        }))
    }

    /// The namespace, for the VMM to run in.
    pub fn namespace(&self) -> &File {
        &self.namespace
    }

    pub fn namespace_path(&self) -> &Path {
        &self.path
    }

    /// The tap, for the VMM (open with `IFF_VNET_HDR`).
    pub fn tap(&self) -> Option<&File> {
        self.tap.as_ref()
    }

    /// The pod interface's MAC: the guest NIC's.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    pub fn mtu(&self) -> u32 {
        self.interface.mtu
    }

    /// What the agent sets up in the guest.
    pub fn guest_config(&self) -> &NetworkConfig {
        &self.guest
    }

    /// Removes the redirect from the pod interface and closes the tap (the kernel deletes it
    /// once the VMM's descriptor is closed too). A second call does nothing.
    pub fn disconnect(&mut self) -> Result<(), NetworkError> {
        let Some(tap) = self.tap.take() else {
            return Ok(());
        };
        drop(tap);
        let index = self.interface.index;
        let result = in_namespace(&self.namespace, &self.path, move || {
            let mut handle =
                Handle::new().map_err(|e| NetlinkError::new("opening a netlink socket", e))?;
            match handle.delete_ingress_qdisc(index) {
                // The interface went first (CNI's DEL deleted the veth): nothing is left.
                Err(e) if matches!(e.errno(), Some(libc::ENODEV | libc::ENOENT | libc::EINVAL)) => {
                    Ok(())
                }
                other => other,
            }
        })?;
        result.map_err(|source| NetworkError::Netlink {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.disconnect() {
            log::warn!("{}", crate::Chain(&e));
        }
    }
}

/// What a sandbox that died without [`PodNetwork::disconnect`] (its owner killed) left in the
/// network namespace at `path`: our tap, if something still holds it open, and every ingress
/// qdisc whose redirect leads to the tap or to a link that is gone. Returns what it removed.
pub fn clean_up(path: &Path) -> Result<Vec<String>, NetworkError> {
    let namespace = File::open(path).map_err(|source| NetworkError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let result = in_namespace(&namespace, path, || -> Result<Vec<String>, NetlinkError> {
        let mut handle =
            Handle::new().map_err(|e| NetlinkError::new("opening a netlink socket", e))?;
        let links = handle.links()?;
        let tap = links.iter().find(|l| l.name == TAP_NAME).map(|l| l.index);
        let mut removed = Vec::new();
        let with_ingress: Vec<u32> = handle
            .qdiscs()?
            .into_iter()
            .filter(|q| q.kind == "ingress")
            .map(|q| q.link)
            .collect();
        for link in links.iter().filter(|l| with_ingress.contains(&l.index)) {
            let ours = handle.ingress_filters(link.index)?.iter().any(|f| {
                f.redirect_to
                    .is_some_and(|to| Some(to) == tap || links.iter().all(|l| l.index != to))
            });
            if ours && Some(link.index) != tap {
                handle.delete_ingress_qdisc(link.index)?;
                removed.push(format!("the ingress qdisc of {}", link.name));
            }
        }
        if let Some(index) = tap {
            handle.delete_link(index)?;
            removed.push(format!("tap {TAP_NAME}"));
        }
        Ok(removed)
    })?;
    result.map_err(|source| NetworkError::Netlink {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` on a new thread that entered the network namespace `namespace`: sockets and taps it
/// creates belong to that namespace for life, and no other thread of ours leaves its own.
fn in_namespace<T: Send + 'static>(
    namespace: &File,
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetworkError> {
    let enter_error = |source| NetworkError::Enter {
        path: path.to_path_buf(),
        source,
    };
    let namespace = namespace.try_clone().map_err(enter_error)?;
    thread::Builder::new()
        .name("pod-netns".into())
        .spawn(move || -> io::Result<T> {
            nix::sched::setns(namespace.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            Ok(f())
        })
        .map_err(enter_error)?
        .join()
        .map_err(|_| enter_error(io::Error::other("the namespace thread panicked")))?
        .map_err(enter_error)
}

type Connected = (File, Link, MacAddr, NetworkConfig);

fn connect_inside(path: &Path) -> Result<Option<Connected>, NetworkError> {
    let netlink = |source| NetworkError::Netlink {
        path: path.to_path_buf(),
        source,
    };
    let mut handle =
        Handle::new().map_err(|e| netlink(NetlinkError::new("opening a netlink socket", e)))?;
    let links = handle.links().map_err(netlink)?;
    if links.iter().all(|l| l.loopback) {
        return Ok(None);
    }
    let interface = pod_interface(&links)
        .cloned()
        .ok_or_else(|| NetworkError::NoInterface {
            path: path.to_path_buf(),
            links: links
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let mac = mac_of(path, &interface)?;
    let guest = guest_config(&mut handle, &interface, mac).map_err(netlink)?;
    let tap = tap::open(TAP_NAME).map_err(|source| NetworkError::Tap {
        path: path.to_path_buf(),
        source,
    })?;
    // From here the tap exists: an error closes it (the kernel removes it) and removes what was
    // added to the interface.
    if let Err(e) = join(&mut handle, &interface) {
        if let Err(undo) = handle.delete_ingress_qdisc(interface.index) {
            if undo.errno() != Some(libc::EINVAL) && undo.errno() != Some(libc::ENOENT) {
                log::warn!(
                    "undoing the redirect on {}: {}",
                    interface.name,
                    crate::Chain(&undo)
                );
            }
        }
        return Err(netlink(e));
    }
    Ok(Some((tap, interface, mac, guest)))
}

/// The interface CNI gave the pod: the first up Ethernet link that is not our tap.
fn pod_interface(links: &[Link]) -> Option<&Link> {
    links
        .iter()
        .find(|l| l.ethernet && !l.loopback && l.name != TAP_NAME && l.mac.len() == 6)
}

/// The tap up with the interface's MTU, then a redirect each way.
fn join(handle: &mut Handle, interface: &Link) -> Result<(), NetlinkError> {
    let tap = handle
        .links()?
        .into_iter()
        .find(|l| l.name == TAP_NAME)
        .ok_or_else(|| {
            NetlinkError::new(
                format!("finding {TAP_NAME}"),
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
    handle.set_link_up(tap.index, Some(interface.mtu))?;
    handle.add_ingress_qdisc(interface.index)?;
    handle.add_ingress_qdisc(tap.index)?;
    handle.add_redirect(interface.index, tap.index)?;
    handle.add_redirect(tap.index, interface.index)
}

/// The interface's addresses (not IPv6 link-local: the guest makes the same one from the same
/// MAC), its routes (link-scope ones first, then those through a gateway; not the prefix routes
/// the kernel makes for an address, which the guest's kernel makes too) and its static
/// neighbours.
fn guest_config(
    handle: &mut Handle,
    interface: &Link,
    mac: MacAddr,
) -> Result<NetworkConfig, NetlinkError> {
    let addresses = handle
        .addresses()?
        .into_iter()
        .filter(|a| a.link == interface.index && !is_ipv6_link_local(&a.address))
        .map(|a| IpCidr {
            address: a.address,
            prefix_len: a.prefix_len,
        })
        .collect();
    let mut routes: Vec<RouteConfig> = handle
        .routes()?
        .into_iter()
        .filter(|r| {
            r.link == Some(interface.index) && !r.kernel && !is_ipv6_link_local(&r.destination)
        })
        .map(|r| RouteConfig {
            destination: IpCidr {
                address: r.destination,
                prefix_len: r.prefix_len,
            },
            gateway: r.gateway,
            interface: interface.name.clone(),
            source: r.source,
            metric: r.metric,
        })
        .collect();
    routes.sort_by_key(|r| r.gateway.is_some());
    let neighbours = handle
        .neighbours()?
        .into_iter()
        .filter(|n| n.link == interface.index && n.permanent && n.mac.len() == 6)
        .map(|n| NeighbourConfig {
            address: n.address,
            mac: MacAddr([n.mac[0], n.mac[1], n.mac[2], n.mac[3], n.mac[4], n.mac[5]]).to_string(),
            interface: interface.name.clone(),
        })
        .collect();
    Ok(NetworkConfig {
        interfaces: vec![InterfaceConfig {
            mac: mac.to_string(),
            name: interface.name.clone(),
            mtu: interface.mtu,
            addresses,
        }],
        routes,
        neighbours,
    })
}

fn mac_of(path: &Path, link: &Link) -> Result<MacAddr, NetworkError> {
    <[u8; 6]>::try_from(link.mac.as_slice())
        .map(MacAddr)
        .map_err(|_| NetworkError::NoMac {
            path: path.to_path_buf(),
            name: link.name.clone(),
        })
}

#[cfg(test)]
mod tests;
