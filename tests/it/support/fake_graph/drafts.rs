//! Drafts and their attachments: `POST /me/messages`, small attachments posted one by one,
//! upload sessions for large ones (chunked PUTs to a pre-authenticated URL), sending and
//! deleting a draft. Drafts need `Mail.ReadWrite`.
//!
//! "Attach large files to Outlook messages" chooses per file: under 3 MB a `POST` on the
//! attachments, 3 MB to 150 MB an upload session. Graph refuses an upload session for a smaller
//! file (`ErrorAttachmentSizeShouldNotBeLessThanMinimumSize`) and a posted attachment over about
//! 3 MiB (413; community measurements put the edge at 3,145,611 bytes).

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    Answer, AppState, CHUNK_UNIT, DeliveredAttachment, DeliveredAttachmentSpec, Draft, MAX_BODY,
    UploadSession, admit, apply_script, client_request_id, graph_error,
    mailbox::{finish, refused_by_exchange, sent_as},
    parse::{AttachmentJson, bad_request, parse_body, parse_file_attachment},
    require_scope, scripted,
};

/// The smallest file an upload session takes (the documented 3 MB).
pub const UPLOAD_SESSION_MIN: usize = 3_000_000;
/// The largest file a `POST` on the attachments takes.
pub const POSTED_ATTACHMENT_MAX: usize = 3 * 1024 * 1024;

const READ_WRITE: &[&str] = &["Mail.ReadWrite"];

fn not_found(crid: &str) -> Response {
    graph_error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
        crid,
    )
}

pub(super) async fn create_draft(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (crid, issued, _in_flight) = match admit(&state, &headers, "createDraft") {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    if let Some(response) = apply_script(&state, "createDraft", &crid).await {
        return response;
    }
    if let Err(r) = require_scope(&issued, READ_WRITE, &crid) {
        return r;
    }
    let mut message = match parse_body(&headers, &body, &crid, false) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Err(r) = sent_as(&mut message, &issued.user, &crid) {
        return r;
    }
    let account = issued.account;
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

/// `POST /me/messages/{id}/attachments`: one small `fileAttachment`.
pub(super) async fn add_attachment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (crid, issued, _in_flight) = match admit(&state, &headers, "addAttachment") {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    if let Some(response) = apply_script(&state, "addAttachment", &crid).await {
        return response;
    }
    if let Err(r) = require_scope(&issued, READ_WRITE, &crid) {
        return r;
    }
    if body.len() > MAX_BODY {
        return graph_error(
            413,
            "RequestEntityTooLarge",
            "The request body is too large.",
            &crid,
        );
    }
    let parsed: AttachmentJson = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad_request("RequestBodyRead", &format!("Invalid JSON: {e}"), &crid),
    };
    let attachment = match parse_file_attachment(parsed, &crid) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if attachment.size > POSTED_ATTACHMENT_MAX {
        return graph_error(
            413,
            "RequestEntityTooLarge",
            "The attachment is too large to post: use an upload session.",
            &crid,
        );
    }
    let attachment_id = format!("AAMkAtt/{}", uuid::Uuid::new_v4());
    let added = state.graph.with(|i| match i.drafts.get_mut(&id) {
        Some(draft) if draft.account == issued.account => {
            draft.message.attachments.push(attachment);
            i.small_attachment_posts += 1;
            true
        }
        _ => false,
    });
    if !added {
        return not_found(&crid);
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({"@odata.type": "#microsoft.graph.fileAttachment", "id": attachment_id})),
    )
        .into_response()
}

pub(super) async fn create_upload_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (crid, issued, _in_flight) = match admit(&state, &headers, "createUploadSession") {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let account = issued.account.clone();
    if let Some(response) = apply_script(&state, "createUploadSession", &crid).await {
        return response;
    }
    if let Err(r) = require_scope(&issued, READ_WRITE, &crid) {
        return r;
    }
    let request: UploadSessionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request("RequestBodyRead", &format!("Invalid JSON: {e}"), &crid),
    };
    let item = request.attachment_item;
    if item.attachment_type != "file" || item.size > 150 * 1024 * 1024 {
        return bad_request("ErrorInvalidRequest", "Invalid attachment item.", &crid);
    }
    if item.size < UPLOAD_SESSION_MIN {
        return bad_request(
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be greater than the minimum size.",
            &crid,
        );
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
        return not_found(&crid);
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

pub(super) async fn upload_chunk(
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

pub(super) async fn send_draft(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (crid, issued, _in_flight) = match admit(&state, &headers, "sendDraft") {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let answer = scripted(&state, "sendDraft", &crid);
    if let Answer::Refuse(response) = answer {
        return response;
    }
    if let Err(r) = require_scope(&issued, &["Mail.Send"], &crid) {
        return r;
    }
    if let Some(r) = refused_by_exchange(&state, &issued, &crid) {
        return r;
    }
    let account = issued.account;
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
            // A sent draft leaves Drafts: sending it again finds nothing.
            None => Err(not_found(&crid)),
        }
    });
    match result {
        Ok(()) => finish(answer, &crid).await,
        Err(r) => r,
    }
}

pub(super) async fn delete_draft(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (crid, issued, _in_flight) = match admit(&state, &headers, "deleteDraft") {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let account = issued.account;
    state.graph.with(|i| match i.drafts.get(&id) {
        Some(d) if d.account == account => {
            i.drafts.remove(&id);
            i.sessions.retain(|_, s| s.draft_id != id);
            i.deleted_drafts.push(id);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => not_found(&crid),
    })
}
