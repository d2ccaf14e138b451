//! Signal names and numbers as `kill` accepts them: `TERM`, `SIGTERM`, `sigterm` or `15`.

use anyhow::{bail, Result};

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

pub fn parse(text: &str) -> Result<i32> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("signal number {n} is out of range (1-64)");
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let offset = if rest.is_empty() {
            0
        } else {
            rest.parse::<i32>().unwrap_or(-1)
        };
        if (0..=(libc::SIGRTMAX() - libc::SIGRTMIN())).contains(&offset) {
            return Ok(libc::SIGRTMIN() + offset);
        }
    }
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, num)| *num)
        .ok_or_else(|| {
            anyhow::anyhow!("unknown signal {text:?} (use a name like TERM or a number)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM").expect("TERM"), 15);
        assert_eq!(parse("SIGKILL").expect("KILL"), 9);
        assert_eq!(parse("usr1").expect("usr1"), libc::SIGUSR1);
        assert_eq!(parse("9").expect("9"), 9);
        assert_eq!(parse("RTMIN+1").expect("rtmin+1"), libc::SIGRTMIN() + 1);
        assert_eq!(parse("RTMIN").expect("rtmin"), libc::SIGRTMIN());
        assert!(parse("0").is_err());
        assert!(parse("FOO").unwrap_err().to_string().contains("FOO"));
    }
}
