//! OCI hooks that run in the runtime's namespace on the host: `prestart` and `createRuntime`
//! after the container is created, `poststart` after it started, `poststop` at delete. Each gets
//! the container's state JSON on stdin. (`createContainer` and `startContainer` belong inside the
//! container and are the agent's.)

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Hook, Spec};

use crate::state::OciState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    Poststart,
    Poststop,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }
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

/// Runs the stage's hooks in order; the first failure stops the stage and is returned.
pub fn run(spec: &Spec, stage: Stage, state: &OciState) -> Result<()> {
    let hooks = hooks_for(spec, stage);
    if hooks.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state)?;
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, &input)
            .with_context(|| format!("{} hook #{i} ({})", stage.name(), hook.path().display()))?;
    }
    Ok(())
}

fn run_one(hook: &Hook, input: &[u8]) -> Result<()> {
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
    let mut child = cmd.spawn().context("cannot execute")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may not read its stdin; that is not an error.
        let _ = stdin.write_all(input);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                use std::io::Read;
                let _ = err.read_to_string(&mut stderr);
            }
            bail!("failed ({status}): {}", stderr.trim());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {} s", hook.timeout().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
