//! Logging: human-readable text or one JSON object per line, filtered by `RUST_LOG`.
//!
//! Log lines name mailboxes and recipients only by domain and never carry tokens, secrets or
//! authorization codes; the types that hold those redact themselves in `Debug`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::LogFormat;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The service's own output.
    Stdout,
    /// Commands whose stdout is their result (`check`, `healthcheck`).
    Stderr,
}

const DEFAULT_FILTER: &str =
    "info,sqlx=warn,h2=warn,hyper=warn,hyper_util=warn,tower=warn,reqwest=warn";

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: LogFormat, target: LogTarget) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match (format, target) {
        (LogFormat::Json, LogTarget::Stdout) => registry
            .with(json_layer().with_writer(std::io::stdout))
            .try_init(),
        (LogFormat::Json, LogTarget::Stderr) => registry
            .with(json_layer().with_writer(std::io::stderr))
            .try_init(),
        (LogFormat::Text, LogTarget::Stdout) => registry
            .with(fmt::layer().with_writer(std::io::stdout))
            .try_init(),
        (LogFormat::Text, LogTarget::Stderr) => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // Already installed (tests run several applications in one process): keep the first.
    drop(result);
}

fn json_layer<S>() -> fmt::Layer<S, fmt::format::JsonFields, fmt::format::Format<fmt::format::Json>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
}
