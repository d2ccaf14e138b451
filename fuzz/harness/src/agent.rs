//! The agent protocol as a hostile peer speaks it: frames on a connection (what the agent
//! reads from the shim, and the shim from the guest), and the requests inside them taken as
//! far as the agent takes them before anything touches the system.
//!
//! The agent's server itself lives in its binary crate and starts real processes, so
//! `agent_dispatch` runs the decoding and the container library's checks and translation that
//! each operation's handler runs (`rust_vm_container::fuzz_api`), not the handler.

use std::io::Cursor;

use rust_vm_container::fuzz_api;
use rust_vm_protocol::{read_frame, Operation, Request, Response};

/// Frames read off one connection, each decoded as a request and as a response.
pub fn run_agent_frame(data: &[u8]) {
    let mut conn = Cursor::new(data);
    while let Ok(Some(body)) = read_frame(&mut conn) {
        let _ = Request::decode(&body);
        let _ = Response::decode(&body);
    }
}

/// One request body (no frame header), decoded and checked as its handler would.
pub fn run_agent_dispatch(data: &[u8]) {
    let Ok(request) = Request::decode(data) else {
        return;
    };
    // Encoding the answer's echo must not fail for anything decoding accepted.
    let _ = request.encode();
    match request.op {
        Operation::CreateContainer(req) => {
            let _ = fuzz_api::translate(&req.container_id, &req.spec, data.len().is_multiple_of(2));
        }
        Operation::Exec(req) => {
            let _ = fuzz_api::check_exec(&req.process);
        }
        Operation::UpdateResources(req) => {
            let _ = fuzz_api::check_resources(&req.resources);
        }
        _ => {}
    }
}
