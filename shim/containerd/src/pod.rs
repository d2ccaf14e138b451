//! Pods: which sandbox a container runs in, from the CRI annotations of its OCI spec.
//!
//! A container annotated `io.kubernetes.cri.container-type=container` joins the sandbox named by
//! `io.kubernetes.cri.sandbox-id`: it is served by that pod's shim and runs in that pod's
//! sandbox (VM). Anything else (the pod's sandbox container, or a container without CRI
//! annotations, as `ctr run` makes) gets a sandbox and a shim of its own.

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const TYPE_SANDBOX: &str = "sandbox";
const TYPE_CONTAINER: &str = "container";

#[derive(Debug, Error)]
pub enum PodError {
    #[error("cannot read {path}")]
    ReadSpec {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON")]
    ParseSpec {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "annotation {CONTAINER_TYPE} has unknown value `{0}` (expected `sandbox` or `container`)"
    )]
    UnknownType(String),
    #[error("annotation {SANDBOX_ID} is required when {CONTAINER_TYPE} is `container`")]
    MissingSandboxId,
    #[error("annotation {SANDBOX_ID} `{0}` is not a valid container id")]
    InvalidSandboxId(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// Owns a sandbox: a pod's sandbox container, or a standalone container.
    Sandbox { id: String },
    /// Runs in the sandbox of another container.
    Container { sandbox_id: String },
}

impl PodRole {
    pub fn from_annotations(
        id: &str,
        annotations: &HashMap<String, String>,
    ) -> Result<PodRole, PodError> {
        let standalone = PodRole::Sandbox { id: id.to_owned() };
        match annotations.get(CONTAINER_TYPE).map(String::as_str) {
            None | Some(TYPE_SANDBOX) => Ok(standalone),
            Some(TYPE_CONTAINER) => {
                let sandbox_id = annotations
                    .get(SANDBOX_ID)
                    .ok_or(PodError::MissingSandboxId)?;
                if !valid_id(sandbox_id) {
                    return Err(PodError::InvalidSandboxId(sandbox_id.clone()));
                }
                if sandbox_id == id {
                    return Ok(standalone);
                }
                Ok(PodRole::Container {
                    sandbox_id: sandbox_id.clone(),
                })
            }
            Some(other) => Err(PodError::UnknownType(other.to_owned())),
        }
    }

    /// Reads the annotations of `bundle/config.json`.
    pub fn from_bundle(bundle: &Path, id: &str) -> Result<PodRole, PodError> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|source| PodError::ReadSpec {
            path: path.display().to_string(),
            source,
        })?;
        // Only the annotations matter here; the full spec is checked when the task is created.
        #[derive(serde::Deserialize)]
        struct Annotations {
            #[serde(default)]
            annotations: Option<HashMap<String, String>>,
        }
        let spec: Annotations =
            serde_json::from_slice(&text).map_err(|source| PodError::ParseSpec {
                path: path.display().to_string(),
                source,
            })?;
        PodRole::from_annotations(id, &spec.annotations.unwrap_or_default())
    }

    /// Whether the annotations make this container a pod's sandbox (CRI's `sandbox` type):
    /// more containers will join it, so its VM is sized for the pod (and gets pod disk slots).
    pub fn starts_a_pod(annotations: &HashMap<String, String>) -> bool {
        annotations.get(CONTAINER_TYPE).map(String::as_str) == Some(TYPE_SANDBOX)
    }

    /// The id of the sandbox this container runs in: the one its shim is grouped by.
    pub fn sandbox_id(&self) -> &str {
        match self {
            PodRole::Sandbox { id } => id,
            PodRole::Container { sandbox_id } => sandbox_id,
        }
    }
}

/// containerd's own rule for ids, which also keeps them safe as path components.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 76
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !id.starts_with(['.', '-', '_'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn plain_container_owns_its_sandbox() {
        let role = PodRole::from_annotations("c1", &HashMap::new()).unwrap();
        assert_eq!(role, PodRole::Sandbox { id: "c1".into() });
        assert_eq!(role.sandbox_id(), "c1");
    }

    #[test]
    fn cri_sandbox_owns_its_sandbox() {
        let a = annotations(&[(CONTAINER_TYPE, "sandbox"), (SANDBOX_ID, "pod1")]);
        assert!(PodRole::starts_a_pod(&a));
        assert!(!PodRole::starts_a_pod(&HashMap::new()));
        assert_eq!(
            PodRole::from_annotations("pod1", &a).unwrap(),
            PodRole::Sandbox { id: "pod1".into() }
        );
    }

    #[test]
    fn cri_container_joins_its_pod() {
        let a = annotations(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "pod1")]);
        let role = PodRole::from_annotations("app", &a).unwrap();
        assert_eq!(
            role,
            PodRole::Container {
                sandbox_id: "pod1".into()
            }
        );
        assert_eq!(role.sandbox_id(), "pod1");
    }

    #[test]
    fn bad_annotations_are_named() {
        let a = annotations(&[(CONTAINER_TYPE, "container")]);
        let err = PodRole::from_annotations("app", &a).unwrap_err();
        assert!(err.to_string().contains(SANDBOX_ID), "{err}");

        let a = annotations(&[(CONTAINER_TYPE, "vm")]);
        let err = PodRole::from_annotations("app", &a).unwrap_err();
        assert!(err.to_string().contains(CONTAINER_TYPE), "{err}");

        let a = annotations(&[(CONTAINER_TYPE, "container"), (SANDBOX_ID, "../etc")]);
        let err = PodRole::from_annotations("app", &a).unwrap_err();
        assert!(err.to_string().contains("../etc"), "{err}");
    }

    #[test]
    fn ids() {
        assert!(valid_id("abc-1.2_3"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(".hidden"));
    }
}
