#!/usr/bin/env python3
"""Boot the guest kernel under QEMU/KVM and measure how far it gets (a development tool).

Used to study the guest kernel on hosts whose KVM emulates guest ring 0 (PVM hosts, see
docs/pvm-host-boot.md) before our own VMM could boot it. It prints every serial line with the
wall time since QEMU started, the time of each boot milestone, and on a KVM emulation failure
the kernel function and instruction where the guest stopped. With --profile it samples the
guest's RIP through the QEMU monitor and prints the kernel functions where the time went.

    guest-kernel/tools/qemu-boot.py --initrd /var/cache/rust-vm/test-initramfs.cpio --profile
"""
import argparse
import bisect
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

# Hides what the PVM host's instruction emulator cannot run (see docs/pvm-host-boot.md).
EMULATOR_SAFE_CPU = ("qemu64,-cx16,-smap,-smep,-popcnt,-pcid,-invpcid,-fsgsbase,-rdrand,"
                     "-rdseed,-xsave,-avx,-movbe,-sse4.1,-sse4.2,-aes,-pclmulqdq,-abm,-umip")
EMULATOR_SAFE_CMDLINE = ("noxsave nokaslr clearcpuid=smap,smep,popcnt "
                         "no_int3_selftest syscall_pf_fixup")
MILESTONES = [
    ("banner", re.compile(r"Linux version 6\.")),
    ("command line", re.compile(r"Command line:")),
    ("alternatives patched", re.compile(r"Freeing SMP alternatives memory|SMP alternatives:")),
    ("CPUs up", re.compile(r"smp: Brought up")),
    ("initramfs unpacked", re.compile(r"Freeing initrd memory")),
    ("initcalls done (free initmem)", re.compile(r"Freeing unused kernel image \(initmem\)")),
    ("/init started", re.compile(r"Run /init as init process")),
    ("marker", re.compile(r"RUST-VM-INIT-REACHED")),
]


class Symbols:
    def __init__(self, vmlinux):
        out = subprocess.run(["nm", "-n", vmlinux], capture_output=True, text=True, check=True)
        self.addrs, self.names = [], []
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tTwW":
                self.addrs.append(int(parts[0], 16))
                self.names.append(parts[2])

    def lookup(self, addr):
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0:
            return hex(addr)
        return f"{self.names[i]}+{addr - self.addrs[i]:#x}"


def disassemble(vmlinux, rip):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={rip:#x}",
                          f"--stop-address={rip + 16:#x}", vmlinux],
                         capture_output=True, text=True)
    lines = [l.strip() for l in out.stdout.splitlines() if re.match(r"\s*ffffffff[0-9a-f]+:", l)]
    return lines[0] if lines else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default=os.environ.get("RUST_VM_VMLINUX", "/var/lib/rust-vm/vmlinux"))
    ap.add_argument("--initrd", default=None)
    ap.add_argument("--cpu", default=EMULATOR_SAFE_CPU)
    ap.add_argument("--cmdline", default=None, help="full command line (default: console + emulator-safe options)")
    ap.add_argument("--extra", default="", help="appended to the command line")
    ap.add_argument("--mem", default="128")
    ap.add_argument("--smp", default="1")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--profile", action="store_true", help="sample guest RIP via the QEMU monitor")
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    cmdline = args.cmdline or f"console=ttyS0 earlyprintk=serial,ttyS0 reboot=t {EMULATOR_SAFE_CMDLINE}"
    cmdline = f"{cmdline} {args.extra}".strip()
    syms = Symbols(args.kernel)
    tmp = tempfile.mkdtemp(prefix="qemu-boot-")
    mon_path = os.path.join(tmp, "mon.sock")
    qemu = ["qemu-system-x86_64", "-M", "microvm,acpi=off,rtc=off", "-accel", "kvm",
            "-cpu", args.cpu, "-m", args.mem, "-smp", args.smp, "-nographic", "-nodefaults",
            "-no-reboot", "-serial", "stdio", "-monitor", f"unix:{mon_path},server,nowait",
            "-kernel", args.kernel, "-append", cmdline]
    if args.initrd:
        qemu += ["-initrd", args.initrd]
    print(f"# {' '.join(qemu)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    mon = None
    samples = Counter()
    timeline = {}
    reached = {}
    tail = []
    buf = b""
    next_sample = t0
    while True:
        now = time.monotonic()
        if now - t0 > args.timeout:
            print(f"# timeout after {args.timeout:.0f} s", flush=True)
            proc.kill()
            break
        ready, _, _ = select.select([proc.stdout], [], [], args.interval)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace").rstrip("\r")
                t = time.monotonic() - t0
                print(f"[{t:7.2f}] {text}", flush=True)
                tail.append(text)
                for name, pat in MILESTONES:
                    if name not in reached and pat.search(text):
                        reached[name] = t
                if "marker" in reached and args.timeout > t + 2:
                    args.timeout = t + 2  # the guest is done; stop soon after
        if args.profile and time.monotonic() >= next_sample:
            next_sample = time.monotonic() + args.interval
            try:
                if mon is None:
                    mon = socket.socket(socket.AF_UNIX)
                    mon.connect(mon_path)
                    mon.settimeout(2)
                    _read_prompt(mon)
                mon.sendall(b"info registers\n")
                m = re.search(rb"RIP=([0-9a-f]{16})", _read_prompt(mon))
                if m:
                    name = syms.lookup(int(m.group(1), 16)).split("+")[0]
                    samples[name] += 1
                    timeline.setdefault(int(time.monotonic() - t0), Counter())[name] += 1
            except OSError:
                mon = None
    proc.wait()
    shutil.rmtree(tmp, ignore_errors=True)

    print("\n# milestones (wall seconds since QEMU start)")
    for name, _ in MILESTONES:
        print(f"#   {name:32s} {reached[name]:7.2f}" if name in reached else f"#   {name:32s}   not reached")
    text = "\n".join(tail)
    m = re.search(r"RIP=([0-9a-f]{16})", text)
    if "emulation failure" in text and m:
        rip = int(m.group(1), 16)
        when = "after the marker (the reboot path; expected)" if "marker" in reached else "stopped"
        print(f"# {when}: KVM emulation failure at {rip:#x} {syms.lookup(rip)}: {disassemble(args.kernel, rip)}")
    if samples:
        total = sum(samples.values())
        print(f"\n# RIP samples: {total} (every {args.interval * 1000:.0f} ms); top functions")
        for name, n in samples.most_common(args.top):
            print(f"#   {100.0 * n / total:5.1f}%  {n:5d}  {name}")
        print("\n# per second: the three functions sampled most")
        for sec in sorted(timeline):
            top = ", ".join(f"{name} {n}" for name, n in timeline[sec].most_common(3))
            print(f"#   {sec:4d}s  {top}")


def _read_prompt(sock):
    data = b""
    while not data.endswith(b"(qemu) "):
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("monitor closed")
        data += chunk
    return data


if __name__ == "__main__":
    sys.exit(main())
