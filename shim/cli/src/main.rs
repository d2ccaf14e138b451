//! `rust-vm`: run OCI bundles in KVM microVMs, with runc-style lifecycle commands.

mod bundle;
mod commands;
mod launch;
mod logger;
mod signal;
mod state;
mod stdio;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rust_vm_sandbox::config::DEFAULT_CONFIG_PATH;
use rust_vm_sandbox::{Backend, GuestRoot, LogLevel, RuntimeConfig};

use crate::logger::LogFormat;
use crate::state::{Root, DEFAULT_ROOT};

/// Run OCI bundles in KVM microVMs (one VM per container), with runc-style commands.
#[derive(Debug, Parser)]
#[command(name = "rust-vm", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Directory for container state.
    #[arg(long, global = true, default_value = DEFAULT_ROOT, env = "RUST_VM_ROOT")]
    pub root: PathBuf,
    /// Runtime configuration file (TOML); missing is fine at the default path.
    #[arg(long, global = true, env = "RUST_VM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Write the runtime's log here instead of stderr (the guest console is appended too).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// off, error, warn, info, debug or trace [config: log_level; default warn].
    #[arg(long, global = true)]
    pub log_level: Option<LogLevel>,
    /// Same as --log-level debug (runc compatibility).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Sandbox back-end: vm (the product) or namespaces (tests and debugging only: no VM).
    #[arg(long, global = true, env = "RUST_VM_BACKEND")]
    pub backend: Option<Backend>,
    /// Guest kernel [config: kernel].
    #[arg(long, global = true)]
    pub kernel: Option<PathBuf>,
    /// Where the guest's root comes from: image (the read-only guest image) or initramfs
    /// [config: guest_root; default image].
    #[arg(long, global = true)]
    pub guest_root: Option<GuestRoot>,
    /// The guest's read-only root image with the agent as /init [config: guest_image].
    #[arg(long, global = true)]
    pub guest_image: Option<PathBuf>,
    /// Guest initramfs with the agent as /init, with --guest-root initramfs [config: initramfs].
    #[arg(long, global = true)]
    pub initramfs: Option<PathBuf>,
    /// The rust-vm-vmm binary [config: vmm].
    #[arg(long, global = true)]
    pub vmm: Option<PathBuf>,
    /// The rust-vm-agent binary for the namespaces back-end [config: agent].
    #[arg(long, global = true)]
    pub agent: Option<PathBuf>,
    /// vCPUs per VM [config: vcpus].
    #[arg(long, global = true)]
    pub vcpus: Option<u32>,
    /// Guest memory in MiB [config: mem_mib].
    #[arg(long, global = true)]
    pub mem_mib: Option<u64>,
    /// VMM CPU template [config: cpu_template].
    #[arg(long, global = true)]
    pub cpu_template: Option<rust_vm_sandbox::config::CpuTemplate>,
    /// Seconds to wait for the agent to answer [config: agent_timeout_secs].
    #[arg(long, global = true)]
    pub agent_timeout: Option<u64>,
    /// Extra guest kernel command-line words [config: kernel_args; default: those an
    /// emulating (PVM) host needs, none on hardware KVM].
    #[arg(long, global = true, allow_hyphen_values = true)]
    pub kernel_args: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start a container; exits with the container's status.
    Run(commands::run::RunArgs),
    /// Create a container: start its sandbox and prepare the process, without starting it.
    Create(commands::create::CreateArgs),
    /// Start a created container's process.
    Start(commands::IdArg),
    /// Print the container's state as OCI runtime-spec JSON.
    State(commands::IdArg),
    /// Send a signal (default TERM) to the container's init process.
    Kill(commands::kill::KillArgs),
    /// Delete a container and everything it left (VM, sockets, image, state).
    Delete(commands::delete::DeleteArgs),
    /// List containers.
    List(commands::list::ListArgs),
    /// List the processes of a container.
    Ps(commands::ps::PsArgs),
    /// Run a new process in a running container.
    Exec(commands::exec::ExecArgs),
    /// Write a default config.json for a new bundle.
    Spec(commands::spec::SpecArgs),
    /// Check that this host can run rust-vm containers.
    Check,
    /// Internal: owns a detached container's sandbox (started by `create`).
    #[command(name = "__monitor", hide = true)]
    Monitor(commands::monitor::MonitorArgs),
}

impl Global {
    pub fn root(&self) -> Root {
        Root::new(self.root.clone())
    }

    /// The configuration file, then flags on top.
    pub fn runtime_config(&self) -> Result<RuntimeConfig> {
        let (path, must_exist) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut cfg = RuntimeConfig::load(&path, must_exist)?;
        if let Some(v) = self.backend {
            cfg.backend = v;
        }
        if let Some(v) = &self.kernel {
            cfg.kernel = v.clone();
        }
        if let Some(v) = self.guest_root {
            cfg.guest_root = v;
        }
        if let Some(v) = &self.guest_image {
            cfg.guest_image = v.clone();
        }
        if let Some(v) = &self.initramfs {
            cfg.initramfs = v.clone();
        }
        if let Some(v) = &self.vmm {
            cfg.vmm = v.clone();
        }
        if let Some(v) = &self.agent {
            cfg.agent = v.clone();
        }
        if let Some(v) = self.vcpus {
            cfg.vcpus = v;
        }
        if let Some(v) = self.mem_mib {
            cfg.mem_mib = v;
        }
        if let Some(v) = &self.cpu_template {
            cfg.cpu_template = *v;
        }
        if let Some(v) = self.agent_timeout {
            cfg.agent_timeout_secs = Some(v);
        }
        if let Some(v) = &self.kernel_args {
            cfg.kernel_args = Some(v.clone());
        }
        if let Some(v) = self.log_level {
            cfg.log_level = v;
        }
        if self.debug {
            cfg.log_level = LogLevel::Debug;
        }
        cfg.validate(Path::new("command-line flags"))
            .context("invalid option")?;
        Ok(cfg)
    }

    fn level(&self) -> log::LevelFilter {
        if self.debug {
            return log::LevelFilter::Debug;
        }
        if let Some(level) = self.log_level {
            return level.to_filter();
        }
        self.runtime_config()
            .map(|c| c.log_level.to_filter())
            .unwrap_or(log::LevelFilter::Warn)
    }
}

use std::path::Path;

fn main() {
    let cli = Cli::parse();
    let log_path = match (&cli.command, &cli.global.log) {
        (_, Some(p)) => Some(p.clone()),
        // A detached owner has no terminal: it logs into the container's state directory.
        (Command::Monitor(args), None) => Some(cli.global.root.join(&args.id).join("owner.log")),
        _ => None,
    };
    if let Err(e) = logger::init(
        log_path.as_deref(),
        cli.global.log_format,
        cli.global.level(),
    ) {
        eprintln!("rust-vm: {e:#}");
        std::process::exit(1);
    }
    match commands::dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            log::error!("{e:#}");
            if cli_logs_elsewhere() {
                eprintln!("rust-vm: {e:#}");
            }
            std::process::exit(1);
        }
    }
}

/// Errors always reach stderr, also when the log goes to a file.
fn cli_logs_elsewhere() -> bool {
    std::env::args().any(|a| a == "--log" || a.starts_with("--log="))
        || std::env::args().nth(1).as_deref() == Some("__monitor")
}
