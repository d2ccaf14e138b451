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
}
