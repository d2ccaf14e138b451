//! A test runtime that runs the spec's process as a plain child of the test process (no
//! namespaces, no root needed), so the server's protocol handling, stdio, reaping and
//! bookkeeping are tested without the container library.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{openpty, Winsize};
use nix::unistd::{fork, pipe2, write, ForkResult};
use oci_spec::runtime::{LinuxResources, Process};
use rust_vm_container::{CreateRequest, ProcessHandle, Stats, StdioSpec};
use rust_vm_protocol::{ErrorCode, ProtocolError};

use super::runtime::{ContainerHandle, Runtime};

pub struct ProcessRuntime;

fn fail(code: ErrorCode, message: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::new(code, message.to_string())
}

/// Everything the child needs, prepared before fork (the child must not allocate).
struct Prepared {
    path: CString,
    _args: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
}

fn prepare(process: &Process) -> Result<Prepared, ProtocolError> {
    let args = process
        .args()
        .as_ref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| fail(ErrorCode::InvalidArgument, "process.args: missing"))?;
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| fail(ErrorCode::InvalidArgument, "NUL byte in a string"))
    };
    let args = args
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = process
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|e| cstr(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv: Vec<_> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<_> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    Ok(Prepared {
        path: args[0].clone(),
        cwd: cstr(&process.cwd().to_string_lossy())?,
        _args: args,
        _env: env,
        argv,
        envp,
    })
}

fn spawn(
    process: &Process,
    stdio: StdioSpec,
    gate: Option<OwnedFd>,
) -> Result<ProcessHandle, ProtocolError> {
    let prepared = prepare(process)?;
    // Unpacks the stdio like the real library's `prepare_stdio` does, for plain processes: the
    // double must hand its child the same fds the real runtime would.
    let (fds, master) = match stdio {
        StdioSpec::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            let stdin = match stdin {
                Some(stdin) => stdin,
                None => std::fs::File::open("/dev/null")
                    .map_err(|e| fail(ErrorCode::Internal, e))?
                    .into(),
            };
            ([stdin, stdout, stderr], None)
        }
        StdioSpec::Terminal { rows, cols } => {
            let size = Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = openpty(Some(&size), None).map_err(|e| fail(ErrorCode::Internal, e))?;
            let slave = pty.slave;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| fail(ErrorCode::Internal, e));
            ([dup(&slave)?, dup(&slave)?, slave], Some(pty.master))
        }
    };
    let raw = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
    let gate_fd = gate.as_ref().map(|g| g.as_raw_fd());
    let terminal = master.is_some();
    // SAFETY: the child only makes async-signal-safe calls on data prepared above.
    match unsafe { fork() }.map_err(|e| fail(ErrorCode::ContainerFailed, e))? {
        ForkResult::Child => unsafe {
            if terminal {
                libc::setsid();
                libc::ioctl(raw[0], libc::TIOCSCTTY, 0);
            }
            for (target, fd) in raw.iter().enumerate() {
                libc::dup2(*fd, target as i32);
            }
            // Drop every other inherited fd now: a child held at the gate must not keep other
            // containers' gates (or pipes) open.
            let first_free = match gate_fd {
                Some(gate) => {
                    libc::dup2(gate, 3);
                    4
                }
                None => 3,
            };
            libc::syscall(libc::SYS_close_range, first_free, u32::MAX, 0);
            if gate_fd.is_some() {
                let mut byte = 0u8;
                if libc::read(3, (&mut byte as *mut u8).cast(), 1) != 1 {
                    libc::_exit(126);
                }
                libc::close(3);
            }
            if libc::chdir(prepared.cwd.as_ptr()) != 0 {
                libc::_exit(125);
            }
            libc::execve(
                prepared.path.as_ptr(),
                prepared.argv.as_ptr(),
                prepared.envp.as_ptr(),
            );
            libc::_exit(127)
        },
        ForkResult::Parent { child } => Ok(ProcessHandle {
            pid: child.as_raw(),
            pty_master: master,
        }),
    }
}

impl Runtime for ProcessRuntime {
    fn create(
        &self,
        request: CreateRequest,
    ) -> Result<(Box<dyn ContainerHandle>, ProcessHandle), ProtocolError> {
        let process = request
            .spec
            .process()
            .clone()
            .ok_or_else(|| fail(ErrorCode::InvalidArgument, "process: missing"))?;
        let (gate_read, gate_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(ErrorCode::Internal, e))?;
        let spawned = spawn(&process, request.stdio, Some(gate_read))?;
        let handle = FakeContainer {
            init: spawned.pid,
            gate: Some(gate_write),
            execs: Vec::new(),
        };
        Ok((Box::new(handle), spawned))
    }

    fn cgroups_enabled(&self) -> bool {
        false
    }
}

struct FakeContainer {
    init: i32,
    gate: Option<OwnedFd>,
    execs: Vec<i32>,
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

impl ContainerHandle for FakeContainer {
    fn start(&mut self) -> Result<(), ProtocolError> {
        let gate = self
            .gate
            .take()
            .ok_or_else(|| fail(ErrorCode::FailedPrecondition, "already started"))?;
        write(&gate, b"1").map_err(|e| fail(ErrorCode::Internal, e))?;
        Ok(())
    }

    fn exec(
        &mut self,
        process: &Process,
        stdio: StdioSpec,
    ) -> Result<ProcessHandle, ProtocolError> {
        let spawned = spawn(process, stdio, None)?;
        self.execs.push(spawned.pid);
        Ok(spawned)
    }

    fn signal(&self, pid: i32, signal: i32) -> Result<(), ProtocolError> {
        // SAFETY: kill(2) with plain integers.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(fail(ErrorCode::NotFound, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>, ProtocolError> {
        Ok(std::iter::once(self.init)
            .chain(self.execs.iter().copied())
            .filter(|pid| alive(*pid))
            .collect())
    }

    fn stats(&self) -> Result<Stats, ProtocolError> {
        Err(fail(
            ErrorCode::Unsupported,
            "the process runtime has no cgroups",
        ))
    }

    fn update(&mut self, _: &LinuxResources) -> Result<(), ProtocolError> {
        Err(fail(
            ErrorCode::Unsupported,
            "the process runtime has no cgroups",
        ))
    }

    fn destroy(self: Box<Self>) -> Result<(), ProtocolError> {
        for pid in self.pids()? {
            let _ = self.signal(pid, libc::SIGKILL);
        }
        Ok(())
    }
}
