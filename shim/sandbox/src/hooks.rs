//! OCI hooks, and the one rule for where each kind runs.
//!
//! * `prestart`, `createRuntime` (after the container is created), `poststart` (after it
//!   started) and `poststop` (at delete) run in the runtime's namespaces: on the host, here,
//!   with the container's state JSON on stdin. The pod lifecycle runs the first two; the front-end
//!   runs the others when it starts and deletes the container.
//! * `createContainer` and `startContainer` would run inside the container's namespaces, which
//!   live in the guest, where the hook's host binary does not exist: a spec that has them is
//!   refused before anything is created, naming the field.
//!
//! The spec the agent gets has no hooks at all ([`for_agent`]).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};
use serde::Serialize;

/// The OCI runtime-spec version our state JSON follows.
pub const OCI_VERSION: &str = "1.0.2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    Poststart,
    Poststop,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }
}

/// The container's state as a hook reads it on stdin (OCI runtime spec, "State").
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub status: String,
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl OciState {
    /// The state of container `id` of `bundle`, with `spec`'s annotations.
    pub fn new(id: &str, status: &str, pid: i32, bundle: &Path, spec: &Spec) -> OciState {
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: id.to_string(),
            status: status.to_string(),
            pid,
            bundle: bundle.to_path_buf(),
            annotations: annotations(spec),
        }
    }
}

/// A spec's annotations, sorted.
pub fn annotations(spec: &Spec) -> BTreeMap<String, String> {
    spec.annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hooks.{stage}: hooks that run inside the container are not supported (its namespaces are in the VM, where {} does not exist)", path.display())]
    InContainer { stage: &'static str, path: PathBuf },
    #[error("{stage} hook #{index} ({})", path.display())]
    Failed {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        source: HookFailure,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    #[error("cannot execute it")]
    Spawn(#[source] io::Error),
    #[error("waiting for it")]
    Wait(#[source] io::Error),
    #[error("failed ({status}): {stderr}")]
    Status { status: ExitStatus, stderr: String },
    #[error("timed out after {0} s")]
    Timeout(i64),
}

#[allow(deprecated)] // prestart is deprecated in the spec but still honoured, as runc does.
fn hooks_for(spec: &Spec, stage: Stage) -> Vec<Hook> {
    let Some(hooks) = spec.hooks() else {
        return Vec::new();
    };
    let list = match stage {
        Stage::Prestart => hooks.prestart(),
        Stage::CreateRuntime => hooks.create_runtime(),
        Stage::Poststart => hooks.poststart(),
        Stage::Poststop => hooks.poststop(),
    };
    list.clone().unwrap_or_default()
}

/// The spec the agent gets: every hook removed (the host-side ones run here), after refusing the
/// in-container ones.
pub fn for_agent(spec: &Spec) -> Result<Spec, HookError> {
    if let Some(hooks) = spec.hooks() {
        for (stage, list) in [
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
        ] {
            if let Some(hook) = list.as_ref().and_then(|l| l.first()) {
                return Err(HookError::InContainer {
                    stage,
                    path: hook.path().clone(),
                });
            }
        }
    }
    let mut spec = spec.clone();
    spec.set_hooks(None);
    Ok(spec)
}

/// Runs the stage's hooks in order; the first failure stops the stage and is returned.
pub fn run(spec: &Spec, stage: Stage, state: &OciState) -> Result<(), HookError> {
    let hooks = hooks_for(spec, stage);
    if hooks.is_empty() {
        return Ok(());
    }
    // Serialising a struct of strings and numbers cannot fail.
    let input = serde_json::to_vec(state).unwrap_or_default();
    for (index, hook) in hooks.iter().enumerate() {
        run_one(hook, &input).map_err(|source| HookError::Failed {
            stage: stage.name(),
            index,
            path: hook.path().clone(),
            source,
        })?;
    }
    Ok(())
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<(), HookFailure> {
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
    }
    cmd.env_clear();
    for pair in hook.env().iter().flatten() {
        if let Some((k, v)) = pair.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(HookFailure::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may not read its stdin; that is not an error.
        let _ = stdin.write_all(input);
    }
    let timeout = hook.timeout().filter(|t| *t > 0);
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs(t.unsigned_abs()));
    loop {
        if let Some(status) = child.try_wait().map_err(HookFailure::Wait)? {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            return Err(HookFailure::Status {
                status,
                stderr: stderr.trim().to_string(),
            });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookFailure::Timeout(timeout.unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{HookBuilder, HooksBuilder, SpecBuilder};

    use super::*;
    use crate::error_chain;

    fn hook(path: &str, args: &[&str]) -> Hook {
        HookBuilder::default()
            .path(path)
            .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .build()
            .expect("hook")
    }

    fn state() -> OciState {
        OciState {
            oci_version: OCI_VERSION.into(),
            id: "c1".into(),
            status: "created".into(),
            pid: 42,
            bundle: "/b".into(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn the_agent_gets_no_hooks_and_in_container_hooks_are_refused() {
        let hooks = HooksBuilder::default()
            .create_runtime(vec![hook("/bin/true", &["true"])])
            .poststop(vec![hook("/bin/true", &["true"])])
            .build()
            .expect("hooks");
        let spec = SpecBuilder::default().hooks(hooks).build().expect("spec");
        assert!(for_agent(&spec).expect("host hooks only").hooks().is_none());

        let hooks = HooksBuilder::default()
            .start_container(vec![hook("/usr/bin/inside", &["inside"])])
            .build()
            .expect("hooks");
        let spec = SpecBuilder::default().hooks(hooks).build().expect("spec");
        let err = for_agent(&spec).expect_err("startContainer");
        let text = err.to_string();
        assert!(
            text.starts_with("hooks.startContainer") && text.contains("/usr/bin/inside"),
            "{text}"
        );
    }

    #[test]
    fn a_stage_runs_in_order_with_the_state_and_stops_at_a_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("state.json");
        let save = format!("cat > {}", out.display());
        let hooks = HooksBuilder::default()
            .create_runtime(vec![
                hook("/bin/sh", &["sh", "-c", &save]),
                hook("/bin/sh", &["sh", "-c", "echo broken >&2; exit 3"]),
                hook("/bin/sh", &["sh", "-c", "touch never"]),
            ])
            .build()
            .expect("hooks");
        let spec = SpecBuilder::default().hooks(hooks).build().expect("spec");
        let err = run(&spec, Stage::CreateRuntime, &state()).expect_err("hook #1 fails");
        let text = error_chain(&err);
        assert!(
            text.starts_with("createRuntime hook #1 (/bin/sh): failed"),
            "{text}"
        );
        assert_eq!(text.matches("broken").count(), 1, "{text}");
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).expect("hook #0 ran")).expect("json");
        assert_eq!(saved["id"], "c1");
        assert_eq!(saved["pid"], 42);
        assert!(!dir.path().join("never").exists());
        run(&spec, Stage::Poststart, &state()).expect("no poststart hooks");
    }
}
