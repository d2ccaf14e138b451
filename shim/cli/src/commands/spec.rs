//! `spec`: a default config.json (busybox-friendly: `sh`, no terminal, the usual namespaces and
//! mounts), refusing to overwrite an existing one.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::Spec;

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Where to write config.json.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
}

pub fn default_spec() -> Spec {
    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_string());
    spec.set_hostname(Some("rust-vm".to_string()));
    spec
}

pub fn spec(args: SpecArgs) -> Result<()> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists; remove it first", path.display());
    }
    if !args.bundle.is_dir() {
        bail!("bundle directory {} does not exist", args.bundle.display());
    }
    let text = serde_json::to_string_pretty(&default_spec())?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
