//! A fake Microsoft Graph mail API, written from Microsoft's documentation (see
//! `../shared/reference/microsoft-protocol.md` §2 and §3).
//!
//! It validates requests as strictly as Graph documents them (unknown properties, more than
//! five custom headers, no recipient, bad base64, bodies over 4 MiB, Authorization headers on
//! upload URLs), requires bearer tokens issued by the fake identity platform, implements drafts
//! and upload sessions, records every accepted message in one normalized shape, and can script
//! answers per call: 429/503 with Retry-After, error codes, latency.

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

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, post, put},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use mail_parser::{MessageParser, MimeHeaders};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::fake_identity::TokenRegistry;

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
}

/// A message Graph accepted, whatever form it came in.
#[derive(Clone, Debug, Default)]
pub struct Delivered {
    pub account: String,
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
            .route("/v1.0/me/sendMail", post(send_mail))
            .route("/v1.0/me/messages", post(create_draft))
            .route(
                "/v1.0/me/messages/{id}/attachments/createUploadSession",
                post(create_upload_session),
            )
            .route("/v1.0/me/messages/{id}/send", post(send_draft))
            .route("/v1.0/me/messages/{id}", delete(delete_draft))
            .route("/upload/{session}", put(upload_chunk))
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

    fn count(&self, endpoint: &'static str) {
        self.with(|i| *i.requests.entry(endpoint).or_default() += 1);
    }

    fn next_script(&self, endpoint: &'static str) -> Option<Scripted> {
        self.with(|i| i.scripts.get_mut(endpoint).and_then(VecDeque::pop_front))
    }

    fn enter(&self, account: &str) -> InFlight {
        let mut map = self.in_flight.lock().unwrap();
        let count = map.entry(account.to_owned()).or_default();
        *count += 1;
        self.max_in_flight.fetch_max(*count, Ordering::SeqCst);
        InFlight {
            map: self.in_flight.clone(),
            account: account.to_owned(),
        }
    }
}

impl Inner {
    fn deliver(&mut self, message: Delivered) {
        self.accepted += 1;
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

/// Checks the bearer token; returns the account and its scopes.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(String, Vec<String>), Response> {
    let crid = client_request_id(headers);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| state.tokens.lookup(t)) {
        Some(issued) => Ok((issued.account, issued.scopes)),
        None => Err(graph_error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
            &crid,
        )),
    }
}

/// Applies a scripted answer: Some(response) to answer with it now.
async fn apply_script(state: &AppState, endpoint: &'static str, crid: &str) -> Option<Response> {
    match scripted(state, endpoint, crid) {
        Err(response) => Some(response),
        Ok(delay) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            None
        }
    }
}

