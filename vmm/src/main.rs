//! rust-vm-vmm: boots a microVM from a JSON config file and/or flags.
//!
//! Exit status: 0 when the guest resets or powers off, 1 when the VM cannot be built (bad
//! configuration, missing files, KVM errors), 2 when a vCPU faults (triple fault, KVM internal
//! error; after printing the exit reason and the vCPU's registers) or a device's back-end
//! (virtiofsd) goes away.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vmm::builder::build_microvm;
use vmm::config::{
    BlockDeviceConfig, CpuTemplate, FsDeviceConfig, LogLevel, NetDeviceConfig, ReflectMode,
    SeccompMode, SerialOutput, VmmConfig, VsockDeviceConfig,
};

const EXIT_GUEST_FAULT: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "rust-vm-vmm", version, about = "rust-vm's KVM microVM monitor")]
struct Cli {
    /// What this VM serves, for logs and `ps` (rust-vm passes the sandbox's state directory).
    #[arg(long, value_name = "TEXT")]
    id: Option<String>,
    /// JSON config file; flags override its settings (block devices are added to its list).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Guest kernel: ELF vmlinux or bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 reboot=k i8042.noaux i8042.nomux
    /// i8042.dumbkbd panic=1 nomodule"].
    #[arg(long)]
    cmdline: Option<String>,
    /// Number of vCPUs [default: 1].
    #[arg(long)]
    vcpus: Option<u32>,
    /// Guest memory in MiB [default: 128].
    #[arg(long = "mem-mib", value_name = "MIB")]
    mem_mib: Option<u64>,
    /// virtio-blk device: PATH[,ro][,id=ID]; repeat for more.
    #[arg(long, value_name = "PATH[,ro][,id=ID]")]
    block: Vec<BlockDeviceConfig>,
    /// virtio-vsock guest CID (needs --vsock-uds).
    #[arg(long = "vsock-cid", requires = "vsock_uds")]
    vsock_cid: Option<u32>,
    /// Host Unix socket of the vsock device (needs --vsock-cid).
    #[arg(long = "vsock-uds", value_name = "PATH", requires = "vsock_cid")]
    vsock_uds: Option<PathBuf>,
    /// virtio-fs device served by a vhost-user back-end (virtiofsd) listening on SOCKET;
    /// repeat for more.
    #[arg(long, value_name = "SOCKET,tag=TAG[,queues=N][,queue_size=N]")]
    fs: Vec<FsDeviceConfig>,
    /// virtio-net device over the tap open as descriptor N (IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR; the VMM opens no tap itself), MTU default 1500; repeat for more.
    #[arg(long, value_name = "fd=N,mac=MAC[,mtu=N]")]
    net: Vec<NetDeviceConfig>,
    /// Serial console output: `stdout` or a file path [default: stdout].
    #[arg(long, value_name = "stdout|PATH")]
    serial: Option<SerialOutput>,
    /// CPU template: host or conservative [default: conservative].
    #[arg(long = "cpu-template")]
    cpu_template: Option<CpuTemplate>,
    /// off, error, warn, info, debug or trace [default: warn].
    #[arg(long = "log-level")]
    log_level: Option<LogLevel>,
    /// Deliver #BP/#UD when KVM's instruction emulator fails on an instruction that raises them:
    /// auto (on for instruction-emulating hosts such as PVM), on or off; the bare flag means on
    /// [default: auto].
    #[arg(long = "reflect-emulation-failures", value_name = "auto|on|off", num_args = 0..=1, default_missing_value = "on")]
    reflect_emulation_failures: Option<ReflectMode>,
    /// Confine every VMM thread to the system calls it needs, a violation killing the VMM:
    /// on, or off for debugging only [default: on].
    #[arg(long, value_name = "on|off")]
    seccomp: Option<SeccompMode>,
    /// `/dev/kvm` as inherited descriptor N instead of opening it (a jailed VMM has no /dev).
    #[arg(long = "kvm-fd", value_name = "N")]
    kvm_fd: Option<i32>,
}

impl Cli {
    fn into_partial(self) -> (Option<String>, Option<PathBuf>, VmmConfig) {
        let vsock = match (self.vsock_cid, self.vsock_uds) {
            (Some(guest_cid), Some(uds_path)) => Some(VsockDeviceConfig {
                guest_cid,
                uds_path,
            }),
            _ => None,
        };
        let flags = VmmConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline: self.cmdline,
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            block: self.block,
            vsock,
            fs: self.fs,
            net: self.net,
            serial: self.serial,
            cpu_template: self.cpu_template,
            log_level: self.log_level,
            reflect_emulation_failures: self.reflect_emulation_failures,
            seccomp: self.seccomp,
            kvm_fd: self.kvm_fd,
        };
        (self.id, self.config, flags)
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (id, config_file, flags) = cli.into_partial();
    let partial = match config_file {
        Some(path) => VmmConfig::from_file(&path)?.merge(flags),
        None => flags,
    };
    let config = partial.finish()?;
    vmm::logger::init(config.log_level.to_filter());
    if let Some(id) = id {
        log::info!("VM {id}");
    }

    let vm = build_microvm(&config).context("cannot build the VM")?;
    let reason = vm.run().context("the VM failed")?;
    log::info!("VM stopped: {reason}");
    if reason.is_clean() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("rust-vm-vmm: {reason}");
        Ok(ExitCode::from(EXIT_GUEST_FAULT))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 1 like every other bad input; --help and --version exit 0.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rust-vm-vmm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
