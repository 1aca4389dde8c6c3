//! What the pages show: the overview (transport, version, the client secret's expiry, warnings,
//! `check`'s results, every mailbox with its actions) and the outbox's recent messages.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AdminPage, session_of, to_sign_in};
use crate::{
    check::{CheckResult, Outcome},
    domain::Mailbox,
    proto,
    store::{ConnectionState, MailboxRecord, MessageRecord},
};

/// Messages per outbox page.
const OUTBOX_PAGE: u32 = 50;

/// A time as the page shows it: absolute, and how far from now.
fn when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<String> {
    let at = at?;
    let minutes = (at - now).num_minutes();
    let relative = match minutes {
        m if m.abs() < 1 => "now".to_owned(),
        m if m.abs() < 120 => ago_or_in(m, "min"),
        m if m.abs() < 48 * 60 => ago_or_in(m / 60, "h"),
        m => ago_or_in(m / (24 * 60), "days"),
    };
    Some(format!("{} ({relative})", at.format("%Y-%m-%d %H:%M UTC")))
}

fn ago_or_in(amount: i64, unit: &str) -> String {
    if amount < 0 {
        format!("{} {unit} ago", -amount)
    } else {
        format!("in {amount} {unit}")
    }
}

/// The name a state has in the API (`CONNECTED`, `REAUTHORIZATION_REQUIRED` …).
fn api_name(state: &str) -> String {
    state.to_uppercase()
}

#[derive(Serialize)]
struct MailboxView {
    mailbox: String,
    state: String,
    healthy: bool,
    account: Option<String>,
    sending_address: Option<String>,
    granted: String,
    missing: Vec<String>,
    token_expires: Option<String>,
    last_refreshed: Option<String>,
    last_sent: Option<String>,
    last_error: Option<String>,
    action: Option<String>,
    sent: u64,
    failed: u64,
    queued: u64,
    oldest_queued: Option<String>,
    sent_last_minute: u32,
    recipients_last_24h: u64,
    paused_until: Option<String>,
    pause_reason: Option<String>,
}

impl MailboxView {
    fn new(record: MailboxRecord, now: DateTime<Utc>) -> Self {
        let action = match record.state {
            ConnectionState::ReauthorizationRequired => Some(
                "Connect again: Microsoft no longer accepts this mailbox's sign-in, so its owner \
                 must sign in once more."
                    .to_owned(),
            ),
            ConnectionState::NotConnected | ConnectionState::Pending => {
                Some("Connect, and have the mailbox's owner sign in.".to_owned())
            }
            ConnectionState::Connected if !record.missing_scopes.is_empty() => Some(format!(
                "Connect with \"ask for consent again\" so the owner grants {}.",
                record.missing_scopes.join(", ")
            )),
            ConnectionState::Connected => None,
        };
        Self {
            mailbox: record.mailbox.to_string(),
            state: api_name(record.state.as_str()),
            healthy: record.state == ConnectionState::Connected,
            account: record.account,
            sending_address: record.sending_address,
            granted: record.scopes.join(" "),
            missing: record.missing_scopes,
            token_expires: when(record.access_token_expires_at, now),
            last_refreshed: when(record.last_refreshed_at, now),
            last_sent: when(record.last_sent_at, now),
            last_error: record.last_error,
            action,
            sent: record.sent_total,
            failed: record.failed_total,
            queued: record.queue.queued,
            oldest_queued: when(record.queue.oldest_queued_at, now),
            sent_last_minute: record.queue.sent_last_minute,
            recipients_last_24h: record.queue.recipients_last_24h,
            paused_until: when(record.paused_until, now),
            pause_reason: record.pause_reason,
        }
    }
}

#[derive(Serialize)]
struct SecretView {
    expires: String,
    days_left: i64,
    expired: bool,
    /// Under the warning threshold: the rotation steps show.
    rotate: bool,
}

#[derive(Serialize)]
struct CheckView {
    name: String,
    outcome: &'static str,
    detail: String,
    fix: Option<String>,
}

impl From<CheckResult> for CheckView {
    fn from(check: CheckResult) -> Self {
        Self {
            outcome: match check.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Warn => "WARN",
                Outcome::Skip => "SKIP",
            },
            name: check.name,
            detail: check.detail,
            fix: check.fix,
        }
    }
}

/// `GET /admin`.
pub(super) async fn overview(State(page): State<Arc<AdminPage>>, headers: HeaderMap) -> Response {
    let Some(session) = session_of(&page, &headers).await else {
        return to_sign_in();
    };
    let caller = AdminPage::caller(&session);
    let status = match page.parts.post_office.status(&caller, None).await {
        Ok(status) => status,
        Err(error) => return page.failure(&session, "Status", &error),
    };
    let now = page.parts.clock.now();
    let secret = status.client_secret_expires_at.map(|at| {
        let warning = page
            .parts
            .settings
            .azure
            .as_ref()
            .map(|azure| azure.client_secret_warning)
            .unwrap_or_else(|| chrono::Duration::days(30));
        SecretView {
            expires: at.format("%Y-%m-%d %H:%M UTC").to_string(),
            days_left: crate::oauth::secret::days_until(at, now),
            expired: at <= now,
            rotate: at - now <= warning,
        }
    });
    let (checks_ran, checks) = page.check_report().await;
    let limits = &page.parts.settings.outbox.limits;
    let configured_scopes = page
        .parts
        .settings
        .azure
        .as_ref()
        .map(|azure| azure.scopes.names().join(" "));
    let context = minijinja::context! {
        secret,
        warnings => status.warnings,
        checks_ran,
        checks,
        mailboxes => status.mailboxes.into_iter().map(|r| MailboxView::new(r, now)).collect::<Vec<_>>(),
        graph => page.parts.identity.is_some(),
        configured_scopes,
        per_minute => limits.messages_per_minute,
        recipients_per_day => limits.recipients_per_day,
        session_ends => when(Some(session.expires_at), now),
    };
    page.render(StatusCode::OK, "overview.html", Some(&session), context)
}