/// The scripted answer for this call: a failure to answer with now, or how long the
/// successful answer takes.
fn scripted(state: &AppState, endpoint: &'static str, crid: &str) -> Result<Duration, Response> {
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
            Err(response)
        }
        Some(Scripted::Delay(delay)) => Ok(delay),
        None => Ok(latency),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendMailJson {
    message: MessageJson,
    save_to_sent_items: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MessageJson {
    subject: Option<String>,
    body: Option<BodyJson>,
    #[serde(default)]
    to_recipients: Vec<RecipientJson>,
    #[serde(default)]
    cc_recipients: Vec<RecipientJson>,
    #[serde(default)]
    bcc_recipients: Vec<RecipientJson>,
    #[serde(default)]
    reply_to: Vec<RecipientJson>,
    importance: Option<String>,
    #[serde(default)]
    internet_message_headers: Vec<HeaderJson>,
    #[serde(default)]
    attachments: Vec<AttachmentJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BodyJson {
    content_type: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RecipientJson {
    email_address: AddressJson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressJson {
    address: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderJson {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AttachmentJson {
    #[serde(rename = "@odata.type")]
    odata_type: String,
    name: String,
    content_type: Option<String>,
    content_bytes: String,
    is_inline: Option<bool>,
    content_id: Option<String>,
}

fn bad_request(code: &str, message: &str, crid: &str) -> Response {
    graph_error(400, code, message, crid)
}

/// Parses a JSON `message` resource as Graph validates it.
fn parse_message_json(message: MessageJson, crid: &str) -> Result<Delivered, Response> {
    if message.internet_message_headers.len() > 5 {
        return Err(bad_request(
            "InvalidInternetMessageHeaderCollection",
            "Maximum number of headers in one message should be less than or equal to 5.",
            crid,
        ));
    }
    for h in &message.internet_message_headers {
        if !h.name.to_ascii_lowercase().starts_with("x-") {
            return Err(bad_request(
                "InvalidInternetMessageHeader",
                "The internet message header name should start with 'x-' or 'X-'.",
                crid,
            ));
        }
    }
    let list = |r: Vec<RecipientJson>| -> Vec<(String, String)> {
        r.into_iter()
            .map(|r| {
                (
                    r.email_address.address,
                    r.email_address.name.unwrap_or_default(),
                )
            })
            .collect()
    };
    let mut attachments = Vec::new();
    for a in message.attachments {
        if a.odata_type != "#microsoft.graph.fileAttachment" {
            return Err(bad_request(
                "ErrorInvalidRequest",
                "Unsupported attachment type.",
                crid,
            ));
        }
        let Ok(bytes) = STANDARD.decode(&a.content_bytes) else {
            return Err(bad_request(
                "ErrorInvalidRequest",
                "Invalid base64 in contentBytes.",
                crid,
            ));
        };
        attachments.push(DeliveredAttachment::new(
            &a.name,
            a.content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
            a.content_id,
            a.is_inline.unwrap_or(false),
            &bytes,
        ));
    }
    let (text_body, html_body) = match message.body {
        Some(b) if b.content_type.eq_ignore_ascii_case("html") => (None, Some(b.content)),
        Some(b) if b.content_type.eq_ignore_ascii_case("text") => (Some(b.content), None),
        Some(_) => {
            return Err(bad_request(
                "RequestBodyRead",
                "Invalid body contentType.",
                crid,
            ));
        }
        None => (None, None),
    };
    if let Some(importance) = &message.importance
        && !["low", "normal", "high"].contains(&importance.to_ascii_lowercase().as_str())
    {
        return Err(bad_request("RequestBodyRead", "Invalid importance.", crid));
    }
    Ok(Delivered {
        form: "json".into(),
        client_request_id: crid.to_owned(),
        subject: message.subject.unwrap_or_default(),
        to: list(message.to_recipients),
        cc: list(message.cc_recipients),
        bcc: list(message.bcc_recipients),
        reply_to: list(message.reply_to),
        text_body,
        html_body,
        headers: message
            .internet_message_headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        importance: message.importance,
        save_to_sent_items: true,
        attachments,
        ..Default::default()
    })
}

/// Parses a MIME body (base64 text) as Graph does.
fn parse_mime(body: &[u8], crid: &str) -> Result<Delivered, Response> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let Ok(raw) = STANDARD.decode(&text) else {
        return Err(bad_request(
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
            crid,
        ));
    };
    let Some(parsed) = MessageParser::default().parse(&raw) else {
        return Err(bad_request(
            "ErrorMimeContentInvalid",
            "The MIME content is invalid.",
            crid,
        ));
    };
    let list = |a: Option<&mail_parser::Address>| -> Vec<(String, String)> {
        a.map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x.address().unwrap_or_default().to_owned(),
                        x.name().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let headers = parsed
        .headers()
        .iter()
        .filter(|h| h.name().to_ascii_lowercase().starts_with("x-"))
        .map(|h| {
            (
                h.name().to_owned(),
                parsed
                    .header_raw(h.name())
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            )
        })
        .collect();
    let attachments = parsed
        .attachments()
        .map(|a| {
            let content_id = a.content_id().map(str::to_owned);
            let inline = content_id.is_some();
            let content_type = a
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
                .unwrap_or_default();
            DeliveredAttachment::new(
                a.attachment_name().unwrap_or_default(),
                &content_type,
                content_id,
                inline,
                &attachment_bytes(&raw, a),
            )
        })
        .collect();
    Ok(Delivered {
        form: "mime".into(),
        client_request_id: crid.to_owned(),
        subject: parsed.subject().unwrap_or_default().to_owned(),
        to: list(parsed.to()),
        cc: list(parsed.cc()),
        bcc: list(parsed.bcc()),
        reply_to: list(parsed.reply_to()),
        text_body: part_is(&parsed, parsed.text_body.first(), "plain")
            .then(|| parsed.body_text(0).map(|t| t.into_owned()))
            .flatten(),
        html_body: part_is(&parsed, parsed.html_body.first(), "html")
            .then(|| parsed.body_html(0).map(|t| t.into_owned()))
            .flatten(),
        headers,
        importance: parsed.header_raw("Importance").map(|v| v.trim().to_owned()),
        save_to_sent_items: true,
        attachments,
        ..Default::default()
    })
}

/// Whether a body part is text/<subtype> (a part without Content-Type is text/plain).
fn part_is(parsed: &mail_parser::Message<'_>, id: Option<&u32>, subtype: &str) -> bool {
    let Some(part) = id.and_then(|id| parsed.part(*id)) else {
        return false;
    };
    match part.content_type() {
        Some(ct) => {
            ct.ctype().eq_ignore_ascii_case("text")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
        }
        None => subtype == "plain",
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Parses a sendMail or draft body in either form.
fn parse_body(
    headers: &HeaderMap,
    body: &[u8],
    crid: &str,
    wrapped: bool,
) -> Result<Delivered, Response> {
    if body.len() > MAX_BODY {
        return Err(graph_error(
            413,
            "RequestEntityTooLarge",
            "The request body is too large.",
            crid,
        ));
    }
    let ctype = content_type(headers);
    let mut delivered = if ctype.starts_with("text/plain") {
        parse_mime(body, crid)?
    } else if ctype.starts_with("application/json") {
        if wrapped {
            let parsed: SendMailJson = serde_json::from_slice(body)
                .map_err(|e| bad_request("RequestBodyRead", &format!("Invalid JSON: {e}"), crid))?;
            let mut delivered = parse_message_json(parsed.message, crid)?;
            delivered.save_to_sent_items = parsed.save_to_sent_items.unwrap_or(true);
            delivered
        } else {
            let parsed: MessageJson = serde_json::from_slice(body)
                .map_err(|e| bad_request("RequestBodyRead", &format!("Invalid JSON: {e}"), crid))?;
            parse_message_json(parsed, crid)?
        }
    } else {
        return Err(graph_error(
            415,
            "UnsupportedMediaType",
            "Unsupported content type.",
            crid,
        ));
    };
    delivered.client_request_id = crid.to_owned();
    Ok(delivered)
}

async fn send_mail(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let crid = client_request_id(&headers);
    state.graph.count("sendMail");
    let (account, scopes) = match authenticate(&state, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let _in_flight = state.graph.enter(&account);
    // Graph takes the message before its answer is on the way: an answer that comes too late
    // for the caller (a timeout on its side) still means the message was sent.
    let answer_after = match scripted(&state, "sendMail", &crid) {
        Ok(delay) => delay,
        Err(response) => return response,
    };
    if !scopes.iter().any(|s| s.eq_ignore_ascii_case("Mail.Send")) {
        return graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            &crid,
        );
    }
    let mut delivered = match parse_body(&headers, &body, &crid, true) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if delivered.to.is_empty() && delivered.cc.is_empty() && delivered.bcc.is_empty() {
        return bad_request(
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid.",
            &crid,
        );
    }
    delivered.account = account;
    state.graph.with(|i| i.deliver(delivered));
    if !answer_after.is_zero() {
        tokio::time::sleep(answer_after).await;
    }
    accepted(&crid)
}

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

fn require_read_write(scopes: &[String], crid: &str) -> Result<(), Response> {
    if scopes
        .iter()
        .any(|s| s.eq_ignore_ascii_case("Mail.ReadWrite"))
    {
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

async fn create_draft(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let crid = client_request_id(&headers);
    state.graph.count("createDraft");
    let (account, scopes) = match authenticate(&state, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let _in_flight = state.graph.enter(&account);
    if let Some(response) = apply_script(&state, "createDraft", &crid).await {
        return response;
    }
    if let Err(r) = require_read_write(&scopes, &crid) {
        return r;
    }
    let message = match parse_body(&headers, &body, &crid, false) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let id = format!("AAMkAGI2/{}+draft=", uuid::Uuid::new_v4());
    state.graph.with(|i| {
        i.drafts.insert(
            id.clone(),
            Draft {
                account,
                message,
                sessions: Vec::new(),
            },
        )
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "isDraft": true})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadSessionRequest {
    #[serde(rename = "AttachmentItem")]
    attachment_item: AttachmentItem,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AttachmentItem {
    attachment_type: String,
    name: String,
    size: usize,
    content_type: Option<String>,
    is_inline: Option<bool>,
    content_id: Option<String>,
}

async fn create_upload_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let crid = client_request_id(&headers);
    state.graph.count("createUploadSession");
    let (account, scopes) = match authenticate(&state, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let _in_flight = state.graph.enter(&account);
    if let Some(response) = apply_script(&state, "createUploadSession", &crid).await {
        return response;
    }
    if let Err(r) = require_read_write(&scopes, &crid) {
        return r;
    }
    let request: UploadSessionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("RequestBodyRead", &format!("Invalid JSON: {e}"), &crid),
    };
    let item = request.attachment_item;
    if item.attachment_type != "file" || item.size == 0 || item.size > 150 * 1024 * 1024 {
        return bad_request("ErrorInvalidRequest", "Invalid attachment item.", &crid);
    }
    let session = uuid::Uuid::new_v4().to_string();
    let found = state.graph.with(|i| match i.drafts.get_mut(&id) {
        Some(draft) if draft.account == account => {
            draft.sessions.push(session.clone());
            i.sessions.insert(
                session.clone(),
                UploadSession {
                    draft_id: id.clone(),
                    attachment: DeliveredAttachmentSpec {
                        name: item.name,
                        content_type: item
                            .content_type
                            .unwrap_or_else(|| "application/octet-stream".into()),
                        size: item.size,
                        inline: item.is_inline.unwrap_or(false),
                        content_id: item.content_id,
                    },
                    received: Vec::new(),
                },
            );
            true
        }
        _ => false,
    });
    if !found {
        return graph_error(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
            &crid,
        );
    }
    let upload_url = format!(
        "{}/upload/{session}?authtoken=signed-{}",
        state.graph.base_url,
        uuid::Uuid::new_v4()
    );
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "uploadUrl": upload_url,
            "expirationDateTime": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
            "nextExpectedRanges": ["0-"],
        })),
    )
        .into_response()
}

async fn upload_chunk(
    State(state): State<AppState>,
    Path(session): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let crid = client_request_id(&headers);
    state.graph.count("uploadChunk");
    if headers.contains_key(header::AUTHORIZATION) {
        // Graph: "Do not specify an Authorization request header" on the upload URL.
        state
            .graph
            .with(|i| i.upload_requests_with_authorization += 1);
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "Authorization header is not allowed on the upload URL.",
            &crid,
        );
    }
    if !query
        .get("authtoken")
        .is_some_and(|t| t.starts_with("signed-"))
    {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "Missing upload token.",
            &crid,
        );
    }
    if let Some(response) = apply_script(&state, "uploadChunk", &crid).await {
        return response;
    }
    let range = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    let Some((start, end, total)) = range else {
        return bad_request(
            "InvalidRange",
            "Content-Range is missing or malformed.",
            &crid,
        );
    };
    let mut inner = state.graph.inner.lock().unwrap();
    inner.upload_chunk_sizes.push(body.len());
    let Some(upload) = inner.sessions.get_mut(&session) else {
        return graph_error(404, "ErrorItemNotFound", "Upload session not found.", &crid);
    };
    let last = end + 1 == total;
    let chunk_ok = body.len() == end - start + 1
        && body.len() <= MAX_BODY
        && (last || body.len().is_multiple_of(CHUNK_UNIT))
        && start == upload.received.len()
        && total == upload.attachment.size;
    if !chunk_ok {
        return bad_request(
            "InvalidRange",
            "The Content-Range does not match the next expected range, or the chunk is not a multiple of 320 KiB.",
            &crid,
        );
    }
    upload.received.extend_from_slice(&body);
    if !last {
        let next = upload.received.len();
        return (
            StatusCode::OK,
            axum::Json(json!({"expirationDateTime": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(), "nextExpectedRanges": [format!("{next}-")]})),
        )
            .into_response();
    }
    let spec = upload.attachment.clone();
    let draft_id = upload.draft_id.clone();
    let bytes = std::mem::take(&mut upload.received);
    if let Some(draft) = inner.drafts.get_mut(&draft_id) {
        draft.message.attachments.push(DeliveredAttachment::new(
            &spec.name,
            &spec.content_type,
            spec.content_id,
            spec.inline,
            &bytes,
        ));
    }
    inner.sessions.remove(&session);
    StatusCode::CREATED.into_response()
}

fn parse_content_range(value: &str) -> Option<(usize, usize, usize)> {
    let rest = value.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

async fn send_draft(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let crid = client_request_id(&headers);
    state.graph.count("sendDraft");
    let (account, _) = match authenticate(&state, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let _in_flight = state.graph.enter(&account);
    if let Some(response) = apply_script(&state, "sendDraft", &crid).await {
        return response;
    }
    let result = state.graph.with(|i| {
        let pending_uploads = i.sessions.values().any(|s| s.draft_id == id);
        match i.drafts.get(&id) {
            Some(draft) if draft.account == account && !pending_uploads => {
                let draft = i.drafts.remove(&id).unwrap();
                let mut delivered = draft.message;
                delivered.account = account.clone();
                delivered.form = "draft".into();
                delivered.client_request_id = crid.clone();
                i.deliver(delivered);
                Ok(())
            }
            Some(_) => Err(bad_request(
                "ErrorInvalidOperation",
                "The draft has incomplete attachment uploads.",
                &crid,
            )),
            None => Err(graph_error(
                404,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
                &crid,
            )),
        }
    });
    match result {
        Ok(()) => accepted(&crid),
        Err(r) => r,
    }
}

async fn delete_draft(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let crid = client_request_id(&headers);
    let (account, _) = match authenticate(&state, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let _in_flight = state.graph.enter(&account);
    state.graph.with(|i| match i.drafts.get(&id) {
        Some(d) if d.account == account => {
            i.drafts.remove(&id);
            i.sessions.retain(|_, s| s.draft_id != id);
            i.deleted_drafts.push(id);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => graph_error(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
            &crid,
        ),
    })
}

/// An attachment's bytes as they travel: the part's raw body decoded from base64, or the
/// parser's contents for other encodings. (A MIME parser reads a text/* part as text, in a
/// charset nobody declared; the bytes on the wire are what a recipient saves.)
pub fn attachment_bytes(raw: &[u8], part: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    use base64::Engine;
    use mail_parser::MimeHeaders;
    let base64 = part
        .content_transfer_encoding()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
    if !base64 {
        return part.contents().to_vec();
    }
    let body: Vec<u8> = raw[part.raw_body_offset() as usize..part.raw_end_offset() as usize]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&body)
        .unwrap_or_else(|_| part.contents().to_vec())
}
