//! A minimal stderr logger: `[  1.234567 LEVEL target] message`, time since the logger started;
//! and [`guest_warn!`], the warning a guest can cause at will, rate-limited per call site.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    start: Instant,
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let t = self.start.elapsed();
        // One write per line so lines from vCPU threads do not interleave.
        let line = format!(
            "[{:>4}.{:06} {:<5} {}] {}\n",
            t.as_secs(),
            t.subsec_micros(),
            record.level(),
            record.target(),
            record.args()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger (once; later calls only change the level).
pub fn init(level: LevelFilter) {
    let logger = LOGGER.get_or_init(|| StderrLogger {
        start: Instant::now(),
    });
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

/// Lines a call site of [`guest_warn!`] may log at once.
pub const GUEST_WARN_BURST: u32 = 10;
/// Then one more line per this much time.
pub const GUEST_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// A budget of log lines: a burst, then one line per interval; what it leaves out is counted
/// and reported with the next line it lets through.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    interval: Duration,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    tokens: u32,
    /// When the last token was earned (the first call starts the clock).
    earned_at: Option<Instant>,
    left_out: u64,
}

impl RateLimit {
    pub const fn new(burst: u32, interval: Duration) -> RateLimit {
        RateLimit {
            burst,
            interval,
            state: Mutex::new(LimitState {
                tokens: burst,
                earned_at: None,
                left_out: 0,
            }),
        }
    }

    /// `Some(lines left out since the last one let through)` when a line may go out now.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let since = *state.earned_at.get_or_insert(now);
        let interval = self.interval.max(Duration::from_nanos(1));
        let earned = now.saturating_duration_since(since).as_nanos() / interval.as_nanos();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            state.tokens = state.tokens.saturating_add(earned).min(self.burst);
            state.earned_at = Some(since + interval.saturating_mul(earned));
        }
        if state.tokens == 0 {
            state.left_out += 1;
            return None;
        }
        state.tokens -= 1;
        Some(std::mem::take(&mut state.left_out))
    }
}

/// `log::warn!` for what a guest controls (a register it touches, a request it builds): each
/// call site logs at most [`GUEST_WARN_BURST`] lines at once, then one per
/// [`GUEST_WARN_INTERVAL`], saying how many it left out, so a guest cannot fill the host's log.
macro_rules! guest_warn {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::logger::RateLimit = $crate::logger::RateLimit::new(
            $crate::logger::GUEST_WARN_BURST,
            $crate::logger::GUEST_WARN_INTERVAL,
        );
        match LIMIT.admit() {
            Some(0) => log::warn!($($arg)+),
            Some(left_out) => log::warn!(
                "{} ({left_out} more like it left out)",
                format_args!($($arg)+)
            ),
            None => {}
        }
    }};
}
pub(crate) use guest_warn;

/// A logger for tests that keeps every line with the thread that logged it.
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Mutex, OnceLock};
    use std::thread::{self, ThreadId};

    use log::{Log, Metadata, Record};

    struct Capture(Mutex<Vec<(ThreadId, String)>>);

    impl Log for Capture {
        fn enabled(&self, _: &Metadata) -> bool {
            true
        }
        fn log(&self, record: &Record) {
            let line = (thread::current().id(), record.args().to_string());
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
        fn flush(&self) {}
    }

    static CAPTURE: OnceLock<Capture> = OnceLock::new();

    /// Installs the capture (once per test binary; a no-op after).
    pub fn install() {
        let capture = CAPTURE.get_or_init(|| Capture(Mutex::new(Vec::new())));
        if log::set_logger(capture).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    }

    /// The lines this thread has logged since [`install`] that contain `needle`.
    pub fn lines_of_this_thread(needle: &str) -> Vec<String> {
        let Some(capture) = CAPTURE.get() else {
            return Vec::new();
        };
        let me = thread::current().id();
        capture
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(id, line)| *id == me && line.contains(needle))
            .map(|(_, line)| line.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_line_per_interval_with_what_was_left_out() {
        let limit = RateLimit::new(3, Duration::from_millis(200));
        let admitted: Vec<Option<u64>> = (0..10).map(|_| limit.admit()).collect();
        assert_eq!(
            admitted,
            [
                Some(0),
                Some(0),
                Some(0),
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            limit.admit(),
            Some(7),
            "one earned, seven left out before it"
        );
        assert_eq!(limit.admit(), None);
    }
}
