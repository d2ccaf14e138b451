//! `port_forward` connections (CRI PortForward): the connection's first request names a TCP
//! port; the agent connects to `127.0.0.1:PORT` in its own network namespace (the VM's, which
//! the pod's containers share) and, once connected, relays raw bytes both ways until each side
//! has ended its direction.

use std::io;
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::thread;

use rust_vm_protocol::{ErrorCode, PortForward, ProtocolError};

use crate::listener::Conn;

/// Connects to the forwarded port; the error names the address and why.
pub fn connect(req: &PortForward) -> Result<TcpStream, ProtocolError> {
    if req.port == 0 {
        return Err(ProtocolError::new(
            ErrorCode::InvalidArgument,
            "port_forward: port 0 is not a port",
        ));
    }
    TcpStream::connect((Ipv4Addr::LOCALHOST, req.port)).map_err(|e| {
        ProtocolError::new(
            ErrorCode::FailedPrecondition,
            format!("connecting to 127.0.0.1:{} in the VM: {e}", req.port),
        )
    })
}

/// Copies `conn` to `tcp` and `tcp` to `conn` until both directions ended (EOF or error),
/// passing each end on as a shutdown of the other side's writing half.
pub fn relay(conn: Conn, tcp: TcpStream) {
    let clones = conn.try_clone().and_then(|c| Ok((c, tcp.try_clone()?)));
    let (mut conn_reader, mut tcp_writer) = match clones {
        Ok(clones) => clones,
        Err(e) => {
            log::error!("port_forward: cannot duplicate a connection: {e}");
            return;
        }
    };
    let inbound = thread::Builder::new()
        .name("forward-in".into())
        .spawn(move || {
            if let Err(e) = io::copy(&mut conn_reader, &mut tcp_writer) {
                log::debug!("port_forward: client to port: {e}");
            }
            let _ = tcp_writer.shutdown(Shutdown::Write);
        });
    let mut tcp_reader = tcp;
    let mut conn_writer = conn;
    if let Err(e) = io::copy(&mut tcp_reader, &mut conn_writer) {
        log::debug!("port_forward: port to client: {e}");
    }
    conn_writer.shutdown_write();
    match inbound {
        Ok(inbound) => {
            let _ = inbound.join();
        }
        Err(e) => {
            log::error!("port_forward: cannot start a relay thread: {e}");
            conn_writer.shutdown_both();
        }
    }
}
