//! A fake Microsoft Graph mail API, written from Microsoft's documentation (see
//! `../shared/reference/microsoft-protocol.md` §2 and §3).
//!
//! It validates requests as strictly as Graph documents them (unknown properties, more than
//! five custom headers, no recipient, bad base64, bodies over 4 MiB, Authorization headers on
//! upload URLs, upload sessions for files under 3 MB, a MIME `From` the signed-in user cannot
//! send as), requires bearer tokens issued by the fake identity platform and the permission each
//! call needs, implements drafts, small attachments and upload sessions, `/me` and the Sent Items
//! search by `internetMessageId`, records every accepted message in one normalized shape, and
//! can script answers per call: 429/503 with Retry-After, error codes, latency, and an error
//! answered *after* the message was accepted (Microsoft's Q&A reports sendMail answering 503 or
//! 504 when the mail went out anyway). More than four concurrent requests of one mailbox, from
//! however many service processes, are answered 429 `MailboxConcurrency`, as Outlook does.

// Handlers answer errors as ready HTTP responses; their size does not matter in a test fake.
#![allow(clippy::result_large_err)]

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

mod drafts;
mod mailbox;
mod parse;

use std::time::Instant;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use serde_json::json;
use sha2::{Digest, Sha256};

#[allow(unused_imports)] // the load harness includes this file without using it
pub use parse::attachment_bytes;

use super::fake_identity::{IssuedToken, TokenRegistry, User};

/// Graph's request body limit (community-reported ~4 MB).
pub const MAX_BODY: usize = 4 * 1024 * 1024;
const CHUNK_UNIT: usize = 320 * 1024;

/// A scripted answer for the next call to an endpoint.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// An error status with a Graph error code, and an optional Retry-After header.
    Fail {
        status: u16,
        code: &'static str,
        retry_after: Option<String>,
    },
    /// Accept the request, but only answer after this delay.
    Delay(Duration),
    /// Accept the message, then answer this error anyway.
    AcceptThenFail { status: u16, code: &'static str },
}

impl Scripted {
    pub fn throttle(retry_after_seconds: u64) -> Self {
        Self::Fail {
            status: 429,
            code: "ApplicationThrottled",
            retry_after: Some(retry_after_seconds.to_string()),
        }
    }
    pub fn error(status: u16, code: &'static str) -> Self {
        Self::Fail {
            status,
            code,
            retry_after: None,
        }
    }
    /// The message goes out; the answer says it failed.
    pub fn accepted_then(status: u16, code: &'static str) -> Self {
        Self::AcceptThenFail { status, code }
    }
}

/// Outlook's limit of concurrent requests per mailbox ("Microsoft Graph service-specific
/// throttling limits"), counted across every client of the mailbox.
pub const MAILBOX_CONCURRENCY: usize = 4;

/// A copy kept in the mailbox's Sent Items.
#[derive(Clone, Debug)]
struct SentItem {
    account: String,
    internet_message_id: String,
    id: String,
    /// Exchange files the copy a moment after accepting the message.
    visible_at: Instant,
}

