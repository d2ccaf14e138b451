#!/usr/bin/env python3
"""End-to-end run of the guest kernel under rust-vm-vmm, with wall times (a development tool).

Two runs, each a fresh VM:
  1. marker: the test initramfs (guest-kernel/test-initramfs.sh); waits for RUST-VM-INIT-REACHED.
  2. agent:  an initramfs whose /init is the static rust-vm agent, a read-only ext4 image with
     busybox as virtio-blk, and the vsock device. Over the VMM's vsock Unix socket it sends `ping`,
     then creates a container running `echo`, attaches its stdout, starts it, waits for exit 0,
     removes it and shuts the agent down.

Prints the time of each step from the VMM's start. Exit status 0 only if every step passed.
On hosts whose KVM emulates guest ring 0 (PVM) it uses the command line of docs/pvm-host-boot.md.

    guest-kernel/tools/vm-e2e.py --vmm target/debug/rust-vm-vmm \\
        --agent target/x86_64-unknown-linux-gnu/release/rust-vm-agent
"""
import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

PVM_HOST_CMDLINE = "clearcpuid=xsave,smap,smep,popcnt no_int3_selftest syscall_pf_fixup"
BASE_CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0 reboot=k panic=1"
MARKER = "RUST-VM-INIT-REACHED"


def is_pvm_host():
    """KVM without VMX/SVM: the kvm_pvm module is there, or the CPU flags lack vmx and svm."""
    if os.path.isdir("/sys/module/kvm_pvm"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
    except OSError:
        return False
    return "vmx" not in flags and "svm" not in flags


class Vm:
    """rust-vm-vmm as a child process; serial lines are collected with their times."""

    def __init__(self, args, cmdline, initrd, extra):
        cmd = [args.vmm, "--kernel", args.kernel, "--initrd", initrd, "--cmdline", cmdline,
               "--mem-mib", str(args.mem), "--vcpus", str(args.vcpus),
               "--cpu-template", "conservative"] + extra
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self.cond:
                self.lines.append((time.monotonic() - self.t0, line))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def now(self):
        return time.monotonic() - self.t0

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, line in self.lines:
                    if text in line:
                        return t
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    return None
                self.cond.wait(min(left, 0.5))

    def stop(self, grace):
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        return self.proc.returncode

    def tail(self, n=25):
        with self.cond:
            return "\n".join(line for _, line in self.lines[-n:])


def vsock_connect(path, port, deadline):
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(120)
            s.connect(path)
            s.sendall(f"CONNECT {port}\n".encode())
            reply = b""
            while not reply.endswith(b"\n"):
                c = s.recv(1)
                if not c:
                    raise OSError("connection closed before OK")
                reply += c
            if reply.startswith(b"OK "):
                return s
            raise OSError(f"unexpected reply {reply!r}")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def call(sock, op, rid, args=None):
    body = {"v": 1, "id": rid, "op": op}
    if args is not None:
        body["args"] = args
    data = json.dumps(body).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)
    (n,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
    reply = json.loads(sock.recv(n, socket.MSG_WAITALL))
    if "error" in reply:
        raise RuntimeError(f"{op}: {reply['error']}")
    return reply["ok"]


def echo_spec(text):
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
            "args": ["/bin/echo", text],
            "env": ["PATH=/bin"],
            "capabilities": {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "e2e",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        ],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]},
    }


def make_cpio(root, out):
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    files = b"\n".join(sorted(files.split(b"\n"))).strip() + b"\n"
    with open(out, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=root,
                       input=files, stdout=f, check=True)


def step(name, t):
    print(f"  {name:40s} {t:7.2f} s" if t is not None else f"  {name:40s}  FAILED", flush=True)
    return t is not None


def run_marker(args, cmdline, work):
    initrd = os.path.join(work, "test-initramfs.cpio")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([os.path.join(here, "..", "test-initramfs.sh"), initrd], check=True,
                   stdout=subprocess.DEVNULL)
    print("marker run (test initramfs):")
    vm = Vm(args, cmdline, initrd, [])
    ok = step("banner 'Linux version 6.12'", vm.wait_for("Linux version 6.12", args.timeout))
    ok = step("/init started", vm.wait_for("Run /init as init process", args.timeout)) and ok
    ok = step(MARKER, vm.wait_for(MARKER, args.timeout)) and ok
    rc = vm.stop(30)
    print(f"  VMM exit status: {rc}")
    if not ok:
        print(vm.tail())
    return ok and rc == 0