impl AdminPage {
    /// The last `check` report (run now if none has run), and when it ran.
    async fn check_report(&self) -> (Option<String>, Vec<CheckView>) {
        let mut last = self.checks.lock().await;
        if last.is_none() {
            *last = Some(self.run_checks().await);
        }
        let now = self.parts.clock.now();
        match last.as_ref() {
            Some((at, report)) => (
                when(Some(*at), now),
                report.checks.iter().cloned().map(CheckView::from).collect(),
            ),
            None => (None, Vec::new()),
        }
    }

    /// Runs `check` as the running service is configured, without touching tokens.
    pub(super) async fn run_checks(&self) -> (DateTime<Utc>, crate::check::Report) {
        let options = crate::check::Options {
            skip_token_refresh: true,
            ..Default::default()
        };
        let settings = (*self.parts.settings).clone();
        let report = crate::check::checks(Ok(settings), &options, self.parts.clock.clone()).await;
        (self.parts.clock.now(), report)
    }

    /// Keeps `report` as the last one the overview shows.
    pub(super) async fn replace_checks(&self, report: (DateTime<Utc>, crate::check::Report)) {
        *self.checks.lock().await = Some(report);
    }
}

/// `GET /admin/mailbox-state?mailbox=`: the script's question while a sign-in link is out.
/// Admins see every mailbox, so the session is the only check.
pub(super) async fn mailbox_state(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if session_of(&page, &headers).await.is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(mailbox) = query
        .get("mailbox")
        .and_then(|m| Mailbox::parse("mailbox", m).ok())
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // Asked every second or two while a link is out: one read of the mailbox's row, not the
    // whole Status (which flushes counters and reads the queue).
    let now = page.parts.clock.now();
    let state = match page.parts.store.mailbox(&mailbox, now).await {
        Ok(Some(record)) => Some((
            api_name(record.state.as_str()),
            record.connected_at.map(|at| at.timestamp_millis()),
        )),
        Ok(None) => Some(("NOT_CONNECTED".to_owned(), None)),
        Err(_) => None,
    };
    match state {
        Some((state, connected_at)) => (
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({ "state": state, "connected_at": connected_at })),
        )
            .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

#[derive(Serialize)]
struct MessageView {
    id: String,
    mailbox: String,
    state: String,
    queued: bool,
    attempts: u32,
    recipients: u32,
    accepted: Option<String>,
    next_attempt: Option<String>,
    sent: Option<String>,
    last_error: Option<String>,
    batch: Option<String>,
}

impl MessageView {
    fn new(record: MessageRecord, now: DateTime<Utc>) -> Self {
        Self {
            queued: record.state == crate::store::MessageState::Queued,
            state: api_name(record.state.as_str()),
            id: record.message_id,
            mailbox: record.mailbox.to_string(),
            attempts: record.attempts,
            recipients: record.recipients,
            accepted: when(Some(record.accepted_at), now),
            next_attempt: when(record.next_attempt_at, now),
            sent: when(record.sent_at, now),
            last_error: record.last_error,
            batch: record.batch_id,
        }
    }
}

/// `GET /admin/outbox?mailbox=&state=&batch=&page=`: recent messages, newest first.
pub(super) async fn outbox(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(session) = session_of(&page, &headers).await else {
        return to_sign_in();
    };
    let field = |name: &str| {
        query
            .get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let (mailbox, state, batch) = (field("mailbox"), field("state"), field("batch"));
    let state_number = match state.as_str() {
        "" => 0,
        name => match proto::MessageState::from_str_name(&format!("MESSAGE_STATE_{name}")) {
            Some(state) => state as i32,
            None => {
                return page.notice(
                    StatusCode::BAD_REQUEST,
                    Some(&session),
                    "Unknown state",
                    &format!("\"{name}\" is not a message state."),
                );
            }
        },
    };
    let request = proto::ListMessagesRequest {
        mailbox: mailbox.clone(),
        state: state_number,
        batch_id: batch.clone(),
        page_size: OUTBOX_PAGE,
        page_token: field("page"),
    };
    let caller = AdminPage::caller(&session);
    let listed = match page.parts.outbox.list(&caller, request).await {
        Ok(listed) => listed,
        Err(error) => return page.failure(&session, "Listing the outbox", &error),
    };
    let now = page.parts.clock.now();
    let next_page = listed.next_page_token.map(|token| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("mailbox", &mailbox)
            .append_pair("state", &state)
            .append_pair("batch", &batch)
            .append_pair("page", &token)
            .finish()
    });
    let context = minijinja::context! {
        messages => listed.messages.into_iter().map(|m| MessageView::new(m, now)).collect::<Vec<_>>(),
        mailbox,
        state,
        batch,
        states => ["QUEUED", "SENDING", "SENT", "FAILED", "UNKNOWN", "CANCELLED"],
        next_page,
    };
    page.render(StatusCode::OK, "outbox.html", Some(&session), context)
}
