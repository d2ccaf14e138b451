//! rust-vm-agent: PID 1 of the guest (or a host process for tests), serving the agent protocol.

mod container_runtime;
mod init;
mod listener;
mod logger;
mod network;
mod reaper;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use log::LevelFilter;
use nix::sys::signal::{SigSet, Signal};
use rust_vm_protocol::{AgentMode, DEFAULT_VSOCK_PORT};

use container_runtime::ContainerRuntime;
use listener::{ListenAddress, Listener};
use rust_vm_container::{
    CgroupConfig, LinuxSyscalls, RuntimeConfig, DEFAULT_STATE_DIR, DEFAULT_STEP_TIMEOUT,
};
use server::{Server, ShutdownHook};

/// rust-vm's agent: creates OCI containers on request of the shim.
///
/// With --init, or as PID 1 without `--listen unix:PATH`, it sets up the guest and listens on
/// vsock port 1024. Otherwise it runs in host mode (test/debug back-end), a child subreaper
/// listening where --listen says.
#[derive(Debug, Parser)]
#[command(name = "rust-vm-agent", version)]
struct Args {
    /// Run as the guest's init even when not PID 1.
    #[arg(long)]
    init: bool,
    /// Where to listen: unix:PATH or vsock:PORT [guest default: vsock:1024; host: required].
    #[arg(long, value_name = "ADDR")]
    listen: Option<ListenAddress>,
    /// The guest's hostname (init mode).
    #[arg(long, default_value = "rust-vm")]
    hostname: String,
    /// Parent cgroup (cgroup v2) of the containers' cgroups [default: /sys/fs/cgroup/rust-vm
    /// when /sys/fs/cgroup is cgroup2, else cgroups are disabled].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cgroups")]
    cgroup_root: Option<PathBuf>,
    /// Create no cgroups (host mode on a cgroup v1 host): resource limits in a spec are
    /// refused, stats and update_resources answer `unsupported`.
    #[arg(long)]
    no_cgroups: bool,
    /// Directory for per-container state (block-device rootfs mount points).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Init mode: mount the virtio-fs file system with this tag at /run/rust-vm/share (the pod's
    /// share from the host); the agent powers off when it cannot.
    #[arg(long, value_name = "TAG")]
    share: Option<String>,
    /// Seconds the agent waits for each setup step of a container's or an exec's child before
    /// it kills the child and fails the request (1 to 86400). The host passes its agent timeout.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STEP_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    step_timeout_secs: u64,
    /// Keep logging to stderr in init mode instead of switching to /dev/console.
    #[arg(long)]
    log_stderr: bool,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_parser = parse_level)]
    log_level: LevelFilter,
}

fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not one of off, error, warn, info, debug, trace"))
}

fn main() -> ExitCode {
    // How long the kernel took to get here, for the console (the log's clock starts below).
    let entered = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok();
    let pid1 = nix::unistd::getpid().as_raw() == 1;
    let (args, notes) = match Args::try_parse() {
        Ok(args) => (args, Vec::new()),
        Err(_) if pid1 => init_args(std::env::args().collect()),
        Err(e) => e.exit(),
    };
    logger::init(args.log_level);
    // PID 1 listening on a Unix socket is the host-mode agent as init of fresh namespaces (the
    // shim's namespaces back-end): it must not mount over /dev or log to the console.
    let unix_listener = matches!(args.listen, Some(ListenAddress::Unix(_)));
    let guest = args.init || (pid1 && !unix_listener);
    if guest {
        // The kernel panics when init dies: say why on the console and power off cleanly.
        std::panic::set_hook(Box::new(|info| {
            log::error!("agent panicked: {info}");
            init::power_off();
        }));
        match init::leave_kernel_rootfs() {
            Ok(true) => log::info!("root moved off the initramfs onto a mount of its own"),
            Ok(false) => {}
            // Containers cannot pivot_root then: say why once, each create will fail naming it.
            Err(e) => log::error!("{e:#}"),
        }
        init::setup(&args.hostname);
        if !args.log_stderr {
            if let Some(console) = init::open_console() {
                logger::use_console(console);
            }
        }
        if let Some(t) = entered {
            let secs = t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9;
            log::info!(
                "agent started {secs:.3} s after the guest kernel (log times count from then)"
            );
        }
        if let Some(tag) = &args.share {
            // Without its share the pod cannot create a container: say why and stop, so the
            // host reports the console's last words instead of a missing directory later.
            if let Err(e) = init::mount_share(tag) {
                log::error!("{e:#}");
                init::power_off();
            }
        }
    }
    for (level, note) in notes {
        log::log!(level, "{note}");
    }
    match run(args, guest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            if guest {
                init::power_off();
            }
            ExitCode::FAILURE
        }
    }
}

