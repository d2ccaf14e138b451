//! virtio-vsock and its muxer: TX packets and RX buffers from a hostile driver, and host peers
//! driven by the input: clients on the main socket sending `CONNECT` lines, and a listener on
//! host port 1024 for guest-initiated connections, each writing, reading and closing at will.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use vmm::devices::virtio::vsock::{port_path, Vsock, VsockDeviceConfig};

use crate::driver::{Driver, Looped, DRIVER_OPS};
use crate::input::Input;

pub const GUEST_CID: u32 = 3;
/// The host port with a listener behind it.
pub const HOST_PORT: u32 = 1024;
/// Host streams the harness keeps open at most.
const MAX_STREAMS: usize = 16;

pub const OP_HOST_CONNECT: u8 = DRIVER_OPS;
pub const OP_HOST_WRITE: u8 = DRIVER_OPS + 1;
pub const OP_HOST_CLOSE: u8 = DRIVER_OPS + 2;
pub const OP_HOST_READ: u8 = DRIVER_OPS + 3;
const OPS: u8 = DRIVER_OPS + 4;

struct State {
    driver: Driver,
    vsock: Looped<Vsock>,
    dir: PathBuf,
    uds_path: PathBuf,
    port_listener: UnixListener,
    streams: Vec<UnixStream>,
    scratch: Vec<u8>,
}

impl State {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        remove_stale_dirs(&std::env::temp_dir());
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the vsock sockets");
        let uds_path = dir.join("v.sock");
        let config = VsockDeviceConfig {
            guest_cid: GUEST_CID,
            uds_path: uds_path.clone(),
        };
        let vsock = Vsock::new(&config).expect("a vsock device");
        let port_listener =
            UnixListener::bind(port_path(&uds_path, HOST_PORT)).expect("host port listener");
        port_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        Self {
            driver: Driver::new(),
            vsock: Looped::new(vsock),
            dir,
            uds_path,
            port_listener,
            streams: Vec::new(),
            scratch: vec![0; 64 * 1024],
        }
    }

    /// Takes the guest's new connections to the host port, then lets the device work.
    fn settle(&mut self) {
        loop {
            match self.port_listener.accept() {
                Ok((stream, _)) if self.streams.len() < MAX_STREAMS => {
                    stream.set_nonblocking(true).expect("non-blocking stream");
                    self.streams.push(stream);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("accept on the host port listener: {e}"),
            }
        }
        self.vsock.settle();
    }

    fn stream(&mut self, input: &mut Input) -> Option<usize> {
        let count = self.streams.len();
        (count > 0).then(|| usize::from(input.u8()) % count)
    }

    fn host_op(&mut self, op: u8, input: &mut Input) {
        match op {
            OP_HOST_CONNECT => {
                let len = usize::from(input.u8() % 48);
                let line = input.bytes(len);
                if self.streams.len() >= MAX_STREAMS {
                    return;
                }
                let Ok(mut stream) = UnixStream::connect(&self.uds_path) else {
                    return;
                };
                stream.set_nonblocking(true).expect("non-blocking stream");
                let _ = stream.write(line);
                self.streams.push(stream);
            }
            OP_HOST_WRITE => {
                let len = usize::from(input.u16() % 8192);
                let bytes = input.bytes(len);
                if let Some(k) = self.stream(input) {
                    let _ = self.streams[k].write(bytes);
                }
            }
            OP_HOST_CLOSE => {
                let half = input.u8().is_multiple_of(2);
                if let Some(k) = self.stream(input) {
                    if half {
                        let _ = self.streams[k].shutdown(Shutdown::Write);
                    } else {
                        self.streams.swap_remove(k);
                    }
                }
            }
            _ => {
                if let Some(k) = self.stream(input) {
                    let _ = self.streams[k].read(&mut self.scratch);
                }
            }
        }
    }
}

const DIR_PREFIX: &str = "rust-vm-fuzz-vsock-";

/// Removes the socket directories of harness processes that are gone: AFL restarts the process
/// now and then, and the main thread's state is never dropped, so they would pile up.
fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(port_path(&self.uds_path, HOST_PORT));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new());
}

pub fn run_vsock(data: &[u8]) {
    STATE.with_borrow_mut(|state| {
        // Host peers of the last run hang up; the reset below drops the guest's connections.
        state.streams.clear();
        let mut input = Input::new(data);
        state.driver.start(&mut *state.vsock.lock(), &mut input);
        state.settle();
        while !input.is_empty() {
            let op = input.u8() % OPS;
            if op >= DRIVER_OPS {
                state.host_op(op, &mut input);
                state.settle();
            } else if let Some(queue) = state.driver.op(op, &mut input) {
                state.vsock.kick(queue);
                state.settle();
            }
        }
        for queue in 0..2 {
            state.vsock.kick(queue);
        }
        state.settle();
    });
}
