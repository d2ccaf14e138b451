//! `run`: create and start a container, relay its stdio, exit with its status; or with
//! `--detach`, `create` + `start` and return at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};

use crate::bundle::Bundle;
use crate::commands::create::{self, write_pid_file, CreateArgs};
use crate::launch;
use crate::state::{self, ContainerDir};
use crate::Global;
use rust_vm_sandbox::hooks::{self, Stage};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Bundle directory (with config.json and the rootfs).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Return once the container runs; its stdio stays with the monitor process.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the container's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Container id.
    pub id: String,
}

/// Signals `run` forwards to the container's init (as runc does in the foreground).
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

pub fn run(g: &Global, args: RunArgs) -> Result<i32> {
    if args.detach {
        let id = args.id.clone();
        create::create(
            g,
            CreateArgs {
                bundle: args.bundle,
                pid_file: args.pid_file,
                id: id.clone(),
            },
        )?;
        if let Err(e) = super::start::start(g, &id) {
            let _ = super::delete::delete(
                g,
                super::delete::DeleteArgs {
                    force: true,
                    id: id.clone(),
                },
            );
            return Err(e);
        }
        return Ok(0);
    }
    let runtime = g.runtime_config()?;
    let bundle = Bundle::load(&args.bundle)?;
    let dir = g.root().create(&args.id)?;
    if let Err(e) = dir.write_owner() {
        let _ = std::fs::remove_dir_all(&dir.path);
        return Err(e);
    }
    let target = Arc::new(Mutex::new(None::<Target>));
    if let Err(e) = forward_signals(dir.clone(), Arc::clone(&target)) {
        let _ = std::fs::remove_dir_all(&dir.path);
        return Err(e);
    }
    let result = run_in_foreground(g, &runtime, &dir, &bundle, &args, &target);
    *target.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let oci = dir.oci_state().ok();
    let _ = std::fs::remove_dir_all(&dir.path);
    if let Some(mut oci) = oci {
        oci.status = "stopped".into();
        if let Err(e) = hooks::run(&bundle.spec, Stage::Poststop, &oci) {
            log::warn!("container {}: {}", args.id, rust_vm_sandbox::Chain(&e));
        }
    }
    result
}

fn run_in_foreground(
    g: &Global,
    runtime: &rust_vm_sandbox::RuntimeConfig,
    dir: &ContainerDir,
    bundle: &Bundle,
    args: &RunArgs,
    target: &Mutex<Option<Target>>,
) -> Result<i32> {
    let owned = launch::create(runtime, dir, bundle, g.log.clone())?;
    if let Some(path) = &args.pid_file {
        write_pid_file(path, owned.record.pid)?;
    }
    *target.lock().unwrap_or_else(|e| e.into_inner()) = Some(Target {
        address: owned.record.agent_address.clone(),
        terminal: owned.terminal,
    });
    // Our terminal goes raw only now: errors before this point print normally.
    let _raw = owned
        .terminal
        .then(crate::stdio::RawTerminal::enter)
        .flatten();
    owned
        .pod
        .client()
        .start(&args.id)
        .with_context(|| format!("starting container {:?}", args.id))?;
    dir.mark_started()?;
    if let Err(e) = dir
        .oci_state()
        .and_then(|s| Ok(hooks::run(&bundle.spec, Stage::Poststart, &s)?))
    {
        log::warn!("container {}: {e:#}", args.id);
    }
    let exit = launch::wait_and_finish(owned, dir)?;
    Ok(exit.exit_code)
}

/// Where forwarded signals go once the container exists.
#[derive(Clone)]
struct Target {
    address: String,
    terminal: bool,
}

/// Blocks the forwarded signals (and SIGWINCH) in every thread and handles them in one: before
/// the container exists a signal ends `run` (removing its state; the sandbox dies with the
/// process), after that it goes to the container's init; SIGWINCH resizes its terminal.
fn forward_signals(dir: ContainerDir, target: Arc<Mutex<Option<Target>>>) -> Result<()> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGWINCH);
    set.thread_block().context("blocking signals")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else { continue };
            let current = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match (current, sig) {
                (Some(t), Signal::SIGWINCH) => {
                    if let (true, Some(size)) = (t.terminal, crate::stdio::terminal_size()) {
                        let resized =
                            state::agent_client(&t.address, std::time::Duration::from_secs(5))
                                .and_then(|c| {
                                    Ok(c.resize_tty(&dir.id, None, size.rows, size.cols)?)
                                });
                        if let Err(e) = resized {
                            log::debug!("resizing the terminal of {}: {e:#}", dir.id);
                        }
                    }
                }
                (None, Signal::SIGWINCH) => {}
                (Some(t), sig) => {
                    let sent = state::agent_client(&t.address, std::time::Duration::from_secs(5))
                        .and_then(|c| Ok(c.signal(&dir.id, None, sig as i32, false)?));
                    if let Err(e) = sent {
                        log::warn!("forwarding {sig} to container {}: {e:#}", dir.id);
                    }
                }
                (None, sig) => {
                    log::warn!("{sig} before the container started: giving up");
                    let _ = std::fs::remove_dir_all(&dir.path);
                    std::process::exit(128 + sig as i32);
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