/// Options of PID 1. The kernel starts init with every word of its command line it did not
/// understand (`noxsave`, ...), followed by the words after ` -- ` (without the `--` itself):
/// the agent's options start at the first word that looks like one (or after a literal `--`).
/// The kernel's words are no concern of the agent's: they are only noted at debug level. PID 1
/// must not exit over a bad option (the kernel would panic): that is an error on the console,
/// and the agent goes on with every default. Returns the notes to log once logging is set up.
fn init_args(argv: Vec<String>) -> (Args, Vec<(log::Level, String)>) {
    let words = argv.get(1..).unwrap_or_default();
    let (kernel_words, options) = match words.iter().position(|w| w == "--") {
        Some(i) => (&words[..i], &words[i + 1..]),
        None => words.split_at(
            words
                .iter()
                .position(|w| w.starts_with("--"))
                .unwrap_or(words.len()),
        ),
    };
    let mut notes = Vec::new();
    if !kernel_words.is_empty() {
        notes.push((
            log::Level::Debug,
            format!(
                "kernel command line words passed to init, not ours: {}",
                kernel_words.join(" ")
            ),
        ));
    }
    let argv = std::iter::once("rust-vm-agent").chain(options.iter().map(String::as_str));
    match Args::try_parse_from(argv) {
        Ok(args) => (args, notes),
        Err(e) => {
            let first_line = e.to_string().lines().next().unwrap_or_default().to_owned();
            notes.push((
                log::Level::Error,
                format!(
                    "bad agent options after ` -- ` on the kernel command line ({}): \
                     {first_line}; using defaults for all of them",
                    options.join(" ")
                ),
            ));
            (Args::parse_from(["rust-vm-agent"]), notes)
        }
    }
}

