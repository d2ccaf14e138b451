//! Why configuring the network failed: the step, with the system's error as its source (never
//! repeated in the message; `rust_vm_protocol::error_chain` prints the whole chain).

use std::io;
use std::net::IpAddr;

use rust_vm_protocol::{ErrorCode, IpCidr};
use thiserror::Error;

use super::plan::{Mac, Route};

#[derive(Debug, Error)]
pub enum NetworkError {
    /// A field of the request; `value` is quoted when it is text.
    #[error("{field} {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    #[error("interfaces[{index}].mac {mac}: no link has it (links: {seen})")]
    NoLinkWithMac {
        index: usize,
        mac: Mac,
        seen: String,
    },
    #[error("renaming {link} ({mac}) to {name}: another link (index {other}) has that name")]
    NameTaken {
        link: String,
        mac: Mac,
        name: String,
        other: u32,
    },
    #[error("opening a netlink socket")]
    Socket(#[source] io::Error),
    #[error("listing links")]
    ListLinks(#[source] io::Error),
    #[error("setting {link} down")]
    SetDown {
        link: String,
        #[source]
        source: io::Error,
    },
    #[error("renaming {link} to {name}")]
    Rename {
        link: String,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("setting the MTU of {link} to {mtu}")]
    SetMtu {
        link: String,
        mtu: u32,
        #[source]
        source: io::Error,
    },
    #[error("adding address {addr} to {link}")]
    AddAddress {
        addr: IpCidr,
        link: String,
        #[source]
        source: io::Error,
    },
    #[error("setting {link} up")]
    SetUp {
        link: String,
        #[source]
        source: io::Error,
    },
    #[error("adding route {route}")]
    AddRoute {
        route: Route,
        #[source]
        source: io::Error,
    },
    #[error("adding neighbour {address} lladdr {mac} dev {link}")]
    AddNeighbour {
        address: IpAddr,
        mac: Mac,
        link: String,
        #[source]
        source: io::Error,
    },
}

impl NetworkError {
    /// The protocol's code: the request's fault, or the system's.
    pub fn code(&self) -> ErrorCode {
        match self {
            NetworkError::Invalid { .. } => ErrorCode::InvalidArgument,
            NetworkError::NoLinkWithMac { .. } => ErrorCode::NotFound,
            NetworkError::NameTaken { .. } => ErrorCode::AlreadyExists,
            _ => ErrorCode::ContainerFailed,
        }
    }
}
