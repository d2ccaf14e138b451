//! Seed inputs written in each target's input language: a few valid requests, packets and
//! register sequences for the fuzzer to start from. `tests/replay.rs` writes them to
//! fuzz/corpus/ (`--ignored`) and replays that corpus.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

use crate::driver::{queue_layout, OP_AVAIL_IDX, OP_DESC, OP_NOTIFY, OP_PUBLISH, OP_WRITE};
use crate::mmio;
use crate::vsock::{GUEST_CID, HOST_PORT, OP_HOST_CONNECT, OP_HOST_READ, OP_HOST_WRITE};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// A driver program: the start parameters, then operations.
pub struct Program(Vec<u8>);

impl Program {
    /// Every feature accepted, `queues` queues of 8 entries.
    pub fn start(queues: usize) -> Self {
        let mut bytes = vec![0u8; 8];
        bytes.extend(std::iter::repeat_n(4u8, queues));
        Self(bytes)
    }

    fn push16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// Descriptor `slot` of queue `q`: `len` bytes at DATA + `offset`.
    pub fn desc(mut self, q: u8, slot: u16, offset: u16, len: u16, flags: u16, next: u16) -> Self {
        self.0.extend_from_slice(&[OP_DESC, q]);
        self.push16(slot);
        self.0.push(0);
        self.push16(offset);
        self.0.push(0);
        self.push16(len);
        self.push16(flags);
        self.push16(next);
        self
    }

    pub fn publish(mut self, q: u8, head: u16) -> Self {
        self.0.extend_from_slice(&[OP_PUBLISH, q]);
        self.push16(head);
        self
    }

