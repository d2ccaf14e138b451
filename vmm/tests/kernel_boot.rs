//! The guest kernel from guest-kernel/ boots under our VMM with the conservative CPU template.
//!
//! On this project's PVM host the guest's ring 0 is instruction-emulated and the kernel stops
//! after its early log (see docs/architecture.md), so these tests assert on that early log: the
//! version banner, our exact command line, our e820 map and the processors our MP table lists.
//! On a hardware-KVM host the same kernel goes on to user space.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{kernel_path, require_kvm, RunningVmm};

const BOOT_LIMIT: Duration = Duration::from_secs(90);
const MIB: u64 = 1 << 20;

/// One emulated kernel boot at a time: the host has few cores.
static ONE_BOOT_AT_A_TIME: Mutex<()> = Mutex::new(());

fn cmdline(tag: &str) -> String {
    // noxsave: PVM shows the host's XSAVE bits whatever CPUID we set (docs/cpu-templates.md).
    format!(
        "console=ttyS0 earlyprintk=serial,ttyS0,115200 noxsave reboot=k panic=1 rust_vm_test={tag}"
    )
}

fn boot(mem_mib: u64, vcpus: u8, cmdline: &str) -> RunningVmm {
    boot_with(mem_mib, vcpus, cmdline, &[])
}

fn boot_with(mem_mib: u64, vcpus: u8, cmdline: &str, extra: &[&str]) -> RunningVmm {
    require_kvm();
    let kernel = kernel_path();
    let (mem, vcpus) = (mem_mib.to_string(), vcpus.to_string());
    let mut args = vec![
        "--kernel",
        &kernel,
        "--mem-mib",
        &mem,
        "--vcpus",
        &vcpus,
        "--cpu-template",
        "conservative",
        "--cmdline",
        cmdline,
    ];
    args.extend_from_slice(extra);
    RunningVmm::start(&args)
}

/// The `BIOS-e820:` ranges the kernel printed, as (first, last, kind).
fn printed_e820(serial: &str) -> Vec<(u64, u64, String)> {
    serial
        .lines()
        .filter_map(|line| line.split_once("BIOS-e820: [mem ").map(|(_, rest)| rest))
        .map(|rest| {
            let (range, kind) = rest.split_once("] ").expect("e820 line format");
            let (first, last) = range.split_once('-').expect("e820 range format");
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            (hex(first), hex(last), kind.trim().to_string())
        })
        .collect()
}

fn assert_early_boot(mem_mib: u64, expected_e820: &[(u64, u64, &str)]) {
    let _serial = ONE_BOOT_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cmdline = cmdline(&format!("e820-{mem_mib}"));
    let mut vm = boot(mem_mib, 1, &cmdline);
    let command_line = format!("Command line: {cmdline}\n");
    let done = vm.wait_for(BOOT_LIMIT, |s| {
        s.contains("Linux version 6.12") && s.contains(&command_line) && s.contains("Zone ranges:")
    });
    assert!(
        done,
        "early boot log incomplete after {BOOT_LIMIT:?}:\n{}",
        vm.serial
    );

    let e820 = printed_e820(&vm.serial);
    let expected: Vec<_> = expected_e820
        .iter()
        .map(|(first, last, kind)| (*first, *last, kind.to_string()))
        .collect();
    assert_eq!(e820, expected, "serial output:\n{}", vm.serial);
    let covered: u64 = e820.iter().map(|(first, last, _)| last - first + 1).sum();
    assert_eq!(
        covered,
        mem_mib * MIB,
        "e820 must cover exactly the configured memory"
    );
}

#[test]
#[ignore = "needs /dev/kvm and the guest kernel"]
fn kernel_boots_with_memory_below_the_gap() {
    assert_early_boot(
        512,
        &[
            (0, 0x9_fbff, "usable"),
            (0x9_fc00, 0xf_ffff, "reserved"),
            (0x10_0000, 0x1fff_ffff, "usable"),
        ],
    );
}

#[test]
#[ignore = "needs /dev/kvm and the guest kernel"]
fn kernel_boots_with_memory_above_4_gib() {
    // Same shape as the case below the gap on purpose: two cases of one check, differing only in
    // memory size and the e820 map the kernel must print.
    assert_early_boot(
        3584,
        &[
            (0, 0x9_fbff, "usable"),
            (0x9_fc00, 0xf_ffff, "reserved"),
            (0x10_0000, 0xbfff_ffff, "usable"),
            (0x1_0000_0000, 0x1_1fff_ffff, "usable"),
        ],
    );
}

#[test]
#[ignore = "needs /dev/kvm and the guest kernel"]
fn kernel_finds_every_vcpu() {
    for vcpus in [2u8, 4] {
        let _serial = ONE_BOOT_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut vm = boot(256, vcpus, &cmdline(&format!("smp-{vcpus}")));
        let allowing = format!("Allowing {vcpus} present CPUs plus 0 hotplug CPUs");
        let processors = format!("Processors: {vcpus}\n");
        let done = vm.wait_for(BOOT_LIMIT, |s| {
            s.contains(&allowing) && s.contains(&processors)
        });
        assert!(
            done,
            "{vcpus} vCPUs not reported after {BOOT_LIMIT:?}:\n{}",
            vm.serial
        );
        assert!(vm.serial.contains("Linux version 6.12"));
        for cpu in 1..vcpus {
            assert!(
                vm.serial.contains(&format!("Processor #{cpu}\n")),
                "{}",
                vm.serial
            );
        }
    }
}

#[test]
#[ignore = "needs /dev/kvm and the guest kernel"]
fn kernel_finds_the_initrd_where_the_zero_page_says() {
    let _serial = ONE_BOOT_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Content does not matter for the early log: the kernel reserves the range before unpacking.
    let initrd = common::scratch_dir("kernel-initrd").join("initrd.img");
    std::fs::write(&initrd, vec![0x5au8; 1_000_000]).unwrap();
    let extra = ["--initrd", initrd.to_str().unwrap()];
    let mut vm = boot_with(256, 1, &cmdline("initrd"), &extra);
    // Highest page-aligned start below 256 MiB: 0x10000000 - 1000000 rounded down to 4 KiB.
    let expected = "RAMDISK: [mem 0x0ff0b000-0x0fffffff]";
    let done = vm.wait_for(BOOT_LIMIT, |s| s.contains(expected));
    assert!(done, "no {expected:?} after {BOOT_LIMIT:?}:\n{}", vm.serial);
}
