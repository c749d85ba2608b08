//! Logging: `tracing` events to stderr (journald picks them up under systemd) and to daily-rotated
//! files in the log directory, of which `keep_days` are kept.

use std::io::IsTerminal;
use std::path::Path;

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
        .with(
            fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .with(fmt::layer().with_ansi(false).with_writer(writer))
        .try_init();
    Ok(LogGuard { _file: guard })
}
