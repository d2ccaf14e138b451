//! Which rust-vm configuration file the shim uses.
//!
//! In order: the runtime options containerd passes (`ConfigPath` of
//! `runtimeoptions.v1.Options`, set by CRI's `[...runtimes.rust-vm.options] ConfigPath` or by
//! `ctr run --runtime-config-path`), then `$RUST_VM_CONFIG`, then `/etc/rust-vm/config.toml`.

use std::path::PathBuf;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::empty::Empty;
use containerd_shim::protos::protobuf::{Message, UnknownValueRef};
use thiserror::Error;

/// Environment variable naming the rust-vm configuration file.
pub const CONFIG_ENV: &str = "RUST_VM_CONFIG";
/// The rust-vm configuration file when nothing else names one (the CLI's default too).
pub use rust_vm_sandbox::config::DEFAULT_CONFIG_PATH;

/// Protobuf message name of containerd's generic runtime options.
const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";
/// Field number of `ConfigPath` in `runtimeoptions.v1.Options`.
const CONFIG_PATH_FIELD: u32 = 2;

#[derive(Debug, Error)]
pub enum OptionsError {
    #[error("runtime options ({type_url}) are not a valid protobuf message")]
    Decode {
        type_url: String,
        #[source]
        source: containerd_shim::protos::protobuf::Error,
    },
    #[error("runtime options field ConfigPath is not valid UTF-8")]
    ConfigPathNotUtf8,
    #[error("runtime options field ConfigPath `{0}` is not an absolute path")]
    ConfigPathRelative(String),
}

/// The configuration file to use, given the runtime options containerd passed (if any).
pub fn config_path(options: Option<&Any>) -> Result<PathBuf, OptionsError> {
    if let Some(path) = options.map(config_path_option).transpose()?.flatten() {
        return Ok(path);
    }
    Ok(std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH)))
}

/// `ConfigPath` from `runtimeoptions.v1.Options`; `None` for other option types (for example
/// runc's options, which carry nothing for rust-vm) or an empty path.
fn config_path_option(any: &Any) -> Result<Option<PathBuf>, OptionsError> {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != RUNTIME_OPTIONS_TYPE {
        return Ok(None);
    }
    // The message is three strings; decoding it as `Empty` keeps every field as an unknown
    // field, which spares generating code for containerd's runtimeoptions proto.
    let message = Empty::parse_from_bytes(&any.value).map_err(|source| OptionsError::Decode {
        type_url: any.type_url.clone(),
        source,
    })?;
    let Some(UnknownValueRef::LengthDelimited(bytes)) = message
        .special_fields
        .unknown_fields()
        .get(CONFIG_PATH_FIELD)
    else {
        return Ok(None);
    };
    let path = std::str::from_utf8(bytes).map_err(|_| OptionsError::ConfigPathNotUtf8)?;
    if path.is_empty() {
        return Ok(None);
    }
    if !path.starts_with('/') {
        return Err(OptionsError::ConfigPathRelative(path.to_owned()));
    }
    Ok(Some(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::CodedOutputStream;

    fn runtime_options(config_path: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut value);
            out.write_string(1, "io.containerd.rust-vm.v2").unwrap();
            out.write_string(CONFIG_PATH_FIELD, config_path).unwrap();
            out.flush().unwrap();
        }
        Any {
            type_url: format!("type.googleapis.com/{RUNTIME_OPTIONS_TYPE}"),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn config_path_comes_from_runtime_options() {
        let any = runtime_options("/opt/rust-vm/test.toml");
        assert_eq!(
            config_path(Some(&any)).unwrap(),
            PathBuf::from("/opt/rust-vm/test.toml")
        );
    }

    #[test]
    fn relative_config_path_is_refused_by_name() {
        let any = runtime_options("etc/config.toml");
        let err = config_path(Some(&any)).unwrap_err();
        assert!(err.to_string().contains("ConfigPath"), "{err}");
    }

    #[test]
    fn other_option_types_are_ignored() {
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x0a, 0x01, b'x'],
            ..Default::default()
        };
        assert_eq!(config_path_option(&any).unwrap(), None);
    }

    #[test]
    fn garbage_options_are_an_error() {
        let any = Any {
            type_url: RUNTIME_OPTIONS_TYPE.into(),
            value: vec![0x12, 0x7f],
            ..Default::default()
        };
        assert!(config_path(Some(&any)).is_err());
    }
}
