//! The device cgroup: cgroup v2 has no `devices.allow` file, so `linux.resources.devices` becomes
//! a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the container's cgroup, which the kernel
//! runs on every open and mknod of a device node in it (Documentation/admin-guide/cgroup-v2.rst,
//! "Device controller").
//!
//! Semantics are cgroup v1's, which the OCI spec was written for: a new cgroup may use every
//! device, then each rule in order allows or denies what it matches, so the last matching rule
//! decides. The devices the agent itself creates in every container's /dev (null, zero, full,
//! random, urandom, tty, console, ptmx, the pts) stay allowed whatever the rules say, as with
//! runc. Fifo rules (`p`) are ignored: the device cgroup does not see fifos.
//!
//! The program is a dozen instructions per rule, emitted here rather than through a BPF
//! toolchain or library: it needs no maps and no helpers, and the static agent stays free of
//! libbpf.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::SpecError;

/// `bpf_cgroup_dev_ctx.access_type` bits (include/uapi/linux/bpf.h): access in the upper half.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// ... and the device type in the lower half.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

/// One rule, as the program tests it. `None` matches anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// The accesses the rule covers: a request matches when it asks for no more than these.
    pub access: u32,
}

impl DeviceRule {
    const fn allow_char(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: Some(DEV_CHAR),
            major: Some(major),
            minor,
            access: ACC_ALL,
        }
    }
}

/// What the agent creates in every container's /dev (rootfs.rs), plus the terminal devices.
const AGENT_DEVICES: [DeviceRule; 9] = [
    DeviceRule::allow_char(1, Some(3)), // null
    DeviceRule::allow_char(1, Some(5)), // zero
    DeviceRule::allow_char(1, Some(7)), // full
    DeviceRule::allow_char(1, Some(8)), // random
    DeviceRule::allow_char(1, Some(9)), // urandom
    DeviceRule::allow_char(5, Some(0)), // tty
    DeviceRule::allow_char(5, Some(1)), // console
    DeviceRule::allow_char(5, Some(2)), // ptmx
    DeviceRule::allow_char(136, None),  // pts/*
];

/// The spec's rules, checked, in order. `field` is the JSON path of the list.
pub fn rules_from_spec(
    devices: &[LinuxDeviceCgroup],
    field: &str,
) -> Result<Vec<DeviceRule>, SpecError> {
    let mut rules = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        let at = |what: &str| format!("{field}[{i}].{what}");
        let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => continue,
        };
        let number = |value: Option<i64>, what: &str| match value {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| SpecError::new(at(what), format!("{n} is not a device number"))),
        };
        let mut access = 0;
        for c in d.access().as_deref().unwrap_or("rwm").chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                other => {
                    return Err(SpecError::new(
                        at("access"),
                        format!("{other:?} is not one of r, w, m"),
                    ))
                }
            };
        }
        rules.push(DeviceRule {
            allow: d.allow(),
            kind,
            major: number(d.major(), "major")?,
            minor: number(d.minor(), "minor")?,
            access: if access == 0 { ACC_ALL } else { access },
        });
    }
    Ok(rules)
}

/// One eBPF instruction (struct bpf_insn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes used (include/uapi/linux/bpf_common.h, bpf.h).
pub const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
pub const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
pub const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
pub const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
pub const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
pub const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
pub const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
pub const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

impl Insn {
    /// The kernel's layout: code, dst (low nibble) and src (high nibble), off, imm.
    pub fn encode(&self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }
}