    /// Writes `bytes` (at most 255) at DATA + `offset`.
    pub fn write(mut self, offset: u16, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(&[OP_WRITE, 0]);
        self.push16(offset);
        self.0.push(bytes.len() as u8);
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn notify(mut self, q: u8) -> Self {
        self.0.extend_from_slice(&[OP_NOTIFY, q]);
        self
    }

    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

fn blk_request(request_type: u32, sector: u64, data_flags: u16, data_len: u16) -> Vec<u8> {
    let mut header = request_type.to_le_bytes().to_vec();
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&sector.to_le_bytes());
    Program::start(1)
        .write(0, &header)
        .desc(0, 0, 0, 16, NEXT, 1)
        .desc(0, 1, 0x100, data_len, data_flags | NEXT, 2)
        .desc(0, 2, 0x4000, 1, WRITE, 0)
        .publish(0, 0)
        .notify(0)
        .into_bytes()
}

pub fn blk() -> Vec<Vec<u8>> {
    vec![
        blk_request(0, 1, WRITE, 1024),
        blk_request(1, 2, 0, 512),
        blk_request(4, 0, 0, 0),
        blk_request(8, 0, WRITE, 20),
        Program::start(1)
            .raw(&[OP_AVAIL_IDX, 0, 0x40, 0])
            .notify(0)
            .into_bytes(),
    ]
}

const VNET_HDR: usize = 12;

pub fn net() -> Vec<Vec<u8>> {
    let mut frame = vec![0u8; VNET_HDR];
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    frame.extend(std::iter::repeat_n(0xab, 46));
    let tx = Program::start(2)
        .write(0x1000, &frame)
        .desc(1, 0, 0x1000, VNET_HDR as u16, NEXT, 1)
        .desc(
            1,
            1,
            0x1000 + VNET_HDR as u16,
            (frame.len() - VNET_HDR) as u16,
            0,
            0,
        )
        .publish(1, 0)
        .notify(1)
        .into_bytes();
    let mut tap_frame = vec![crate::net::OP_FRAME];
    tap_frame.extend_from_slice(&60u16.to_le_bytes());
    tap_frame.push(0);
    tap_frame.extend(std::iter::repeat_n(0x42, 60));
    let rx = Program::start(2)
        .desc(0, 0, 0x2000, 2048, WRITE, 0)
        .desc(0, 1, 0x3000, 8, WRITE | NEXT, 2)
        .desc(0, 2, 0x3100, 4096, WRITE, 0)
        .publish(0, 0)
        .publish(0, 1)
        .notify(0)
        .raw(&tap_frame)
        .raw(&tap_frame)
        .into_bytes();
    vec![tx, rx]
}

/// A vsock packet header as the guest sends it.
fn vsock_header(src_port: u32, dst_port: u32, op: u16, len: u32, flags: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(&u64::from(GUEST_CID).to_le_bytes());
    h.extend_from_slice(&2u64.to_le_bytes());
    h.extend_from_slice(&src_port.to_le_bytes());
    h.extend_from_slice(&dst_port.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&op.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&65536u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

/// RX buffers 0..4 on queue 0, each 4 KiB.
fn vsock_rx(mut p: Program) -> Program {
    for slot in 0..4u16 {
        p = p
            .desc(0, slot, 0x8000 + slot * 0x1000, 4096, WRITE, 0)
            .publish(0, slot);
    }
    p.notify(0)
}

/// TX packet in descriptor `slot` of queue 1 at DATA + `offset`.
fn vsock_tx(p: Program, slot: u16, offset: u16, packet: &[u8]) -> Program {
    p.write(offset, packet)
        .desc(1, slot, offset, packet.len() as u16, 0, 0)
        .publish(1, slot)
        .notify(1)
}

pub fn vsock() -> Vec<Vec<u8>> {
    let mut rw = vsock_header(5000, HOST_PORT, 5, 5, 0);
    rw.extend_from_slice(b"hello");
    let mut host_write = vec![OP_HOST_WRITE];
    host_write.extend_from_slice(&4u16.to_le_bytes());
    host_write.extend_from_slice(b"pong");
    host_write.push(0);
    let guest_connects = vsock_rx(Program::start(3));
    let guest_connects = vsock_tx(
        guest_connects,
        0,
        0,
        &vsock_header(5000, HOST_PORT, 1, 0, 0),
    );
    let guest_connects = vsock_tx(guest_connects, 1, 0x100, &rw)
        .raw(&host_write)
        .raw(&[OP_HOST_READ, 0]);
    let guest_connects = vsock_tx(
        guest_connects,
        2,
        0x200,
        &vsock_header(5000, HOST_PORT, 4, 0, 3),
    );

    let line = b"CONNECT 52\n";
    let mut connect = vec![OP_HOST_CONNECT, line.len() as u8];
    connect.extend_from_slice(line);
    let host_connects = vsock_rx(Program::start(3)).raw(&connect);
    let host_connects =
        vsock_tx(host_connects, 0, 0, &vsock_header(52, 1 << 30, 2, 0, 0)).raw(&host_write);
    vec![guest_connects.into_bytes(), host_connects.into_bytes()]
}

/// An MMIO register write (4 bytes) in the target's encoding.
fn mmio_write(out: &mut Vec<u8>, offset: u16, value: u32) {
    out.extend_from_slice(&[
        mmio::OP_WRITE,
        1,
        (offset & 0xfc) as u8,
        (offset >> 8) as u8,
        0,
    ]);
    out.extend_from_slice(&u64::from(value).to_le_bytes());
}

fn mmio_read(out: &mut Vec<u8>, offset: u16) {
    out.extend_from_slice(&[
        mmio::OP_READ,
        1,
        (offset & 0xfc) as u8,
        (offset >> 8) as u8,
        0,
    ]);
}

pub fn mmio() -> Vec<Vec<u8>> {
    let mut probe = Vec::new();
    for offset in [
        0, 4, 8, 0xc, 0x10, 0x34, 0x44, 0x60, 0x70, 0xfc, 0x100, 0x108,
    ] {
        mmio_read(&mut probe, offset);
    }
    let (desc, avail, used) = queue_layout(0);
    let mut bring_up = Vec::new();
    mmio_write(&mut bring_up, 0x70, 1);
    mmio_write(&mut bring_up, 0x70, 3);
    mmio_write(&mut bring_up, 0x14, 1);
    mmio_read(&mut bring_up, 0x10);
    mmio_write(&mut bring_up, 0x24, 1);
    mmio_write(&mut bring_up, 0x20, 1);
    mmio_write(&mut bring_up, 0x70, 0xb);
    mmio_write(&mut bring_up, 0x30, 0);
    mmio_write(&mut bring_up, 0x38, 8);
    mmio_write(&mut bring_up, 0x80, desc as u32);
    mmio_write(&mut bring_up, 0x90, avail as u32);
    mmio_write(&mut bring_up, 0xa0, used as u32);
    mmio_write(&mut bring_up, 0x44, 1);
    mmio_write(&mut bring_up, 0x70, 0xf);
    mmio_write(&mut bring_up, 0x50, 0);
    mmio_read(&mut bring_up, 0x60);
    mmio_write(&mut bring_up, 0x64, 1);
    mmio_write(&mut bring_up, 0x70, 0);
    vec![probe, bring_up]
}

/// A container spec like the shim sends: namespaces, mounts, masked paths, limits, devices,
/// capabilities and a seccomp profile.
pub const SPEC: &str = r#"{"ociVersion":"1.0.2","root":{"path":"/rootfs","readonly":true},"hostname":"box","process":{"terminal":false,"args":["/bin/sh","-c","true"],"cwd":"/","env":["PATH=/bin:/sbin"],"user":{"uid":1000,"gid":1000,"additionalGids":[10]},"capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],"noNewPrivileges":true},"mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755","size=65536k"]},{"destination":"/data","type":"bind","source":"/srv","options":["rbind","ro"]}],"linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"}],"maskedPaths":["/proc/kcore"],"readonlyPaths":["/proc/sys"],"resources":{"memory":{"limit":67108864},"cpu":{"shares":512},"pids":{"limit":64},"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}]},"devices":[{"path":"/dev/fuse","type":"c","major":10,"minor":229}],"seccomp":{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["ptrace"],"action":"SCMP_ACT_ERRNO","errnoRet":1},{"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":8,"op":"SCMP_CMP_NE"}]}]}}}"#;

/// A spec with a user namespace and id mappings.
pub const USER_NS_SPEC: &str = r#"{"ociVersion":"1.0.2","root":{"path":"/rootfs"},"process":{"args":["/bin/sh"],"cwd":"/","user":{"uid":0,"gid":0}},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}],"linux":{"namespaces":[{"type":"user"},{"type":"mount"},{"type":"pid"}],"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],"gidMappings":[{"containerID":0,"hostID":100000,"size":65536}]}}"#;

pub fn oci_spec() -> Vec<Vec<u8>> {
    [(1u8, SPEC), (0, SPEC), (0, USER_NS_SPEC)]
        .iter()
        .map(|(flags, json)| {
            let mut seed = vec![*flags];
            seed.extend_from_slice(json.as_bytes());
            seed
        })
        .collect()
}

/// Request bodies, one per kind of operation the dispatch target checks, and a few others.
pub fn requests() -> Vec<Vec<u8>> {
    let create = format!(
        r#"{{"v":1,"id":1,"op":"create_container","args":{{"container_id":"c1","spec":{SPEC},"rootfs":{{"type":"block_device","device":"/dev/vdb"}}}}}}"#
    );
    vec![
        create.into_bytes(),
        br#"{"v":1,"id":2,"op":"exec","args":{"container_id":"c1","exec_id":"e1","process":{"args":["/bin/ls","-l"],"cwd":"/tmp","env":["A=b"],"user":{"uid":0,"gid":0}}}}"#.to_vec(),
        br#"{"v":1,"id":3,"op":"update_resources","args":{"container_id":"c1","resources":{"memory":{"limit":1048576,"swap":2097152},"cpu":{"quota":50000,"period":100000}}}}"#.to_vec(),
        br#"{"v":1,"id":4,"op":"signal","args":{"container_id":"c1","signal":9,"all":true}}"#.to_vec(),
        br#"{"v":1,"id":5,"op":"write_stdin","args":{"container_id":"c1","data":[104,105]}}"#.to_vec(),
        br#"{"v":1,"id":6,"op":"version"}"#.to_vec(),
    ]
}

pub fn agent_dispatch() -> Vec<Vec<u8>> {
    requests()
}

/// Requests and responses framed back to back, as on a connection.
pub fn agent_frame() -> Vec<Vec<u8>> {
    let mut stream = Vec::new();
    for body in requests().iter().skip(1).chain(
        [
            br#"{"v":1,"id":6,"ok":{"pid":42}}"#.to_vec(),
            br#"{"v":1,"id":7,"error":{"code":"not_found","message":"no container c9"}}"#.to_vec(),
        ]
        .iter(),
    ) {
        stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
        stream.extend_from_slice(body);
    }
    vec![stream, vec![0, 0, 0, 2, b'{', b'}', 0xff, 0xff]]
}

/// Every target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("blk", blk()),
        ("vsock", vsock()),
        ("mmio", mmio()),
        ("net", net()),
        ("agent_frame", agent_frame()),
        ("agent_dispatch", agent_dispatch()),
        ("oci_spec", oci_spec()),
    ]
}