def run_agent(args, cmdline, work):
    root = os.path.join(work, "initramfs")
    for d in ("dev", "proc", "sys", "run", "tmp"):
        os.makedirs(os.path.join(root, d))
    shutil.copy(args.agent, os.path.join(root, "init"))
    os.mknod(os.path.join(root, "dev", "console"), 0o600 | 0o020000, os.makedev(5, 1))
    initrd = os.path.join(work, "agent-initramfs.cpio")
    make_cpio(root, initrd)
    rootfs = os.path.join(work, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    for d in ("proc", "dev", "sys", "tmp"):
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy(args.busybox, os.path.join(rootfs, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "echo"))
    image = os.path.join(work, "rootfs.ext4")
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-d", rootfs, image], check=True)
    uds = os.path.join(work, "vsock.sock")

    print(f"agent run (agent initramfs {os.path.getsize(initrd) >> 10} KiB, uncompressed):")
    vm = Vm(args, cmdline, initrd, ["--vsock-cid", "3", "--vsock-uds", uds,
                                    "--block", f"{image},ro"])
    ok = False
    try:
        sock = vsock_connect(uds, 1024, time.monotonic() + args.timeout)
        step("agent connected over vsock", vm.now())
        call(sock, "ping", 1)
        step("ping answered", vm.now())
        text = "hello from a container in a rust-vm guest"
        call(sock, "create_container", 2, {
            "container_id": "e2e", "spec": echo_spec(text), "terminal": False, "stdin": False,
            "rootfs": {"type": "block_device", "device": "/dev/vda", "fstype": "ext4",
                       "readonly": True}})
        step("container created", vm.now())
        out_sock = vsock_connect(uds, 1024, time.monotonic() + 30)
        call(out_sock, "attach", 1, {"container_id": "e2e", "stream": "stdout"})
        call(sock, "start", 3, {"container_id": "e2e"})
        status = call(sock, "wait", 4, {"container_id": "e2e"})
        step(f"container exited (exit_code {status.get('exit_code')})", vm.now())
        out_sock.settimeout(10)
        out = b""
        while not out.endswith(b"\n"):
            chunk = out_sock.recv(4096)
            if not chunk:
                break
            out += chunk
        print(f"  container stdout: {out!r}")
        call(sock, "remove_container", 5, {"container_id": "e2e", "force": False})
        call(sock, "shutdown", 6)
        step("agent shut down", vm.now())
        ok = status.get("exit_code") == 0 and out.decode().strip() == text
    except (OSError, RuntimeError, ValueError, struct.error) as e:
        print(f"  failed: {e}")
    rc = vm.stop(20)
    print(f"  VMM exit status: {rc if rc is not None else 'still running after shutdown (killed)'}")
    if not ok:
        print(vm.tail())
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--agent", help="static rust-vm-agent; without it only the marker run")
    ap.add_argument("--kernel", default=os.environ.get("RUST_VM_VMLINUX", "/var/lib/rust-vm/vmlinux"))
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--vcpus", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--pvm-host", choices=["auto", "yes", "no"], default="auto",
                    help="add the PVM-host boot options (auto: when kvm_pvm is loaded)")
    args = ap.parse_args()
    pvm = is_pvm_host() if args.pvm_host == "auto" else args.pvm_host == "yes"
    cmdline = f"{BASE_CMDLINE} {PVM_HOST_CMDLINE}" if pvm else BASE_CMDLINE
    print(f"kernel {args.kernel}, {args.vcpus} vCPU(s), {args.mem} MiB; command line: {cmdline}")
    work = tempfile.mkdtemp(prefix="vm-e2e-")
    try:
        ok = run_marker(args, cmdline, work)
        if args.agent:
            ok = run_agent(args, cmdline, work) and ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
