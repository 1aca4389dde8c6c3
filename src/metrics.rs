//! Prometheus metrics: names, labels and the recorder.
//!
//! Every metric the service emits is defined here, so label sets stay consistent and nothing
//! that identifies a person (a whole address, a token) can become a label: mailboxes appear
//! only by domain.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that renders `/metrics`.
///
/// The `metrics` facade is global by design; several applications in one test process share
/// this recorder.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("graph_mailer_send_duration_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("graph_mailer_graph_retry_after_seconds".into()),
                        &[1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0],
                    )
                });
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                // Another recorder is installed (an embedding program's): render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            gauge!("graph_mailer_build_info", "version" => crate::VERSION).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "graph_mailer_sends_total",
        "SendMail calls by sending mailbox domain, caller, outcome (sent, failed, deduplicated) and gRPC code"
    );
    describe_histogram!(
        "graph_mailer_send_duration_seconds",
        "Time from receiving SendMail to its answer, by transport"
    );
    describe_gauge!(
        "graph_mailer_sends_in_flight",
        "SendMail calls being processed"
    );
    describe_counter!(
        "graph_mailer_graph_requests_total",
        "Requests to Microsoft Graph by endpoint and HTTP status (0 = no answer)"
    );
    describe_counter!(
        "graph_mailer_graph_retries_total",
        "Graph requests retried, by reason (throttled, unavailable, connect_error, unauthorized)"
    );
    describe_counter!("graph_mailer_graph_throttled_total", "Graph answers 429");
    describe_histogram!(
        "graph_mailer_graph_retry_after_seconds",
        "Retry-After asked for by Graph on 429 and 503 answers"
    );
    describe_counter!(
        "graph_mailer_ambiguous_sends_total",
        "Sends Graph answered ambiguously, by what looking in Sent Items found (sent, not_found, not_looked_up)"
    );
    describe_counter!(
        "graph_mailer_outbox_transitions_total",
        "Queued messages entering a state (sending, sent, failed, queued for a retry, unknown, cancelled)"
    );
    describe_histogram!(
        "graph_mailer_outbox_pacing_delay_seconds",
        "How long a claimed message waited for its mailbox's send slot"
    );
    describe_gauge!(
        "graph_mailer_outbox_queued",
        "Messages in the outbox not yet sent, by mailbox domain"
    );
    describe_gauge!(
        "graph_mailer_outbox_oldest_seconds",
        "Age of the oldest message not yet sent, by mailbox domain"
    );
    describe_counter!(
        "graph_mailer_outbox_reconciliations_total",
        "Messages of unknown outcome looked up in Sent Items, by result (sent, resent, unknown)"
    );
    describe_counter!(
        "graph_mailer_token_refreshes_total",
        "Access token refreshes by outcome"
    );
    describe_counter!(
        "graph_mailer_connect_callbacks_total",
        "OAuth callbacks by outcome (connected, failed)"
    );
    describe_gauge!(
        "graph_mailer_mailboxes",
        "Known mailboxes by connection state"
    );
    describe_gauge!(
        "graph_mailer_client_secret_expiry_timestamp_seconds",
        format!(
            "When the client secret expires (Unix time), from {}",
            crate::variables::CLIENT_SECRET_EXPIRES_AT
        )
    );
    describe_gauge!(
        "graph_mailer_build_info",
        "Always 1, labelled with the version"
    );
}

/// A SendMail finished. `caller` comes from the callers file (bounded); `mailbox_domain` is
/// `other` for mailboxes the service does not know.
pub fn send_finished(
    mailbox_domain: &str,
    caller: &str,
    outcome: &'static str,
    code: &'static str,
    seconds: f64,
    transport: &'static str,
) {
    counter!("graph_mailer_sends_total", "mailbox_domain" => mailbox_domain.to_owned(), "caller" => caller.to_owned(), "outcome" => outcome, "code" => code)
        .increment(1);
    histogram!("graph_mailer_send_duration_seconds", "transport" => transport).record(seconds);
}

/// Tracks one SendMail in flight while the guard lives.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        gauge!("graph_mailer_sends_in_flight").increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!("graph_mailer_sends_in_flight").decrement(1.0);
    }
}

/// A send Graph answered ambiguously, and what Sent Items said.
pub fn ambiguous_send(outcome: &'static str) {
    counter!("graph_mailer_ambiguous_sends_total", "outcome" => outcome).increment(1);
}

/// A queued message entered `state`.
pub fn outbox_transition(state: &'static str) {
    counter!("graph_mailer_outbox_transitions_total", "state" => state).increment(1);
}

/// A claimed message waited this long for its slot.
pub fn outbox_pacing_delay(seconds: f64) {
    histogram!("graph_mailer_outbox_pacing_delay_seconds").record(seconds);
}

/// The outbox's depth and oldest age for one mailbox domain.
pub fn outbox_queue(domain: &str, queued: u64, oldest_seconds: f64) {
    gauge!("graph_mailer_outbox_queued", "mailbox_domain" => domain.to_owned()).set(queued as f64);
    gauge!("graph_mailer_outbox_oldest_seconds", "mailbox_domain" => domain.to_owned())
        .set(oldest_seconds);
}

/// A message of unknown outcome was looked up.
pub fn outbox_reconciliation(result: &'static str) {
    counter!("graph_mailer_outbox_reconciliations_total", "result" => result).increment(1);
}

/// Graph answered (status 0: no answer).
pub fn graph_request(endpoint: &'static str, status: u16) {
    counter!("graph_mailer_graph_requests_total", "endpoint" => endpoint, "status" => status.to_string())
        .increment(1);
}

/// A Graph request is retried.
pub fn graph_retry(reason: &'static str) {
    counter!("graph_mailer_graph_retries_total", "reason" => reason).increment(1);
}

/// Graph throttled (429) or asked to come back later.
pub fn graph_retry_after(throttled: bool, seconds: Option<f64>) {
    if throttled {
        counter!("graph_mailer_graph_throttled_total").increment(1);
    }
    if let Some(seconds) = seconds {
        histogram!("graph_mailer_graph_retry_after_seconds").record(seconds);
    }
}

/// A token refresh ended.
pub fn token_refresh(outcome: &'static str) {
    counter!("graph_mailer_token_refreshes_total", "outcome" => outcome).increment(1);
}

/// An OAuth callback ended.
pub fn connect_callback(outcome: &'static str) {
    counter!("graph_mailer_connect_callbacks_total", "outcome" => outcome).increment(1);
}

/// How many mailboxes are in each state.
pub fn mailboxes(counts: &[(&'static str, usize)]) {
    for (state, count) in counts {
        gauge!("graph_mailer_mailboxes", "state" => *state).set(*count as f64);
    }
}

/// The client secret's expiry.
pub fn client_secret_expiry(unix_seconds: i64) {
    gauge!("graph_mailer_client_secret_expiry_timestamp_seconds").set(unix_seconds as f64);
}
