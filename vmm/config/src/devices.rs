//! Device settings.

use std::convert::Infallible;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Where the guest's serial console goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SerialOutput {
    #[default]
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

impl FromStr for SerialOutput {
    type Err = Infallible;

    /// `stdout`, or any other string as a file path (`./stdout` names a file called stdout).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "stdout" => SerialOutput::Stdout,
            path => SerialOutput::File(PathBuf::from(path)),
        })
    }
}

impl Serialize for SerialOutput {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            SerialOutput::Stdout => ser.serialize_str("stdout"),
            SerialOutput::File(path) => path.serialize(ser),
        }
    }
}

impl<'de> Deserialize<'de> for SerialOutput {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        let Ok(output) = s.parse();
        Ok(output)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDeviceConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// The serial the guest reads with VIRTIO_BLK_T_GET_ID (at most
    /// [`crate::MAX_BLOCK_ID_LEN`] bytes); defaults to one derived from the image file's device
    /// and inode numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl FromStr for BlockDeviceConfig {
    type Err = ConfigError;

    /// `PATH[,ro][,id=ID]`, as given to `--block`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let path = parts.next().filter(|p| !p.is_empty());
        let invalid = |reason: &str| ConfigError::InvalidValue {
            field: "--block",
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let mut block = BlockDeviceConfig {
            path: PathBuf::from(path.ok_or_else(|| invalid("expected PATH[,ro][,id=ID]"))?),
            read_only: false,
            id: None,
        };
        for option in parts {
            match option.split_once('=') {
                None if option == "ro" => block.read_only = true,
                Some(("id", id)) if !id.is_empty() => block.id = Some(id.to_string()),
                _ => {
                    return Err(invalid(&format!(
                        "unknown option {option:?} (expected ro or id=ID)"
                    )))
                }
            }
        }
        Ok(block)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockDeviceConfig {
    pub guest_cid: u32,
    /// Host side: clients connect here; guest-initiated connections go to `<uds_path>_<port>`.
    pub uds_path: PathBuf,
}

/// A virtio-fs device whose file server is a vhost-user back-end (virtiofsd) listening on
/// `socket`; the guest mounts it by `tag` (`mount -t virtiofs TAG DIR`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsDeviceConfig {
    /// The back-end's vhost-user socket (it listens; the VMM connects at start).
    pub socket: PathBuf,
    /// At most [`crate::MAX_FS_TAG_LEN`] bytes, unique among the VM's file systems.
    pub tag: String,
    /// Request queues besides the high-priority one [default: 1].
    #[serde(default = "default_fs_request_queues")]
    pub request_queues: u16,
    /// Entries per queue, a power of two [default: 1024].
    #[serde(default = "default_fs_queue_size")]
    pub queue_size: u16,
}

pub const DEFAULT_FS_REQUEST_QUEUES: u16 = 1;
pub const DEFAULT_FS_QUEUE_SIZE: u16 = 1024;

fn default_fs_request_queues() -> u16 {
    DEFAULT_FS_REQUEST_QUEUES
}

fn default_fs_queue_size() -> u16 {
    DEFAULT_FS_QUEUE_SIZE
}

impl FromStr for FsDeviceConfig {
    type Err = ConfigError;

    /// `SOCKET,tag=TAG[,queues=N][,queue_size=N]`, as given to `--fs`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| ConfigError::InvalidValue {
            field: "--fs",
            value: s.to_string(),
            reason,
        };
        let mut parts = s.split(',');
        let socket = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid("expected SOCKET,tag=TAG".into()))?;
        let mut fs = FsDeviceConfig {
            socket: PathBuf::from(socket),
            tag: String::new(),
            request_queues: DEFAULT_FS_REQUEST_QUEUES,
            queue_size: DEFAULT_FS_QUEUE_SIZE,
        };
        for option in parts {
            let number = |v: &str| {
                v.parse::<u16>()
                    .map_err(|e| invalid(format!("{option:?}: {e}")))
            };
            match option.split_once('=') {
                Some(("tag", tag)) => fs.tag = tag.to_string(),
                Some(("queues", n)) => fs.request_queues = number(n)?,
                Some(("queue_size", n)) => fs.queue_size = number(n)?,
                _ => {
                    return Err(invalid(format!(
                        "unknown option {option:?} (expected tag=TAG, queues=N or queue_size=N)"
                    )))
                }
            }
        }
        if fs.tag.is_empty() {
            return Err(invalid("no tag=TAG".into()));
        }
        Ok(fs)
    }
}

/// A MAC address; on the wire and in flags `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Multicast addresses (the group bit of the first octet) cannot name one NIC.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts
                .next()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| format!("{s:?} is not six two-digit hex octets"))?;
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{s:?} is not six two-digit hex octets"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not six two-digit hex octets"));
        }
        Ok(MacAddr(bytes))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        String::deserialize(de)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A virtio-net device over a tap the VMM inherits as an open file descriptor: the VMM opens no
