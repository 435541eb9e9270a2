//! Logging set-up: `RUST_LOG` filtering, text or JSON lines, to stderr.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The format every line of this process is written in, once chosen.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` filtering (default `info`), text or JSON, to
/// stderr so stdout stays for a program's own output. Colour codes are written only when
/// stderr is a terminal: in a log file or a pipe they are noise that breaks `grep`.
pub fn init_logging(format: LogFormat) {
    use_format(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        // Each line carries the span it was written in and the spans around it, so a worker's
        // lines name their `worker_id`, `job_id` and `batch_id`.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging was already set up: {error}");
    }
}

/// Chooses the format of the lines [`stdout_line`] and [`stderr_line`] write, before logging
/// is set up (a configuration error is reported in it too). The first choice stands.
pub fn use_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// Writes a program's own line (its ready line) on stdout: the text as it is, or in JSON
/// mode one object shaped like the log lines, `{"timestamp","level","fields":{"message"},
/// "target"}`, so that every line a process writes parses the same way.
pub fn stdout_line(text: &str) {
    println!("{}", render("INFO", text));
}

/// Writes a line on stderr outside the logger (a failure after which the program exits), as
/// [`stdout_line`] does.
pub fn stderr_line(text: &str) {
    eprintln!("{}", render("ERROR", text));
}

fn render(level: &str, text: &str) -> String {
    if FORMAT.get() != Some(&LogFormat::Json) {
        return text.to_owned();
    }
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "timestamp": timestamp,
        "level": level,
        "fields": {"message": text},
        "target": "stdout",
    })
    .to_string()
}
