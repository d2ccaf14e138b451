//! virtio-net: RX and TX queues built by a hostile driver, and a tap stand-in whose frames come
//! from the input (any length, any bytes) and which swallows what the device transmits.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm::devices::virtio::net::{MacAddr, Net, NetDeviceConfig, TapIo};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::driver::{Driver, Looped, DRIVER_OPS};
use crate::input::Input;

/// Frames waiting in the tap at most; a real tap's queue is bounded too.
const TAP_QUEUE: usize = 64;

/// The tap: an eventfd stands in for its readiness (the device registers it edge-triggered).
pub struct FakeTap {
    ready: EventFd,
    host: Arc<Host>,
}

/// The tap's other end, kept by the harness.
#[derive(Default)]
struct Host {
    frames: Mutex<VecDeque<Vec<u8>>>,
    /// Makes the next write fail as a full tap would.
    refuse_next: AtomicBool,
}

impl Host {
    fn frames(&self) -> MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.frames.lock().expect("tap lock poisoned")
    }
}

impl AsRawFd for FakeTap {
    fn as_raw_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
}

impl TapIo for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = self
            .host
            .frames()
            .pop_front()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        // A tap truncates a frame larger than the read buffer, as a datagram socket does.
        let len = frame.len().min(buf.len());
        buf[..len].copy_from_slice(&frame[..len]);
        Ok(len)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        if self.host.refuse_next.swap(false, Ordering::Relaxed) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(frame.len())
    }

    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

struct State {
    driver: Driver,
    net: Looped<Net<FakeTap>>,
    host: Arc<Host>,
    ready: EventFd,
}

impl State {
    fn new() -> Self {
        let ready = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        let host = Arc::new(Host::default());
        let tap = FakeTap {
            ready: ready.try_clone().expect("eventfd dup"),
            host: host.clone(),
        };
        let config = NetDeviceConfig {
            tap_fd: -1,
            mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
            mtu: 1500,
        };
        let net = Net::with_tap(tap, &config).expect("a net device over a fake tap");
        Self {
            driver: Driver::new(),
            net: Looped::new(net),
            host,
            ready,
        }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new());
}

/// Net-specific operations after the driver's.
pub const OP_FRAME: u8 = DRIVER_OPS;
const OP_REFUSE: u8 = DRIVER_OPS + 1;

pub fn run_net(data: &[u8]) {
    STATE.with_borrow_mut(|state| {
        let mut input = Input::new(data);
        state.host.frames().clear();
        state.host.refuse_next.store(false, Ordering::Relaxed);
        state.driver.start(&mut *state.net.lock(), &mut input);
        state.net.settle();
        while !input.is_empty() {
            match input.u8() % (DRIVER_OPS + 2) {
                OP_FRAME => {
                    // Lengths up to 64 KiB + 256: a tap frame may exceed any guest buffer.
                    let len = usize::from(input.u16()) + usize::from(input.u8());
                    let frame = input.bytes(len).to_vec();
                    let mut frames = state.host.frames();
                    if frames.len() < TAP_QUEUE {
                        frames.push_back(frame);
                    }
                    drop(frames);
                    // Each write is an edge for the device's edge-triggered registration.
                    state.ready.write(1).expect("eventfd write");
                    state.net.settle();
                }
                OP_REFUSE => state.host.refuse_next.store(true, Ordering::Relaxed),
                op => {
                    if let Some(queue) = state.driver.op(op, &mut input) {
                        state.net.notify(queue);
                    }
                }
            }
        }
        state.net.notify(0);
        state.net.notify(1);
    });
}
