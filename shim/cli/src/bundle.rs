//! An OCI bundle: a directory with `config.json` and the root filesystem it names.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;

#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute, canonical bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
    /// Absolute rootfs directory (`root.path` resolved against the bundle).
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Loads and checks a bundle. Errors name the directory, file or spec field at fault.
    pub fn load(dir: &Path) -> Result<Bundle> {
        if !dir.exists() {
            bail!("bundle directory {} does not exist", dir.display());
        }
        if !dir.is_dir() {
            bail!("bundle {} is not a directory", dir.display());
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving bundle directory {}", dir.display()))?;
        let config = dir.join("config.json");
        if !config.is_file() {
            bail!(
                "bundle {} has no config.json (create one with `rust-vm spec --bundle {}`)",
                dir.display(),
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&config)
            .with_context(|| format!("reading {}", config.display()))?;
        let spec: Spec = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid OCI runtime spec", config.display()))?;
        let rootfs = check_spec(&spec, &dir, &config)?;
        Ok(Bundle { dir, spec, rootfs })
    }
}

/// The checks the runtime needs before anything starts; the agent validates the rest (and
/// names the field it refuses).
fn check_spec(spec: &Spec, dir: &Path, config: &Path) -> Result<PathBuf> {
    let field = |name: &str, why: &str| anyhow::anyhow!("{}: {name}: {why}", config.display());
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(field(
            "ociVersion",
            &format!("{version:?} is not supported (this runtime implements 1.x)"),
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| field("process", "missing (nothing to run)"))?;
    match process.args() {
        Some(args) if !args.is_empty() => {}
        _ => return Err(field("process.args", "missing or empty")),
    }
    if !process.cwd().is_absolute() {
        return Err(field(
            "process.cwd",
            &format!("{:?} must be an absolute path", process.cwd()),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| field("root", "missing (no root filesystem)"))?;
    let path = root.path();
    if path.as_os_str().is_empty() {
        return Err(field("root.path", "empty"));
    }
    let rootfs = if path.is_absolute() {
        path.clone()
    } else {
        dir.join(path)
    };
    if !rootfs.is_dir() {
        return Err(field(
            "root.path",
            &format!("{} is not a directory", rootfs.display()),
        ));
    }
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn bundle_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("rootfs")).expect("mkdir");
        fs::write(dir.path().join("config.json"), config).expect("write");
        dir
    }

    fn spec_json(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(Spec::default()).expect("json");
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn default_spec_loads() {
        let dir = bundle_with(&spec_json(|_| {}));
        let b = Bundle::load(dir.path()).expect("load");
        assert!(b.rootfs.ends_with("rootfs"));
        assert!(b.dir.is_absolute());
    }

    #[test]
    fn errors_name_the_problem() {
        let err = Bundle::load(Path::new("/nonexistent/bundle")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/bundle"), "{err:#}");

        let dir = tempfile::tempdir().expect("tempdir");
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err:#}");

        let dir = bundle_with("{ not json");
        let err = format!("{:#}", Bundle::load(dir.path()).unwrap_err());
        assert!(err.contains("not a valid OCI runtime spec"), "{err}");

        let dir = bundle_with(&spec_json(|v| v["process"]["args"] = serde_json::json!([])));
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("process.args"), "{err}");

        let dir = bundle_with(&spec_json(|v| v["root"]["path"] = "missing".into()));
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("root.path"), "{err}");

        let dir = bundle_with(&spec_json(|v| v["process"]["cwd"] = "relative".into()));
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("process.cwd"), "{err}");

        let dir = bundle_with(&spec_json(|v| v["ociVersion"] = "2.0.0".into()));
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ociVersion"), "{err}");
    }
}
