//! The three ways containerd runs the shim binary: `start`, the daemon, and `delete`.
//!
//! This is written against the `containerd-shim` crate's pieces (flags, logger, publisher,
//! socket naming, generated ttrpc service) rather than its `run()` entry point, because
//! containerd 1.6/1.7 differ from 2.x in two ways `run()` does not cover:
//! * they call the task service as `containerd.task.v2.Task`; the crate generates
//!   `containerd.task.v3.Task` (same messages), so the daemon serves both names;
//! * they read `start`'s stdout as a bare address, not a bootstrap-protocol reply.

use std::collections::HashMap;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use containerd_shim as shim;
use shim::protos::protobuf::well_known_types::any::Any;
use shim::protos::protobuf::Message;
use shim::protos::shim::shim::ConnectRequest;
use shim::protos::shim::shim_ttrpc::create_task;
use shim::protos::shim::shim_ttrpc::TaskClient;
use shim::protos::ttrpc::{self, MethodHandler, Server};
use shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use shim::publisher::RemotePublisher;
use shim::{ExitSignal, Flags};

use crate::config;
use crate::events::EventSender;
use crate::mounts;
use crate::pod::PodRole;
use crate::sandbox;
use crate::service::Service;

/// The runtime type containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.rust-vm.v2";

/// The daemon finds its listening socket at this fd when `start` passed one.
const LISTENER_FD: RawFd = 3;
/// Set by `start` for the daemon: the listening socket is at [`LISTENER_FD`].
const LISTENER_ENV: &str = "RUST_VM_SHIM_LISTENER_FD";
/// Largest runtime-options message accepted on `start`'s stdin.
const MAX_OPTIONS_SIZE: u64 = 1 << 20;
/// The exit status reported for a task whose shim is gone (killed: 128 + SIGKILL).
const DEAD_SHIM_EXIT_STATUS: u32 = 128 + 9;

/// How long a shim socket may take to answer before its shim counts as dead.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

const TASK_SERVICE_V3: &str = "/containerd.task.v3.Task/";
const TASK_SERVICE_V2: &str = "/containerd.task.v2.Task/";

pub fn run() -> Result<()> {
    let args: Vec<OsString> = env::args_os().collect();
    let flags = shim::parse(args.get(1..).unwrap_or_default()).context("command line")?;
    if flags.version {
        println!("{}:", env!("CARGO_PKG_NAME"));
        println!("  Version: {}", env!("CARGO_PKG_VERSION"));
        println!("  Runtime: {RUNTIME_ID}");
        return Ok(());
    }
    if flags.info {
        return info();
    }
    if flags.namespace.is_empty() {
        bail!("-namespace is required");
    }
    if flags.id.is_empty() {
        bail!("-id is required");
    }
    match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        "" => serve(&flags),
        other => bail!("unknown action `{other}` (expected `start`, `delete` or none)"),
    }
}

