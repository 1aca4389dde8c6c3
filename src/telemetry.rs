//! Logging: human-readable text or one JSON object per line, filtered by `RUST_LOG`.
//!
//! Log lines name mailboxes and recipients only by domain and never carry tokens, secrets or
//! authorization codes; the types that hold those redact themselves in `Debug`.
//!
//! The service's lines are handed to a writer thread that writes them in batches, so a busy
//! service does not spend a system call per line on its request path; nothing is dropped (the
//! writer applies back-pressure instead) and the returned guard flushes at exit.

use std::io::BufWriter;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::LogFormat;

const DEFAULT_FILTER: &str =
    "info,sqlx=warn,h2=warn,hyper=warn,hyper_util=warn,tower=warn,reqwest=warn";

/// Installs the global subscriber writing to stdout through the batching writer thread (once;
/// later calls are ignored). Keep the guard until exit: dropping it flushes what is still
/// buffered.
pub(crate) fn init(format: LogFormat) -> Option<WorkerGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("graph-mailer-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stdout()));
    let installed = match format {
        LogFormat::Json => registry.with(json_layer().with_writer(writer)).try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_writer(writer)).try_init(),
    };
    installed.ok().map(|()| guard)
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

/// Replaces the local part of every email address in `text` with `…`, keeping the domain:
/// error messages written for callers may name addresses; log lines must not.
pub fn redact_addresses(text: &str) -> String {
    let is_local = |c: char| c.is_alphanumeric() || "._%+-'!#$&*=?^`{|}~".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut pending = String::new();
    for c in text.chars() {
        if c == '@' && !pending.is_empty() {
            out.push('…');
            pending.clear();
            out.push('@');
        } else if is_local(c) {
            pending.push(c);
        } else {
            out.push_str(&pending);
            pending.clear();
            out.push(c);
        }
    }
    out.push_str(&pending);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_only_their_domain() {
        assert_eq!(
            redact_addresses(
                "noreply@contoso.com is not connected: call Connect for noreply@contoso.com."
            ),
            "…@contoso.com is not connected: call Connect for …@contoso.com."
        );
        assert_eq!(
            redact_addresses("to[0].address: \"bob@\" is bad"),
            "to[0].address: \"…@\" is bad"
        );
        assert_eq!(redact_addresses("no address here"), "no address here");
    }
}