/// tap and needs no network privilege (the sandbox creates the tap in the pod's network
/// namespace and passes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetDeviceConfig {
    /// The tap's descriptor number in the VMM process, opened with `IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR`; the VMM sets its header size and offloads.
    pub tap_fd: i32,
    /// The guest NIC's address (config space, VIRTIO_NET_F_MAC); unicast.
    pub mac: MacAddr,
    /// The MTU the guest is told (config space, VIRTIO_NET_F_MTU) [default: 1500].
    #[serde(default = "default_net_mtu")]
    pub mtu: u16,
}

pub const DEFAULT_NET_MTU: u16 = 1500;
/// IPv4's minimum MTU (RFC 791); Linux refuses less.
pub const MIN_NET_MTU: u16 = 68;

fn default_net_mtu() -> u16 {
    DEFAULT_NET_MTU
}

impl FromStr for NetDeviceConfig {
    type Err = ConfigError;

    /// `fd=N,mac=MAC[,mtu=N]`, as given to `--net`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| ConfigError::InvalidValue {
            field: "--net",
            value: s.to_string(),
            reason,
        };
        let (mut fd, mut mac, mut mtu) = (None, None, DEFAULT_NET_MTU);
        for option in s.split(',') {
            match option.split_once('=') {
                Some(("fd", n)) => {
                    fd = Some(n.parse().map_err(|e| invalid(format!("{option:?}: {e}")))?)
                }
                Some(("mac", m)) => mac = Some(m.parse().map_err(invalid)?),
                Some(("mtu", n)) => {
                    mtu = n.parse().map_err(|e| invalid(format!("{option:?}: {e}")))?
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown option {option:?} (expected fd=N, mac=MAC or mtu=N)"
                    )))
                }
            }
        }
        Ok(NetDeviceConfig {
            tap_fd: fd.ok_or_else(|| invalid("no fd=N".into()))?,
            mac: mac.ok_or_else(|| invalid("no mac=MAC".into()))?,
            mtu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_flag_syntax() {
        let block: BlockDeviceConfig = "/img,ro,id=root".parse().unwrap();
        assert_eq!(block.path, PathBuf::from("/img"));
        assert!(block.read_only);
        assert_eq!(block.id.as_deref(), Some("root"));
        assert!(!"/img".parse::<BlockDeviceConfig>().unwrap().read_only);
        assert!("/img,rw".parse::<BlockDeviceConfig>().is_err());
        assert!("".parse::<BlockDeviceConfig>().is_err());
    }

    #[test]
    fn fs_flag_syntax() {
        let fs: FsDeviceConfig = "/s.sock,tag=share,queues=2".parse().unwrap();
        assert_eq!(fs.socket, PathBuf::from("/s.sock"));
        assert_eq!(fs.tag, "share");
        assert_eq!(
            (fs.request_queues, fs.queue_size),
            (2, DEFAULT_FS_QUEUE_SIZE)
        );
        assert!("/s.sock".parse::<FsDeviceConfig>().is_err());
        assert!("/s.sock,tag=a,cache=always"
            .parse::<FsDeviceConfig>()
            .is_err());
        assert!("/s.sock,tag=a,queues=x".parse::<FsDeviceConfig>().is_err());
        let json: FsDeviceConfig = serde_json::from_str(r#"{"socket":"/s","tag":"t"}"#).unwrap();
        assert_eq!(json.request_queues, DEFAULT_FS_REQUEST_QUEUES);
    }

    #[test]
    fn serial_output_parsing_and_round_trip() {
        assert_eq!("stdout".parse::<SerialOutput>(), Ok(SerialOutput::Stdout));
        assert_eq!(
            "./stdout".parse::<SerialOutput>(),
            Ok(SerialOutput::File("./stdout".into()))
        );
        for output in [SerialOutput::Stdout, SerialOutput::File("/x/c.log".into())] {
            let json = serde_json::to_string(&output).unwrap();
            assert_eq!(serde_json::from_str::<SerialOutput>(&json).unwrap(), output);
        }
    }

    #[test]
    fn net_flag_syntax_and_mac_form() {
        let net: NetDeviceConfig = "fd=5,mac=02:00:0A:58:00:05,mtu=1450".parse().unwrap();
        assert_eq!(net.tap_fd, 5);
        assert_eq!(net.mac.to_string(), "02:00:0a:58:00:05");
        assert_eq!(net.mtu, 1450);
        let net: NetDeviceConfig = "fd=3,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(net.mtu, DEFAULT_NET_MTU);
        for bad in [
            "mac=02:00:00:00:00:01",
            "fd=3",
            "fd=3,mac=02:00:00:00:01",
            "fd=x,mac=02:00:00:00:00:01",
            "fd=3,mac=02:00:00:00:00:01,up",
        ] {
            assert!(bad.parse::<NetDeviceConfig>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(json, r#"{"tap_fd":3,"mac":"02:00:00:00:00:01","mtu":1500}"#);
        assert!(!"01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_unicast());
        assert!("02:00:00:00:00:01".parse::<MacAddr>().unwrap().is_unicast());
    }
}
