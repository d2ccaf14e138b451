//! A small synchronous rtnetlink client: one [`Handle`] is one `NETLINK_ROUTE` socket, bound to
//! the network namespace of the thread that opened it (a socket keeps its namespace for life).
//! Messages are the typed ones of `netlink-packet-route`; this crate only sends them, collects
//! the replies and turns a kernel error code into an [`io::Error`].
//!
//! The agent uses it to configure the guest's interface, the sandbox to read the pod's network
//! namespace and to join its interface to the VM's tap with tc redirects.

mod handle;
mod read;
mod tc;

pub use handle::{Handle, NetlinkError};
pub use read::{is_ipv6_link_local, Address, Link, Neighbour, Route};
pub use tc::{Filter, Qdisc};

pub use netlink_packet_route as route;
