//! virtio-blk: requests a hostile driver builds on the request queue of a device whose disk is
//! a memfd (8 sectors, restored before each run).

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use vmm::devices::virtio::block::{Block, BlockDeviceConfig};

use crate::driver::{Driver, Looped, DRIVER_OPS};
use crate::input::Input;

pub const SECTORS: u64 = 8;

struct State {
    driver: Driver,
    block: Looped<Block>,
    disk: File,
    contents: Vec<u8>,
}

/// An anonymous file (no filesystem involved) holding `contents`.
pub fn memfd(contents: &[u8]) -> File {
    // SAFETY: memfd_create with a constant NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"rust-vm-fuzz-disk".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.write_all_at(contents, 0).expect("memfd write");
    file
}

/// A block device over `disk`, opened through /proc as the VMM opens an image path.
pub fn block_over(disk: &File) -> Block {
    let config = BlockDeviceConfig {
        path: format!("/proc/self/fd/{}", disk.as_raw_fd()).into(),
        read_only: false,
        id: Some("fuzz0".into()),
    };
    Block::new(&config).expect("a block device over a memfd")
}

impl State {
    fn new() -> Self {
        let contents: Vec<u8> = (0..SECTORS * 512).map(|i| (i % 251) as u8).collect();
        let disk = memfd(&contents);
        Self {
            driver: Driver::new(),
            block: Looped::new(block_over(&disk)),
            disk,
            contents,
        }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new());
}

pub fn run_blk(data: &[u8]) {
    STATE.with_borrow_mut(|state| {
        state
            .disk
            .write_all_at(&state.contents, 0)
            .expect("memfd write");
        let mut input = Input::new(data);
        state.driver.start(&mut *state.block.lock(), &mut input);
        state.block.settle();
        while !input.is_empty() {
            let op = input.u8() % DRIVER_OPS;
            if let Some(queue) = state.driver.op(op, &mut input) {
                state.block.notify(queue);
            }
        }
        state.block.notify(0);
    });
}