/// A message Graph accepted, whatever form it came in.
#[derive(Clone, Debug, Default)]
pub struct Delivered {
    pub account: String,
    /// The address the message went out from.
    pub from: String,
    /// `internetMessageId` (JSON) or `Message-ID` (MIME), as given.
    pub internet_message_id: Option<String>,
    /// `json`, `mime` or `draft`.
    pub form: String,
    pub client_request_id: String,
    pub subject: String,
    pub to: Vec<(String, String)>,
    pub cc: Vec<(String, String)>,
    pub bcc: Vec<(String, String)>,
    pub reply_to: Vec<(String, String)>,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub headers: Vec<(String, String)>,
    pub importance: Option<String>,
    pub save_to_sent_items: bool,
    pub attachments: Vec<DeliveredAttachment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredAttachment {
    pub name: String,
    pub content_type: String,
    pub content_id: Option<String>,
    pub inline: bool,
    pub sha256: String,
    pub size: usize,
}

impl DeliveredAttachment {
    fn new(
        name: &str,
        content_type: &str,
        content_id: Option<String>,
        inline: bool,
        bytes: &[u8],
    ) -> Self {
        Self {
            name: name.to_owned(),
            content_type: content_type.to_owned(),
            content_id,
            inline,
            sha256: sha256_hex(bytes),
            size: bytes.len(),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Draft {
    account: String,
    message: Delivered,
    sessions: Vec<String>,
}

struct UploadSession {
    draft_id: String,
    attachment: DeliveredAttachmentSpec,
    received: Vec<u8>,
}

#[derive(Clone)]
struct DeliveredAttachmentSpec {
    name: String,
    content_type: String,
    size: usize,
    inline: bool,
    content_id: Option<String>,
}

#[derive(Default)]
struct Inner {
    delivered: Vec<Delivered>,
    drafts: HashMap<String, Draft>,
    deleted_drafts: Vec<String>,
    sessions: HashMap<String, UploadSession>,
    scripts: HashMap<&'static str, VecDeque<Scripted>>,
    requests: HashMap<&'static str, usize>,
    upload_requests_with_authorization: usize,
    upload_chunk_sizes: Vec<usize>,
    default_latency: Duration,
    /// false: only count accepted messages (load tests send hundreds of thousands).
    forget_deliveries: bool,
    accepted: usize,
    sent_items: Vec<SentItem>,
    /// 429 MailboxConcurrency answers given.
    concurrency_refusals: usize,
    /// Small attachments posted to drafts.
    small_attachment_posts: usize,
    /// How long after a send its copy shows in Sent Items.
    sent_items_delay: Duration,
    /// Accounts Exchange has stopped sending for: (status, code) of every send's answer.
    blocked: HashMap<String, (u16, &'static str)>,
    /// At most this many sends per account in any window of this length (429 beyond).
    message_rate: Option<(usize, Duration)>,
    /// When each account's accepted sends arrived, for `message_rate`.
    send_times: HashMap<String, VecDeque<Instant>>,
    /// 429s answered for the message rate.
    rate_refusals: usize,
    /// At most this many recipients per account in a rolling day (Exchange's 10,000).
    recipient_limit: Option<usize>,
    /// When each account's accepted recipients were sent, for `recipient_limit`.
    recipients_sent: HashMap<String, VecDeque<(Instant, usize)>>,
    /// Sends refused for the recipient limit.
    recipient_refusals: usize,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeGraph {
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    max_in_flight: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct AppState {
    graph: FakeGraph,
    tokens: TokenRegistry,
}

impl FakeGraph {
    pub async fn start(tokens: TokenRegistry) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let graph = Self {
            base_url: format!("http://{addr}"),
            inner: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        };
        let state = AppState {
            graph: graph.clone(),
            tokens,
        };
        let app = Router::new()
            .route("/v1.0/me", get(mailbox::me))
            .route("/v1.0/me/sendMail", post(mailbox::send_mail))
            .route(
                "/v1.0/me/mailFolders/{folder}/messages",
                get(mailbox::folder_messages),
            )
            .route("/v1.0/me/messages", post(drafts::create_draft))
            .route(
                "/v1.0/me/messages/{id}/attachments",
                post(drafts::add_attachment),
            )
            .route(
                "/v1.0/me/messages/{id}/attachments/createUploadSession",
                post(drafts::create_upload_session),
            )
            .route("/v1.0/me/messages/{id}/send", post(drafts::send_draft))
            .route("/v1.0/me/messages/{id}", delete(drafts::delete_draft))
            .route("/upload/{session}", put(drafts::upload_chunk))
            // Graph's own limit is enforced by the handlers, with Graph's error body.
            .layer(DefaultBodyLimit::max(200 * 1024 * 1024))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        graph
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// Queues answers for the next calls to `endpoint` (sendMail, createDraft,
    /// createUploadSession, uploadChunk, sendDraft).
    pub fn script(&self, endpoint: &'static str, answers: impl IntoIterator<Item = Scripted>) {
        self.with(|i| i.scripts.entry(endpoint).or_default().extend(answers));
    }
    /// Every accepted request takes at least this long.
    pub fn set_latency(&self, latency: Duration) {
        self.with(|i| i.default_latency = latency);
    }
    /// Counts accepted messages without keeping them.
    pub fn forget_deliveries(&self) {
        self.with(|i| i.forget_deliveries = true);
    }
    /// Messages accepted so far.
    pub fn accepted(&self) -> usize {
        self.with(|i| i.accepted)
    }
    pub fn delivered(&self) -> Vec<Delivered> {
        self.with(|i| i.delivered.clone())
    }
    pub fn requests(&self, endpoint: &'static str) -> usize {
        self.with(|i| i.requests.get(endpoint).copied().unwrap_or(0))
    }
    pub fn drafts_left(&self) -> usize {
        self.with(|i| i.drafts.len())
    }
    pub fn deleted_drafts(&self) -> usize {
        self.with(|i| i.deleted_drafts.len())
    }
    pub fn upload_requests_with_authorization(&self) -> usize {
        self.with(|i| i.upload_requests_with_authorization)
    }
    pub fn upload_chunk_sizes(&self) -> Vec<usize> {
        self.with(|i| i.upload_chunk_sizes.clone())
    }
    /// The most requests of one account in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
    /// How many requests were refused with 429 MailboxConcurrency.
    pub fn concurrency_refusals(&self) -> usize {
        self.with(|i| i.concurrency_refusals)
    }
    /// How many small attachments were posted to drafts.
    pub fn small_attachment_posts(&self) -> usize {
        self.with(|i| i.small_attachment_posts)
    }
    /// How many copies the account's Sent Items hold.
    pub fn sent_items(&self, account: &str) -> usize {
        self.with(|i| i.sent_items.iter().filter(|s| s.account == account).count())
    }
    /// Copies show in Sent Items this long after the send was accepted.
    pub fn set_sent_items_delay(&self, delay: Duration) {
        self.with(|i| i.sent_items_delay = delay);
    }
    /// Exchange stops `account` (its UPN) sending: every send is answered `status` `code`
    /// (`ErrorExceededMessageLimit`, `ErrorMessageSubmissionBlocked`) until unblocked.
    pub fn block_sending(&self, account: &str, status: u16, code: &'static str) {
        self.with(|i| i.blocked.insert(account.to_lowercase(), (status, code)));
    }
    /// Refuses (429, Retry-After 1) a send of an account that already sent `count` messages in
    /// the last `window`: how Exchange Online's per-minute message limit looks to a sender,
    /// enforced over a sliding window (stricter than a fixed minute).
    pub fn set_message_rate(&self, count: usize, window: Duration) {
        self.with(|i| i.message_rate = Some((count, window)));
    }
    /// Refuses (`ErrorExceededMessageLimit`) a sendMail that would take an account past
    /// `count` recipients in a rolling day: Exchange's daily recipient limit.
    pub fn set_recipient_limit(&self, count: usize) {
        self.with(|i| i.recipient_limit = Some(count));
    }
    /// Sends refused for the recipient limit.
    pub fn recipient_refusals(&self) -> usize {
        self.with(|i| i.recipient_refusals)
    }
    /// 429s answered for the message rate.
    pub fn rate_refusals(&self) -> usize {
        self.with(|i| i.rate_refusals)
    }
    /// How often each message id (the client-request-id the service sends) was delivered.
    pub fn deliveries_by_message_id(&self) -> HashMap<String, usize> {
        self.with(|i| {
            let mut counts = HashMap::new();
            for delivered in &i.delivered {
                *counts
                    .entry(delivered.client_request_id.clone())
                    .or_default() += 1;
            }
            counts
        })
    }
    pub fn unblock_sending(&self, account: &str) {
        self.with(|i| i.blocked.remove(&account.to_lowercase()));
    }

    fn count(&self, endpoint: &'static str) {
        self.with(|i| *i.requests.entry(endpoint).or_default() += 1);
    }

    fn next_script(&self, endpoint: &'static str) -> Option<Scripted> {
        self.with(|i| i.scripts.get_mut(endpoint).and_then(VecDeque::pop_front))
    }

    /// A place among the account's concurrent requests, or Outlook's 429 when all four are
    /// taken.
    fn enter(&self, account: &str, crid: &str) -> Result<InFlight, Response> {
        let mut map = self.in_flight.lock().unwrap();
        let count = map.entry(account.to_owned()).or_default();
        if *count >= MAILBOX_CONCURRENCY {
            drop(map);
            self.with(|i| i.concurrency_refusals += 1);
            let mut response = graph_error(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                crid,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(response);
        }
        *count += 1;
        self.max_in_flight.fetch_max(*count, Ordering::SeqCst);
        Ok(InFlight {
            map: self.in_flight.clone(),
            account: account.to_owned(),
        })
    }
}

impl Inner {
    /// Whether the account may send one more message now under the message rate; counts it
    /// when it may.
    fn within_rate(&mut self, account: &str) -> bool {
        let Some((count, window)) = self.message_rate else {
            return true;
        };
        let now = Instant::now();
        let times = self.send_times.entry(account.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= count {
            self.rate_refusals += 1;
            return false;
        }
        times.push_back(now);
        true
    }

    /// Whether the account may send to `recipients` more now under the daily recipient limit;
    /// counts them when it may.
    fn within_recipient_limit(&mut self, account: &str, recipients: usize) -> bool {
        let Some(limit) = self.recipient_limit else {
            return true;
        };
        let now = Instant::now();
        let day = Duration::from_secs(86_400);
        let sent = self.recipients_sent.entry(account.to_owned()).or_default();
        while sent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= day)
        {
            sent.pop_front();
        }
        if sent.iter().map(|(_, n)| n).sum::<usize>() + recipients > limit {
            self.recipient_refusals += 1;
            return false;
        }
        sent.push_back((now, recipients));
        true
    }

    fn deliver(&mut self, mut message: Delivered) {
        self.accepted += 1;
        // Exchange makes up a Message-ID for a message that has none.
        let internet_message_id = message
            .internet_message_id
            .get_or_insert_with(|| {
                format!("<{}@fake.prod.outlook.com>", uuid::Uuid::new_v4().simple())
            })
            .clone();
        if message.save_to_sent_items {
            self.sent_items.push(SentItem {
                account: message.account.clone(),
                internet_message_id,
                id: format!("AAMkSent/{}", uuid::Uuid::new_v4()),
                visible_at: Instant::now() + self.sent_items_delay,
            });
        }
        if !self.forget_deliveries {
            self.delivered.push(message);
        }
    }
}

struct InFlight {
    map: Arc<Mutex<HashMap<String, usize>>>,
    account: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(count) = self.map.lock().unwrap().get_mut(&self.account) {
            *count -= 1;
        }
    }
}

/// Graph's error body.
pub fn graph_error(status: u16, code: &str, message: &str, client_request_id: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": client_request_id,
            }
        }
    });
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("request-id", HeaderValue::from_str(&request_id).unwrap());
    if let Ok(value) = HeaderValue::from_str(client_request_id) {
        headers.insert("client-request-id", value);
    }
    response
}

fn client_request_id(headers: &HeaderMap) -> String {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Checks the bearer token; returns what it was issued for.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<IssuedToken, Response> {
    let crid = client_request_id(headers);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| state.tokens.lookup(t)) {
        Some(issued) => Ok(issued),
        None => Err(graph_error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
            &crid,
        )),
    }
}

/// The scripted answer to one call.
enum Answer {
    /// Refuse the call without doing anything.
    Refuse(Response),
    /// Do the work, then answer success after this long.
    Succeed { after: Duration },
    /// Do the work, then answer this error anyway.
    FailAfterWork(Response),
}

/// The scripted answer for this call (the default latency when nothing is scripted).
fn scripted(state: &AppState, endpoint: &'static str, crid: &str) -> Answer {
    let latency = state.graph.with(|i| i.default_latency);
    match state.graph.next_script(endpoint) {
        Some(Scripted::Fail {
            status,
            code,
            retry_after,
        }) => {
            let mut response =
                graph_error(status, code, &format!("Scripted failure {code}."), crid);
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_str(&after).unwrap());
            }
            Answer::Refuse(response)
        }
        Some(Scripted::AcceptThenFail { status, code }) => Answer::FailAfterWork(graph_error(
            status,
            code,
            &format!("Scripted failure {code} after the message was accepted."),
            crid,
        )),
        Some(Scripted::Delay(delay)) => Answer::Succeed { after: delay },
        None => Answer::Succeed { after: latency },
    }
}

