//! Logging through `tracing`: plain text for a terminal or journald, JSON on request.
//!
//! Logs go to stderr, which systemd hands to the journal; under systemd the timestamp and the
//! ANSI colours are left out because the journal records its own time and shows raw bytes.
//! Secrets and customer data never reach a log line: secrets are wrapped types without Display,
//! and deliveries' Debug shows sizes, not bodies.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
/// Calling it twice is harmless (the second call keeps the first subscriber).
pub fn init(format: &LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colour codes only help a person at a terminal; in files and the journal they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !under_journald;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text if under_journald => builder.without_time().with_target(false).try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    // Tests and the demo may initialise twice; the first subscriber stays.
    let _ = result;
}
