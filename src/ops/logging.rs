//! Logging: `tracing` events to stderr (journald picks them up under systemd) and to daily-rotated
//! files in the log directory, of which `keep_days` are kept. Each place in the code that logs may
//! write at most `log.max_lines_per_sec` lines a second ([`PerCallsiteLimit`]): a flood of one
//! message (rumqttd's accept loop at the descriptor limit wrote ~300k lines a second) cannot fill
//! the disk or drown the rest; the lines left out are counted in the next line about them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::callsite::Identifier;
use tracing_subscriber::layer::{Context, Layer};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

/// Keeps the file writer flushing; drop it last (at exit) so buffered lines reach the file.
pub struct LogGuard {
    _file: WorkerGuard,
}

fn filter(level: &str) -> EnvFilter {
    // rumqttd logs every accept/disconnect at info/error; keep it at warn unless asked.
    let default = format!("{level},rumqttd=warn,rumqttd::router=off,hyper=warn");
    EnvFilter::try_from_env("STOREBOX_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// Lets through at most `max` events a second from each callsite. Events over the limit are
/// dropped for every output; when a callsite's next second starts, one line says how many of its
/// lines were left out.
pub struct PerCallsiteLimit {
    max: u32,
    epoch: Instant,
    /// Callsite -> (second, lines let through in it, lines left out since the last report).
    seen: Mutex<HashMap<Identifier, (u64, u32, u64)>>,
}

impl PerCallsiteLimit {
    pub fn new(max: u32) -> Self {
        PerCallsiteLimit {
            max: max.max(1),
            epoch: Instant::now(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an event of `callsite` may be written now; also the count of lines left out that
    /// should be reported first.
    fn admit(&self, callsite: Identifier) -> (bool, u64) {
        let sec = self.epoch.elapsed().as_secs();
        let mut seen = self.seen.lock();
        let e = seen.entry(callsite).or_insert((sec, 0, 0));
        let mut report = 0;
        if e.0 != sec {
            report = std::mem::take(&mut e.2);
            e.0 = sec;
            e.1 = 0;
        }
        if e.1 < self.max {
            e.1 += 1;
            (true, report)
        } else {
            e.2 += 1;
            (false, report)
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for PerCallsiteLimit {
    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        let (ok, suppressed) = self.admit(meta.callsite());
        if suppressed > 0 {
            // The lock is released: this event passes through here for its own callsite.
            tracing::warn!(
                target: "storebox::log",
                from = meta.target(),
                at = meta.file().unwrap_or(""),
                line = meta.line().unwrap_or(0),
                suppressed,
                "log lines left out in the last second (log.max_lines_per_sec)"
            );
        }
        ok
    }
}

/// One event per `every` from a hot path (e.g. a failing accept loop); counts the rest.
pub struct Throttle {
    every_ms: u64,
    epoch: Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every_ms: every.as_millis() as u64,
            epoch: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` when this one may be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.every_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The log file writer with a daily size cap: tracing-appender rotates by day only, so one busy
/// day could fill the disk. Past `cap` bytes in a (UTC) day, file lines are left out until the
/// next day's file, after one line saying so; stderr (journald, which has caps of its own) still
/// gets everything. The files therefore take at most `keep_days × cap` bytes.
pub struct DayCapped<M> {
    inner: M,
    cap: u64,
    /// (day number, bytes written that day, whether the notice was written).
    day: std::sync::Arc<Mutex<(u64, u64, bool)>>,
}

impl<M> DayCapped<M> {
    pub fn new(inner: M, cap: u64) -> Self {
        DayCapped {
            inner,
            cap,
            day: Default::default(),
        }
    }
}

fn utc_day() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

pub struct DayCappedWriter<W> {
    inner: W,
    cap: u64,
    day: std::sync::Arc<Mutex<(u64, u64, bool)>>,
}

impl<W: std::io::Write> std::io::Write for DayCappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let today = utc_day();
        let mut d = self.day.lock();
        if d.0 != today {
            *d = (today, 0, false);
        }
        if d.1 + buf.len() as u64 > self.cap {
            if !d.2 {
                d.2 = true;
                let _ = self.inner.write_all(
                    format!(
                        "storebox: {} MiB of log lines written today (log.max_day_mb); further lines go to stderr/journald only until tomorrow's file\n",
                        self.cap / (1024 * 1024)
                    )
                    .as_bytes(),
                );
            }
            return Ok(buf.len());
        }
        d.1 += buf.len() as u64;
        drop(d);
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: fmt::MakeWriter<'a>> fmt::MakeWriter<'a> for DayCapped<M> {
    type Writer = DayCappedWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        DayCappedWriter {
            inner: self.inner.make_writer(),
            cap: self.cap,
            day: self.day.clone(),
        }
    }
}

/// Stderr only, for one-shot commands.
pub fn init_stderr(level: &str) {
    let _ = tracing_subscriber::registry()
        .with(filter(level))
        .with(
            fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .try_init();
}

/// Stderr plus daily files `storebox.YYYY-MM-DD.log` in `dir`.
pub fn init_service(
    level: &str,
    dir: &Path,
    prefix: &str,
    keep_days: u32,
    max_lines_per_sec: u32,
    max_day_mb: u64,
) -> anyhow::Result<LogGuard> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix(prefix)
        .filename_suffix("log")
        .max_log_files(keep_days as usize)
        .build(dir)
        .map_err(|e| anyhow::anyhow!("cannot open log files in {}: {e}", dir.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let _ = tracing_subscriber::registry()
        .with(filter(level))
        .with(PerCallsiteLimit::new(max_lines_per_sec))
        .with(
            fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(DayCapped::new(writer, max_day_mb * 1024 * 1024)),
        )
        .try_init();
    Ok(LogGuard { _file: guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callsite_limit_counts_what_it_leaves_out() {
        struct Cs;
        impl tracing::callsite::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unimplemented!()
            }
        }
        static CS: Cs = Cs;
        let limit = PerCallsiteLimit::new(3);
        let id = Identifier(&CS);
        let admitted = (0..1000).filter(|_| limit.admit(id.clone()).0).count();
        assert_eq!(admitted, 3, "at most max lines in one second");
        assert_eq!(limit.seen.lock()[&id].2, 997);
    }

    #[test]
    fn file_lines_past_the_daily_cap_are_left_out_with_one_notice() {
        use std::io::Write;
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let to_sink = sink.clone();
        let capped = DayCapped::new(move || to_sink.clone(), 1000);
        let line = [b'#'; 99];
        for _ in 0..50 {
            let mut w = fmt::MakeWriter::make_writer(&capped);
            assert_eq!(w.write(&line).unwrap(), 99, "writers never see an error");
        }
        let out = sink.0.lock().clone();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("log.max_day_mb").count(), 1, "one notice");
        let kept = out.iter().filter(|&&b| b == b'#').count();
        assert_eq!(kept, 10 * 99, "lines up to the cap are kept");
        assert!(out.len() < 1000 + 200);
    }

    #[test]
    fn throttle_lets_one_through_per_interval() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!((0..500).filter(|_| t.allow().is_some()).count(), 0);
        assert_eq!(t.suppressed.load(Ordering::Relaxed), 500);
    }
}