/// The program for `spec_rules` (then the agent's own devices). Registers after the prologue:
/// r2 the device type, r3 the access asked for, r4 the major, r5 the minor; r0 the verdict
/// (1 allow, 0 deny). Rules are tested last first and the first match returns, which is "the
/// last matching rule decides"; a rule that matches everything ends the program.
pub fn program(spec_rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    let rules = spec_rules.iter().chain(AGENT_DEVICES.iter()).rev();
    for rule in rules {
        let mut block = Vec::new();
        // Each test jumps to the next rule: past the rest of this block, patched below.
        if let Some(kind) = rule.kind {
            block.push(insn(JNE_K, 2, 0, 0, kind as i32));
        }
        if rule.access != ACC_ALL {
            block.push(insn(MOV32_X, 1, 3, 0, 0));
            block.push(insn(AND32_K, 1, 0, 0, rule.access as i32));
            block.push(insn(JNE_X, 1, 3, 0, 0));
        }
        if let Some(major) = rule.major {
            block.push(insn(JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push(insn(JNE_K, 5, 0, 0, minor as i32));
        }
        let catch_all = block.is_empty();
        block.push(insn(MOV64_K, 0, 0, 0, i32::from(rule.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JNE_X {
                ins.off = (len - i - 1) as i16;
            }
        }
        prog.extend(block);
        if catch_all {
            return prog;
        }
    }
    // No rule matched: cgroup v1's starting point, every device.
    prog.push(insn(MOV64_K, 0, 0, 0, 1));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

// bpf(2) commands, program and attach types (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel takes a shorter attr.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a repr(C) prefix of union bpf_attr for `cmd`, valid for the call; the
    // pointers inside it point at buffers that outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Loads `prog`: first without a verifier log (a log too small for what the verifier writes
/// fails the load with ENOSPC), and on a refusal once more with a large log, to quote it.
fn load(prog: &[Insn]) -> io::Result<OwnedFd> {
    let code: Vec<u8> = prog.iter().flat_map(Insn::encode).collect();
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let err = match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a new descriptor nothing else owns.
        Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => e,
    };
    let mut log = vec![0u8; 256 * 1024];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
        // Loaded the second time: report the first refusal all the same.
        // SAFETY: a new descriptor nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let verifier = String::from_utf8_lossy(&log[..end]);
    // The verifier's last lines say why.
    let tail: Vec<&str> = verifier.trim().lines().rev().take(4).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(if tail.is_empty() {
        io::Error::new(err.kind(), format!("loading the device program: {err}"))
    } else {
        io::Error::new(
            err.kind(),
            format!(
                "loading the device program: {err}; verifier: {}",
                tail.join(" / ")
            ),
        )
    })
}

/// Loads `prog` and attaches it to the cgroup directory `cgroup`, replacing the program there
/// (an update). The attachment keeps the program alive; its fd is closed on return.
pub fn attach(cgroup: &Path, prog: &[Insn]) -> io::Result<()> {
    let prog_fd = load(prog)?;
    let dir = std::fs::File::open(cgroup)?;
    let mut attach = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attach)
        .map_err(|e| io::Error::new(e.kind(), format!("attaching the device program: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs `prog` as the kernel would for one request: the subset of eBPF [`program`] emits.
    fn run(prog: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = prog[pc];
            let (d, s) = (i.dst as usize, i.src as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(s, 1, "loads only from the context");
                    r[d] = u64::from(ctx[i.off as usize / 4]);
                }
                AND32_K => r[d] = u64::from(r[d] as u32 & i.imm as u32),
                RSH32_K => r[d] = u64::from((r[d] as u32) >> i.imm),
                MOV32_X => r[d] = u64::from(r[s] as u32),
                MOV64_K => r[d] = i.imm as i64 as u64,
                JNE_K if r[d] != i.imm as i64 as u64 => pc += i.off as usize,
                JNE_X if r[d] != r[s] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                other => panic!("opcode {other:#x} not emitted"),
            }
        }
    }

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: i64,
        minor: i64,
        access: &str,
    ) -> LinuxDeviceCgroup {
        LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .major(major)
            .minor(minor)
            .access(access)
            .build()
            .expect("rule")
    }

    fn deny_all() -> LinuxDeviceCgroup {
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .expect("rule")
    }

    fn prog(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
        program(&rules_from_spec(rules, "linux.resources.devices").expect("valid"))
    }

    #[test]
    fn deny_all_then_allow_keeps_only_what_is_allowed_and_the_agent_devices() {
        let p = prog(&[deny_all(), rule(true, LinuxDeviceType::B, 254, 1, "r")]);
        // The VM's first disk: denied for every access, mknod included.
        for access in [ACC_READ, ACC_WRITE, ACC_MKNOD, ACC_READ | ACC_WRITE] {
            assert_eq!(run(&p, DEV_BLOCK, access, 254, 0), 0, "vda access {access}");
        }
        // The allowed one, for read only.
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 254, 1), 1);
        assert_eq!(run(&p, DEV_BLOCK, ACC_WRITE, 254, 1), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ | ACC_WRITE, 254, 1), 0);
        // Same numbers, other type.
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 254, 1), 0);
        // What the agent creates stays usable.
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 136, 7), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 4), 0, "/dev/port");
    }

    #[test]
    fn the_last_matching_rule_decides() {
        let p = prog(&[
            rule(true, LinuxDeviceType::C, 10, -1, "rwm"),
            rule(false, LinuxDeviceType::C, 10, 200, "w"),
        ]);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 10, 200), 1, "read not denied");
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 10, 200), 0);
        assert_eq!(
            run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 10, 200),
            1,
            "rw is not within w"
        );
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 10, 229), 1);
    }

    #[test]
    fn no_rules_allow_every_device_as_a_new_v1_cgroup_does() {
        let p = prog(&[]);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 254, 0), 1);
        let p = prog(&[deny_all()]);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 254, 0), 0);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1, "null");
    }

    #[test]
    fn a_catch_all_rule_ends_the_program() {
        let allow_all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .build()
            .expect("rule");
        let p = prog(&[deny_all(), allow_all.clone()]);
        // What came before the catch-all is never emitted; nothing follows it.
        assert_eq!(p, prog(&[allow_all]));
        assert_eq!(p.last().map(|i| i.code), Some(EXIT));
        assert_eq!(p[p.len() - 2], insn(MOV64_K, 0, 0, 0, 1));
        assert_eq!(run(&p, DEV_BLOCK, ACC_MKNOD, 254, 0), 1);
    }

    #[test]
    fn bad_rules_name_the_field() {
        let err = rules_from_spec(
            &[rule(true, LinuxDeviceType::B, 8, 0, "rx")],
            "linux.resources.devices",
        )
        .expect_err("x");
        assert_eq!(err.field, "linux.resources.devices[0].access");
        let err = rules_from_spec(
            &[rule(true, LinuxDeviceType::B, -5, 0, "r")],
            "linux.resources.devices",
        )
        .expect_err("negative");
        assert_eq!(err.field, "linux.resources.devices[0].major");
        let fifo = rules_from_spec(&[rule(false, LinuxDeviceType::P, 1, 1, "r")], "d").expect("ok");
        assert!(fifo.is_empty(), "fifo rules do not reach the device cgroup");
    }

    /// The host kernel's verifier takes what [`program`] emits (the guest kernel runs the same
    /// verifier): a deny-all list with rules of every shape.
    #[test]
    #[ignore = "needs root (bpf(2) BPF_PROG_LOAD)"]
    fn the_kernel_verifier_accepts_the_program() {
        let p = prog(&[
            deny_all(),
            rule(true, LinuxDeviceType::B, 254, 1, "r"),
            rule(true, LinuxDeviceType::C, 10, -1, "rw"),
            rule(false, LinuxDeviceType::A, -1, -1, "m"),
        ]);
        load(&p).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn instructions_encode_in_the_kernel_layout() {
        let i = insn(JNE_X, 1, 3, 2, -1);
        assert_eq!(i.encode(), [0x5d, 0x31, 2, 0, 0xff, 0xff, 0xff, 0xff]);
    }
}