/// `-info` (containerd 2.x asks before any shim runs): who we are, as `RuntimeInfo`.
fn info() -> Result<()> {
    let info = RuntimeInfo {
        name: RUNTIME_ID.to_owned(),
        version: Some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let mut stdout = std::io::stdout().lock();
    info.write_to_writer(&mut stdout)
        .context("write the runtime info")?;
    stdout.flush()?;
    Ok(())
}

/// `start`: runs in the bundle directory. Prints the address of the shim daemon that will serve
/// this container: the pod's daemon when the container joins a pod, a new one otherwise.
fn start(flags: &Flags) -> Result<()> {
    let bundle = env::current_dir().context("current directory (the bundle)")?;
    let role = PodRole::from_bundle(&bundle, &flags.id)?;
    let grouping = role.sandbox_id().to_owned();
    let address = shim::socket_address(&flags.address, &flags.namespace, &grouping);
    let socket_path = PathBuf::from(socket_path(&address));

    let shim_pid = match live_shim_pid(&address) {
        Some(pid) => pid,
        None => {
            if let PodRole::Container { sandbox_id } = &role {
                bail!(
                    "container {} belongs to pod sandbox {sandbox_id}, which has no running \
                     rust-vm shim (create the sandbox container first)",
                    flags.id
                );
            }
            let options = read_runtime_options()?;
            let config_path = config::config_path(options.as_ref())?;
            spawn_daemon(flags, &socket_path, &address, &config_path)?
        }
    };
    shim::util::write_address(&address).context("write the `address` file")?;
    fs::write("shim.pid", shim_pid.to_string()).context("write the `shim.pid` file")?;

    let mut stdout = std::io::stdout().lock();
    stdout.write_all(address.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// The pid of the shim daemon serving `address`, if one answers there. (Asked through the task
/// API: the socket's peer credentials name whoever called listen(), which is the `start`
/// process that bound it, not the daemon.)
fn live_shim_pid(address: &str) -> Option<u32> {
    // Nothing listening: answer at once instead of through ttrpc's retries.
    UnixStream::connect(socket_path(address)).ok()?;
    let client = TaskClient::new(ttrpc::Client::connect(address).ok()?);
    let response = client
        .connect(
            ttrpc::context::with_duration(LIVENESS_TIMEOUT),
            &ConnectRequest::default(),
        )
        .ok()?;
    Some(response.shim_pid)
}

/// The runtime options containerd passes on stdin (a protobuf `Any`), if any.
fn read_runtime_options() -> Result<Option<Any>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut input = Vec::new();
    stdin
        .lock()
        .take(MAX_OPTIONS_SIZE)
        .read_to_end(&mut input)
        .context("read runtime options from stdin")?;
    if input.is_empty() {
        return Ok(None);
    }
    let any = Any::parse_from_bytes(&input).context("runtime options on stdin")?;
    Ok(Some(any))
}

/// Binds the daemon's socket here, so it accepts connections as soon as `start` returns, and
/// launches the daemon in its own session with the socket as fd 3.
fn spawn_daemon(
    flags: &Flags,
    socket_path: &Path,
    address: &str,
    config_path: &Path,
) -> Result<u32> {
    let listener = bind(socket_path)?;
    let listener_fd: OwnedFd = listener.into();

    let exe = env::current_exe().context("path of the shim binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &flags.address,
        "-publish-binary",
        &flags.publish_binary,
        "-socket",
        address,
    ]);
    if flags.debug {
        cmd.arg("-debug");
    }
    cmd.env(LISTENER_ENV, LISTENER_FD.to_string())
        .env(config::CONFIG_ENV, config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let raw = listener_fd.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if raw == LISTENER_FD {
                let flags = libc::fcntl(raw, libc::F_GETFD);
                if flags < 0 || libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, LISTENER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("launch the shim daemon")?;
    // The daemon outlives `start`; it is reparented and reaped by init.
    Ok(child.id())
}

/// Binds the shim socket: only root (containerd) may connect.
fn bind(socket_path: &Path) -> Result<UnixListener> {
    remove_stale_socket(socket_path)?;
    if let Some(parent) = socket_path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .with_context(|| format!("create {}", parent.display()))?;
    }
    let listener = UnixListener::bind(socket_path)
        .with_context(|| format!("listen on {}", socket_path.display()))?;
    fs::set_permissions(socket_path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", socket_path.display()))?;
    Ok(listener)
}

/// A socket file nobody serves (its shim was killed) is in the way of a new daemon.
fn remove_stale_socket(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).with_context(|| format!("remove stale {}", path.display()))
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
}

/// The daemon: serves the task API until containerd shuts the last task down.
fn serve(flags: &Flags) -> Result<()> {
    if flags.socket.is_empty() {
        bail!("-socket is required to serve");
    }
    // The `log` FIFO exists when containerd started us; without it, log to stderr.
    if let Err(err) = shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id) {
        eprintln!("no containerd log FIFO ({err}); logging to stderr is disabled");
    }
    // The daemon's stderr is /dev/null: a panic must reach containerd's log instead.
    std::panic::set_hook(Box::new(|info| log::error!("shim panicked: {info}")));
    let ttrpc_address =
        env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS (containerd's event socket) is unset")?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .with_context(|| format!("connect to containerd at {ttrpc_address}"))?;
    let config_path = env::var_os(config::CONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_PATH));

    let exit = Arc::new(ExitSignal::default());
    let events = EventSender::start(publisher, flags.namespace.clone());
    let service = Arc::new(Service::new(
        flags.namespace.clone(),
        config_path,
        events,
        Arc::clone(&exit),
    ));

    let listener = take_listener(flags)?;
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())
        .context("ttrpc listener")?
        .register_service(task_methods(&service));
    server.start().context("start the ttrpc server")?;
    log::info!(
        "rust-vm shim serving {} (pid {})",
        flags.socket,
        std::process::id()
    );

    exit.wait();
    log::info!("shutting down");
    service.shutdown_sandbox();
    server.shutdown();
    let _ = fs::remove_file(socket_path(&flags.socket));
    Ok(())
}

fn take_listener(flags: &Flags) -> Result<OwnedFd> {
    if env::var(LISTENER_ENV).as_deref() == Ok("3") {
        env::remove_var(LISTENER_ENV);
        // SAFETY: `start` placed the bound listening socket at this fd for us and nothing else
        // in this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(LISTENER_FD) };
        return adopt_listener(fd);
    }
    Ok(bind(Path::new(socket_path(&flags.socket)))?.into())
}

