//! Links set up and down, and the tc redirect that joins two links: an ingress qdisc on each and
//! a u32 filter matching every frame whose mirred action sends it out of the other. (u32 with an
//! all-zero key, as Kata does, rather than `matchall`: kernels built without `cls_matchall`,
//! such as this project's CI hosts, all have u32.)

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::{Handle, NetlinkError};

/// `ETH_P_ALL`: a filter for every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// The redirect filter's priority (tc's `prio`).
const REDIRECT_PRIORITY: u16 = 1;

/// A qdisc as listed, for checks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub link: u32,
    pub kind: String,
    pub parent: u32,
}

/// A filter as listed: its classifier and, for a mirred redirect, the link it sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub link: u32,
    pub kind: String,
    pub redirect_to: Option<u32>,
}

impl Handle {
    /// Sets `index`'s MTU (when given) and brings it up.
    pub fn set_link_up(&mut self, index: u32, mtu: Option<u32>) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| NetlinkError::new(format!("bringing link {index} up"), e))
    }

    /// Deletes link `index`.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.execute(RouteNetlinkMessage::DelLink(msg), 0)
            .map_err(|e| NetlinkError::new(format!("deleting link {index}"), e))
    }

    /// Adds the ingress qdisc (`ffff:`) to link `index`.
    pub fn add_ingress_qdisc(&mut self, index: u32) -> Result<(), NetlinkError> {
        let msg = ingress_qdisc(index);
        self.execute(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|e| NetlinkError::new(format!("adding an ingress qdisc to link {index}"), e))
    }

    /// Deletes link `index`'s ingress qdisc and with it every filter under it.
    pub fn delete_ingress_qdisc(&mut self, index: u32) -> Result<(), NetlinkError> {
        let msg = ingress_qdisc(index);
        self.execute(RouteNetlinkMessage::DelQueueDiscipline(msg), 0)
            .map_err(|e| {
                NetlinkError::new(format!("deleting the ingress qdisc of link {index}"), e)
            })
    }

    /// Every frame arriving on link `from` leaves through link `to` (`tc filter add dev FROM
    /// parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev TO`).
    /// `from` needs its ingress qdisc.
    pub fn add_redirect(&mut self, from: u32, to: u32) -> Result<(), NetlinkError> {
        let mut mirror = TcMirror::default();
        mirror.generic = TcActionGeneric::default();
        mirror.generic.action = TcActionType::Stolen;
        mirror.eaction = TcMirrorActionType::EgressRedir;
        mirror.ifindex = to;
        let mut action = TcAction::default();
        action.tab = 1;
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirror,
            ))]),
        ];
        let mut msg = TcMessage::with_index(link_index(from)?);
        msg.header.parent = TcHandle::INGRESS;
        msg.header.info = (u32::from(REDIRECT_PRIORITY) << 16) | u32::from(ETH_P_ALL.to_be());
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.nkeys = 1;
        selector.keys = vec![TcU32Key::default()];
        msg.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::Selector(selector)),
                TcOption::U32(TcFilterU32Option::Action(vec![action])),
            ]),
        ];
        self.execute(
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|e| NetlinkError::new(format!("redirecting link {from} to link {to}"), e))
    }

    /// The qdiscs of every link (the kernel's default ones included).
    pub fn qdiscs(&mut self) -> Result<Vec<Qdisc>, NetlinkError> {
        let replies = self
            .dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))
            .map_err(|e| NetlinkError::new("listing qdiscs", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewQueueDiscipline(msg) => Some(Qdisc {
                    link: u32::try_from(msg.header.index).unwrap_or(0),
                    kind: kind_of(&msg.attributes),
                    parent: msg.header.parent.into(),
                }),
                _ => None,
            })
            .collect())
    }

    /// The filters under link `index`'s ingress qdisc.
    pub fn ingress_filters(&mut self, index: u32) -> Result<Vec<Filter>, NetlinkError> {
        let mut request = TcMessage::with_index(link_index(index)?);
        request.header.parent = TcHandle::INGRESS;
        let replies = self
            .dump(RouteNetlinkMessage::GetTrafficFilter(request))
            .map_err(|e| NetlinkError::new(format!("listing the filters of link {index}"), e))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewTrafficFilter(msg) => Some(filter_of(index, &msg)),
                _ => None,
            })
            // The kernel lists a filter's chain head too, without options.
            .filter(|f| !f.kind.is_empty())
            .collect())
    }
}

fn ingress_qdisc(index: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(i32::try_from(index).unwrap_or(i32::MAX));
    msg.header.handle = TcHandle::from(0xffff_0000);
    msg.header.parent = TcHandle::INGRESS;
    msg.attributes = vec![TcAttribute::Kind("ingress".into())];
    msg
}

fn link_index(index: u32) -> Result<i32, NetlinkError> {
    i32::try_from(index).map_err(|_| {
        NetlinkError::new(
            format!("link {index}"),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

fn kind_of(attributes: &[TcAttribute]) -> String {
    attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(kind) => Some(kind.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn filter_of(link: u32, msg: &TcMessage) -> Filter {
    let redirect_to = msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(options) => options.iter().find_map(|o| match o {
            TcOption::U32(TcFilterU32Option::Action(actions)) => {
                actions.iter().find_map(|action| {
                    action.attributes.iter().find_map(|a| match a {
                        TcActionAttribute::Options(opts) => opts.iter().find_map(|o| match o {
                            TcActionOption::Mirror(TcActionMirrorOption::Parms(m)) => {
                                Some(m.ifindex)
                            }
                            _ => None,
                        }),
                        _ => None,
                    })
                })
            }
            _ => None,
        }),
        _ => None,
    });
    Filter {
        link,
        kind: kind_of(&msg.attributes),
        redirect_to,
    }
}