fn run(args: Args, guest: bool) -> anyhow::Result<()> {
    let listen = match (&args.listen, guest) {
        (Some(listen), _) => listen.clone(),
        (None, true) => ListenAddress::Vsock {
            port: DEFAULT_VSOCK_PORT,
        },
        (None, false) => {
            bail!("host mode needs --listen unix:PATH (or run as PID 1 / with --init)")
        }
    };
    // Handled by a thread below; blocked before any other thread exists so that all inherit it.
    // Container processes get their signal mask reset by the container library.
    let mut stop_signals = SigSet::empty();
    if !guest {
        nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
        stop_signals.add(Signal::SIGTERM);
        stop_signals.add(Signal::SIGINT);
        stop_signals
            .thread_block()
            .context("blocking SIGTERM and SIGINT")?;
    }
    let cgroups = if args.no_cgroups {
        CgroupConfig::Disabled
    } else if let Some(root) = &args.cgroup_root {
        CgroupConfig::V2 { root: root.clone() }
    } else {
        CgroupConfig::detect()
    };
    log::info!(
        "rust-vm-agent {} ({} mode), cgroups: {}",
        env!("CARGO_PKG_VERSION"),
        if guest { "guest" } else { "host" },
        match &cgroups {
            CgroupConfig::V2 { root } => format!("v2 under {}", root.display()),
            CgroupConfig::Disabled => "disabled".to_owned(),
        }
    );
    let config = RuntimeConfig {
        cgroups,
        state_dir: args.state_dir.clone(),
        step_timeout: Duration::from_secs(args.step_timeout_secs),
    };
    let reaper = reaper::Reaper::start().context("starting the reaper")?;
    let runtime = ContainerRuntime::new(Arc::new(LinuxSyscalls), config);
    let (mode, on_shutdown): (AgentMode, ShutdownHook) = if guest {
        (AgentMode::Guest, Box::new(|| init::power_off()))
    } else {
        let socket = match &listen {
            ListenAddress::Unix(path) => Some(path.clone()),
            ListenAddress::Vsock { .. } => None,
        };
        let hook = move || {
            if let Some(path) = &socket {
                let _ = std::fs::remove_file(path);
            }
            log::info!("exiting");
            std::process::exit(0);
        };
        (AgentMode::Host, Box::new(hook))
    };
    let server = Server::new(Box::new(runtime), reaper, mode, on_shutdown);
    let listener = Listener::bind(&listen).with_context(|| format!("listening on {listen}"))?;
    log::info!("listening on {listen}");
    if !guest {
        let server = Arc::clone(&server);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || match stop_signals.wait() {
                Ok(signal) => {
                    log::info!("{signal}: removing containers");
                    server.shutdown();
                }
                Err(e) => log::error!("waiting for signals: {e}"),
            })
            .context("starting the signal thread")?;
    }
    server.serve(listener).context("accepting connections")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn an_error_chain_names_every_cause_once() {
        use rust_vm_protocol::error_chain;
        let e = rust_vm_container::ContainerError::Sys {
            id: "c".into(),
            what: "opening /dev/null".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            error_chain(&e),
            "container c: opening /dev/null: No such file or directory (os error 2)"
        );
        let wrapped = anyhow::Error::new(e).context("creating");
        assert_eq!(
            format!("{wrapped:#}"),
            "creating: container c: opening /dev/null: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn init_skips_kernel_words_before_its_options_quietly() {
        let (args, notes) = init_args(argv(&[
            "/init",
            "noxsave",
            "syscall_pf_fixup",
            "--log-level",
            "debug",
            "--hostname",
            "pod",
        ]));
        assert_eq!(args.log_level, LevelFilter::Debug);
        assert_eq!(args.hostname, "pod");
        assert_eq!(args.step_timeout_secs, DEFAULT_STEP_TIMEOUT.as_secs());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].0, log::Level::Debug, "{notes:?}");
        assert!(notes[0].1.contains("noxsave syscall_pf_fixup"), "{notes:?}");
    }

    #[test]
    fn init_without_options_uses_defaults_quietly() {
        let (args, notes) = init_args(argv(&["/init", "noxsave"]));
        assert_eq!(args.hostname, "rust-vm");
        assert!(
            notes.iter().all(|(level, _)| *level == log::Level::Debug),
            "{notes:?}"
        );
        let (_, notes) = init_args(argv(&["/init"]));
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn init_reports_a_bad_option_as_an_error_and_keeps_defaults() {
        let (args, notes) = init_args(argv(&["/init", "noxsave", "--log-level", "loud"]));
        assert_eq!(args.log_level, LevelFilter::Info);
        let errors: Vec<_> = notes
            .iter()
            .filter(|(level, _)| *level == log::Level::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{notes:?}");
        assert!(errors[0].1.contains("loud"), "{notes:?}");
        assert!(errors[0].1.contains("using defaults"), "{notes:?}");

        let (args, notes) = init_args(argv(&["/init", "--hostname", "pod", "--bogus"]));
        assert_eq!(args.hostname, "rust-vm", "nothing half-applied");
        assert!(
            notes
                .iter()
                .any(|(l, m)| *l == log::Level::Error && m.contains("--bogus")),
            "{notes:?}"
        );
    }

    #[test]
    fn init_takes_the_hosts_step_timeout_within_a_day() {
        let (args, notes) = init_args(argv(&["/init", "--step-timeout-secs", "600"]));
        assert_eq!(args.step_timeout_secs, 600);
        assert!(notes.is_empty(), "{notes:?}");
        for bad in ["0", "86401", "-1", "soon"] {
            let (args, notes) = init_args(argv(&["/init", "--step-timeout-secs", bad]));
            assert_eq!(
                args.step_timeout_secs,
                DEFAULT_STEP_TIMEOUT.as_secs(),
                "{bad}"
            );
            assert!(
                notes
                    .iter()
                    .any(|(l, m)| *l == log::Level::Error && m.contains("--step-timeout-secs")),
                "{bad}: {notes:?}"
            );
        }
    }

    #[test]
    fn init_splits_at_a_literal_double_dash() {
        let (args, notes) = init_args(argv(&["/init", "quiet", "--", "--hostname", "pod"]));
        assert_eq!(args.hostname, "pod");
        assert!(
            notes.iter().all(|(level, _)| *level == log::Level::Debug),
            "{notes:?}"
        );
    }
}