/// For calls that do not send: a scripted failure to answer now, else the scripted delay
/// waited before the work.
async fn apply_script(state: &AppState, endpoint: &'static str, crid: &str) -> Option<Response> {
    match scripted(state, endpoint, crid) {
        Answer::Refuse(response) | Answer::FailAfterWork(response) => Some(response),
        Answer::Succeed { after } => {
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            None
        }
    }
}

/// What every call on `/me` does first: count it, check the bearer token, and take a place
/// among the mailbox's concurrent requests.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &'static str,
) -> Result<(String, IssuedToken, InFlight), Response> {
    let crid = client_request_id(headers);
    state.graph.count(endpoint);
    let issued = authenticate(state, headers)?;
    let in_flight = state.graph.enter(&issued.account, &crid)?;
    Ok((crid, issued, in_flight))
}

/// Graph's 403 when the token lacks every permission that would allow the call.
fn require_scope(issued: &IssuedToken, any_of: &[&str], crid: &str) -> Result<(), Response> {
    let granted = issued
        .scopes
        .iter()
        .any(|s| any_of.iter().any(|needed| s.eq_ignore_ascii_case(needed)));
    if granted {
        Ok(())
    } else {
        Err(graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            crid,
        ))
    }
}

/// Graph's 202 for a call that sends.
fn accepted(crid: &str) -> Response {
    let mut response = StatusCode::ACCEPTED.into_response();
    response.headers_mut().insert(
        "request-id",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).unwrap(),
    );
    if let Ok(v) = HeaderValue::from_str(crid) {
        response.headers_mut().insert("client-request-id", v);
    }
    response
}
