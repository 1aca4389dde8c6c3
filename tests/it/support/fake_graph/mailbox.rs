//! The mailbox itself: `sendMail`, the signed-in user (`/me`), and a folder's messages
//! filtered by `internetMessageId` (how a sender finds out whether a message went out).

use std::{collections::HashMap, time::Instant};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    Answer, AppState, Delivered, IssuedToken, User, accepted, admit, graph_error,
    parse::{bad_request, parse_body},
    require_scope, scripted,
};

pub(super) async fn send_mail(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (crid, issued, _in_flight) = match admit(&state, &headers, "sendMail") {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    // Graph takes the message before its answer is on the way: an answer that comes too late
    // for the caller (a timeout on its side), or an error answered after the fact, still means
    // the message was sent.
    let answer = scripted(&state, "sendMail", &crid);
    if let Answer::Refuse(response) = answer {
        return response;
    }
    if let Err(r) = require_scope(&issued, &["Mail.Send"], &crid) {
        return r;
    }
    if let Some(r) = refused_by_exchange(&state, &issued, &crid) {
        return r;
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
    if let Err(r) = sent_as(&mut delivered, &issued.user, &crid) {
        return r;
    }
    let recipients = delivered.to.len() + delivered.cc.len() + delivered.bcc.len();
    if !state
        .graph
        .with(|i| i.within_recipient_limit(&issued.account, recipients))
    {
        // Exchange stops an account that passes its rolling daily recipient limit.
        return graph_error(
            429,
            "ErrorExceededMessageLimit",
            "Message submission is blocked for this mailbox: it exceeded its recipient limit.",
            &crid,
        );
    }
    delivered.account = issued.account;
    state.graph.with(|i| i.deliver(delivered));
    finish(answer, &crid).await
}

/// The answer of a call that sent: success after the scripted delay, or the scripted error.
pub(super) async fn finish(answer: Answer, crid: &str) -> Response {
    match answer {
        Answer::Succeed { after } => {
            if !after.is_zero() {
                tokio::time::sleep(after).await;
            }
            accepted(crid)
        }
        Answer::FailAfterWork(response) | Answer::Refuse(response) => response,
    }
}

/// Exchange's refusal when it has stopped the account sending, or the account is over its
/// message rate.
pub(super) fn refused_by_exchange(
    state: &AppState,
    issued: &IssuedToken,
    crid: &str,
) -> Option<Response> {
    if !state.graph.with(|i| i.within_rate(&issued.account)) {
        let mut response = graph_error(
            429,
            "ApplicationThrottled",
            "Too many messages sent by this mailbox; retry later.",
            crid,
        );
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return Some(response);
    }
    let blocked = state
        .graph
        .with(|i| i.blocked.get(&issued.account.to_lowercase()).copied());
    blocked.map(|(status, code)| {
        graph_error(
            status,
            code,
            "Message submission is blocked for this mailbox: it exceeded a sending limit.",
            crid,
        )
    })
}

/// Which address the message goes out from. The JSON form has no `From` and goes out from the
/// user's primary SMTP address; a MIME `From` must be one of the user's own addresses, or
/// Exchange refuses with `ErrorSendAsDenied`. (Sending from an alias needs a tenant setting;
/// this fake, like a tenant without it, accepts only the primary address.)
pub(super) fn sent_as(delivered: &mut Delivered, user: &User, crid: &str) -> Result<(), Response> {
    if delivered.from.is_empty() {
        delivered.from = user.mail.clone();
        return Ok(());
    }
    if delivered.from.eq_ignore_ascii_case(&user.mail) {
        return Ok(());
    }
    Err(graph_error(
        403,
        "ErrorSendAsDenied",
        "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.",
        crid,
    ))
}

/// `GET /me`: the signed-in user (needs `User.Read`). As Graph does, `proxyAddresses` is only
/// returned when `$select` asks for it.
pub(super) async fn me(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (crid, issued, _in_flight) = match admit(&state, &headers, "me") {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    if let Err(r) = require_scope(
        &issued,
        &[
            "User.Read",
            "User.ReadWrite",
            "User.ReadBasic.All",
            "User.Read.All",
        ],
        &crid,
    ) {
        return r;
    }
    let user = issued.user;
    let full = json!({
        "id": user.oid,
        "mail": user.mail,
        "userPrincipalName": user.upn,
        "displayName": user.upn.split('@').next().unwrap_or_default(),
        "proxyAddresses": user.proxy_addresses,
    });
    let selected: Vec<String> = match query.get("$select") {
        Some(select) => select.split(',').map(|s| s.trim().to_owned()).collect(),
        None => ["id", "mail", "userPrincipalName", "displayName"]
            .map(str::to_owned)
            .to_vec(),
    };
    let mut answer =
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity"});
    for name in selected {
        match full.get(&name) {
            Some(value) => answer[&name] = value.clone(),
            None => {
                return bad_request(
                    "BadRequest",
                    &format!(
                        "Could not find a property named '{name}' on type 'microsoft.graph.user'."
                    ),
                    &crid,
                );
            }
        }
    }
    axum::Json(answer).into_response()
}

/// `GET /me/mailFolders/{folder}/messages?$filter=internetMessageId eq '<…>'`: needs a read
/// permission. Only the well-known `sentitems` folder and this one filter are implemented; any
/// other filter is refused rather than answered wrongly.
pub(super) async fn folder_messages(
    State(state): State<AppState>,
    Path(folder): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (crid, issued, _in_flight) = match admit(&state, &headers, "listMessages") {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    if let Err(r) = require_scope(
        &issued,
        &["Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite"],
        &crid,
    ) {
        return r;
    }
    if !folder.eq_ignore_ascii_case("sentitems") {
        return graph_error(
            404,
            "ErrorItemNotFound",
            "The specified folder could not be found in the store.",
            &crid,
        );
    }
    let Some(wanted) = query.get("$filter").and_then(|f| parse_id_filter(f)) else {
        return bad_request(
            "BadRequest",
            "Invalid filter clause: only internetMessageId eq '<id>' is supported here.",
            &crid,
        );
    };
    let now = Instant::now();
    let found: Vec<Value> = state.graph.with(|i| {
        i.sent_items
            .iter()
            .filter(|s| {
                s.account == issued.account
                    && s.visible_at <= now
                    && s.internet_message_id == wanted
            })
            .map(|s| json!({"id": s.id, "internetMessageId": s.internet_message_id}))
            .collect()
    });
    axum::Json(json!({"value": found})).into_response()
}

/// `internetMessageId eq '<value>'`, with OData's doubled single quotes.
fn parse_id_filter(filter: &str) -> Option<String> {
    let rest = filter.trim().strip_prefix("internetMessageId eq '")?;
    let inner = rest.strip_suffix('\'')?;
    if inner.replace("''", "").contains('\'') {
        return None;
    }
    Some(inner.replace("''", "'"))
}