/// The listening socket `start` handed over. `start` cleared its close-on-exec flag so that it
/// survived our exec; it is set again here, or every process the shim starts (the VMM, gzip,
/// mkfs, the agent) would inherit containerd's task socket.
fn adopt_listener(fd: OwnedFd) -> Result<OwnedFd> {
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("setting close-on-exec on the listening socket")?;
    let listener = UnixListener::from(fd);
    // Reject a stray fd that is not our socket.
    listener
        .local_addr()
        .context("fd 3 is not the shim's listening socket")?;
    Ok(listener.into())
}

/// The task service under its v3 name (containerd 2.x) and its v2 name (containerd 1.6/1.7).
fn task_methods<T: shim::Task + Send + Sync + 'static>(
    service: &Arc<T>,
) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let mut methods = create_task(Arc::clone(service) as Arc<dyn shim::Task + Send + Sync>);
    let v2: Vec<_> = create_task(Arc::clone(service) as Arc<dyn shim::Task + Send + Sync>)
        .into_iter()
        .filter_map(|(name, handler)| {
            name.strip_prefix(TASK_SERVICE_V3)
                .map(|method| (format!("{TASK_SERVICE_V2}{method}"), handler))
        })
        .collect();
    methods.extend(v2);
    methods
}

/// `delete`: containerd runs it after the daemon is gone (killed, or its create failed).
/// Everything the daemon would have removed is removed here; it must work without the daemon.
fn delete(flags: &Flags) -> Result<()> {
    let bundle = if flags.bundle.is_empty() {
        env::current_dir().context("current directory (the bundle)")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    if let Err(err) = mounts::unmount_rootfs(&bundle.join("rootfs")) {
        eprintln!("unmount rootfs of {}: {err:#}", flags.id);
    }
    // The spec may be gone already; then this container was not a pod member we can name.
    let role = PodRole::from_bundle(&bundle, &flags.id).unwrap_or(PodRole::Sandbox {
        id: flags.id.clone(),
    });
    let grouping = role.sandbox_id();
    let address = shim::socket_address(&flags.address, &flags.namespace, grouping);
    if live_shim_pid(&address).is_none() {
        let _ = remove_stale_socket(Path::new(socket_path(&address)));
        sandbox::remove_state(&flags.namespace, grouping)
            .with_context(|| format!("remove sandbox state of {grouping}"))?;
        clean_up_network(&bundle);
    }

    let mut response = shim::api::DeleteResponse::new();
    response.exit_status = DEAD_SHIM_EXIT_STATUS;
    response.exited_at = Some(crate::events::now()).into();
    let mut stdout = std::io::stdout().lock();
    response
        .write_to_writer(&mut stdout)
        .context("write the delete response")?;
    stdout.flush()?;
    Ok(())
}

/// The pod's network namespace (named in the bundle's spec) without what a killed sandbox left
/// in it (see [`rust_vm_sandbox::network::clean_up`]).
fn clean_up_network(bundle: &Path) {
    let Ok(spec) = oci_spec::runtime::Spec::load(bundle.join("config.json")) else {
        return;
    };
    let Some(path) = rust_vm_sandbox::network::namespace_path(&spec) else {
        return;
    };
    if !path.exists() {
        return;
    }
    match rust_vm_sandbox::network::clean_up(&path) {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => eprintln!("{}: removed {}", path.display(), removed.join(", ")),
        Err(err) => eprintln!("{}", rust_vm_sandbox::Chain(&err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adopted_listener_is_close_on_exec_again() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let dir = std::env::temp_dir().join(format!("rust-vm-adopt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join("s.sock")).unwrap();
        let fd = OwnedFd::from(listener);
        // As `start` leaves it: inheritable.
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        let fd = adopt_listener(fd).unwrap();
        let flags = FdFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFD).unwrap());
        assert!(flags.contains(FdFlag::FD_CLOEXEC));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn v2_and_v3_names_are_served() {
        let methods = task_methods(&Arc::new(NopTask));
        for method in ["Create", "Start", "Wait", "Delete", "Shutdown"] {
            assert!(methods.contains_key(&format!("{TASK_SERVICE_V3}{method}")));
            assert!(methods.contains_key(&format!("{TASK_SERVICE_V2}{method}")));
        }
        assert_eq!(methods.len() % 2, 0);
    }

    struct NopTask;
    impl shim::Task for NopTask {}

    #[test]
    fn runtime_info_names_the_runtime() {
        let info = RuntimeInfo {
            name: RUNTIME_ID.to_owned(),
            ..Default::default()
        };
        let bytes = info.write_to_bytes().unwrap();
        assert_eq!(
            RuntimeInfo::parse_from_bytes(&bytes).unwrap().name,
            RUNTIME_ID
        );
    }

    #[test]
    fn socket_path_strips_scheme() {
        assert_eq!(socket_path("unix:///run/x/s/abc"), "/run/x/s/abc");
        assert_eq!(socket_path("/run/x/s/abc"), "/run/x/s/abc");
    }
}
