//! The admin page's actions. Each is a form that carries the session's CSRF token, goes through
//! the same core as the RPCs (as the admin, with every right), and leaves an audit line with the
//! admin's identity (Connect and Disconnect write theirs in the post office).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};

use super::{AdminPage, Session, session_of, to_sign_in};
use crate::{
    audit::{AuditEvent, AuditRecord},
    check::test_mail::test_message,
    domain::{Mailbox, Recipient},
    postoffice::SendRequest,
};

/// A submitted form's fields.
pub(super) type Fields = HashMap<String, String>;

/// The session of a state-changing request whose form carries the session's CSRF token, or
/// the page that refuses it (403; nothing changes).
pub(super) async fn authorized(
    page: &AdminPage,
    headers: &HeaderMap,
    form: &Fields,
) -> Result<Session, Box<Response>> {
    let Some(session) = session_of(page, headers).await else {
        return Err(Box::new(page.notice(
            StatusCode::FORBIDDEN,
            None,
            "Not signed in",
            "Your session has ended. Sign in again; nothing changed.",
        )));
    };
    if session.accepts_csrf(form.get("csrf").map(String::as_str)) {
        return Ok(session);
    }
    tracing::warn!("admin form without this session's CSRF token refused");
    Err(Box::new(page.notice(
        StatusCode::FORBIDDEN,
        Some(&session),
        "Refused",
        "This form did not come from this admin page (its security token is missing or stale). \
         Nothing changed. Go back, reload the page and try again.",
    )))
}

/// The session and the mailbox a form names, or the page that refuses the request.
async fn authorized_for_mailbox(
    page: &AdminPage,
    headers: &HeaderMap,
    form: &Fields,
) -> Result<(Session, Mailbox), Box<Response>> {
    let session = authorized(page, headers, form).await?;
    let mailbox = page.mailbox_field(&session, form)?;
    Ok((session, mailbox))
}

impl AdminPage {
    /// The mailbox a form names, or a page naming the field.
    fn mailbox_field(&self, session: &Session, form: &Fields) -> Result<Mailbox, Box<Response>> {
        let value = form.get("mailbox").map(String::as_str).unwrap_or_default();
        Mailbox::parse("mailbox", value).map_err(|error| {
            Box::new(self.notice(
                StatusCode::BAD_REQUEST,
                Some(session),
                "Check the mailbox",
                &error.to_string(),
            ))
        })
    }
}

/// `POST /admin/connect`: a sign-in link for the mailbox's owner.
pub(super) async fn connect(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let (session, mailbox) = match authorized_for_mailbox(&page, &headers, &form).await {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let force_consent = form.get("force_consent").is_some_and(|v| v == "on");
    let caller = AdminPage::caller(&session);
    let link = match page
        .parts
        .post_office
        .connect(&caller, &mailbox, force_consent)
        .await
    {
        Ok(link) => link,
        Err(error) => return page.failure(&session, "Connect", &error),
    };
    let now = page.parts.clock.now();
    let context = minijinja::context! {
        mailbox => mailbox.as_str(),
        url => link.url,
        expires => link.expires_at.format("%H:%M UTC").to_string(),
        // Rounded up: a link made just now has its whole ten minutes.
        minutes => ((link.expires_at - now).num_seconds() + 59).div_euclid(60),
        owner => session.signed_in_as(&mailbox),
        since => now.timestamp_millis(),
    };
    page.render(StatusCode::OK, "connect.html", Some(&session), context)
}

/// `GET /admin/disconnect?mailbox=`: the confirmation.
pub(super) async fn confirm_disconnect(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(query): Query<Fields>,
) -> Response {
    let Some(session) = session_of(&page, &headers).await else {
        return to_sign_in();
    };
    let mailbox = match page.mailbox_field(&session, &query) {
        Ok(mailbox) => mailbox,
        Err(refused) => return *refused,
    };
    let context = minijinja::context! { mailbox => mailbox.as_str() };
    page.render(StatusCode::OK, "disconnect.html", Some(&session), context)
}

/// `POST /admin/disconnect`: forgets the mailbox's tokens.
pub(super) async fn disconnect(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let (session, mailbox) = match authorized_for_mailbox(&page, &headers, &form).await {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let caller = AdminPage::caller(&session);
    match page.parts.post_office.disconnect(&caller, &mailbox).await {
        Ok(()) => page.notice(
            StatusCode::OK,
            Some(&session),
            &format!("Disconnected {mailbox}"),
            "Its tokens are deleted and it can no longer send. Connect it again to resume.",
        ),
        Err(error) => page.failure(&session, "Disconnect", &error),
    }
}

/// `POST /admin/test-mail`: the set-up test mail, through the real path.
pub(super) async fn test_mail(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let (session, mailbox) = match authorized_for_mailbox(&page, &headers, &form).await {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let to = form.get("to").map(|t| t.trim()).unwrap_or_default();
    let (subject, message) = match Recipient::parse("to", to, "") {
        Ok(recipient) => test_message(
            recipient,
            page.parts.clock.now(),
            &format!("the admin page ({})", session.admin),
            page.parts.settings.max_message_bytes,
        ),
        Err(error) => {
            return page.notice(
                StatusCode::BAD_REQUEST,
                Some(&session),
                "Check the recipient",
                &error.to_string(),
            );
        }
    };
    let request = match message {
        Ok(message) => SendRequest {
            mailbox: Some(mailbox.clone()),
            message,
            idempotency_key: None,
            request_hash: String::new(),
        },
        Err(error) => {
            return page.notice(
                StatusCode::BAD_REQUEST,
                Some(&session),
                "Not sent",
                &error.to_string(),
            );
        }
    };
    let caller = AdminPage::caller(&session);
    let message_id = uuid::Uuid::now_v7().to_string();
    let post_office = &page.parts.post_office;
    let sent = match post_office.resolve_sender(&caller, Some(&mailbox)).await {
        Ok(sender) => post_office.send(&sender, &request, &message_id).await,
        Err(error) => Err(error),
    };
    let outcome = if sent.is_ok() { "sent" } else { "failed" };
    page.parts.audit.record(
        AuditRecord::new(AuditEvent::TestMail, outcome)
            .caller(&caller.name)
            .mailbox(mailbox.as_str()),
    );
    match sent {
        Ok(receipt) => page.notice(
            StatusCode::OK,
            Some(&session),
            "Test mail sent",
            &format!(
                "\"{subject}\" went from {mailbox} to {to} (message id {}). Look for it in the \
                 recipient's inbox.",
                receipt.message_id
            ),
        ),
        Err(error) => page.failure(&session, "The test mail", &error),
    }
}

/// `POST /admin/cancel`: a queued message (`message_id`) or a batch's queued messages
/// (`batch_id`).
pub(super) async fn cancel(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let session = match authorized(&page, &headers, &form).await {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let caller = AdminPage::caller(&session);
    let outbox = &page.parts.outbox;
    let field = |name: &str| form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let (what, result) = match (field("message_id"), field("batch_id")) {
        (Some(id), _) => (
            format!("message {id}"),
            outbox.cancel(&caller, id).await.map(|_| ()),
        ),
        (None, Some(id)) => (
            format!("batch {id}"),
            outbox.cancel_batch(&caller, id).await.map(|_| ()),
        ),
        (None, None) => {
            return page.notice(
                StatusCode::BAD_REQUEST,
                Some(&session),
                "Nothing to cancel",
                "message_id or batch_id is required.",
            );
        }
    };
    page.parts.audit.record(
        AuditRecord::new(
            AuditEvent::Cancel,
            if result.is_ok() { "ok" } else { "failed" },
        )
        .caller(&caller.name)
        .detail(what.clone()),
    );
    match result {
        Ok(()) => Redirect::to("/admin/outbox").into_response(),
        Err(error) => page.failure(&session, &format!("Cancelling {what}"), &error),
    }
}

/// `POST /admin/checks`: runs `check` again.
pub(super) async fn run_checks(
    State(page): State<Arc<AdminPage>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let session = match authorized(&page, &headers, &form).await {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let report = page.run_checks().await;
    page.parts.audit.record(
        AuditRecord::new(
            AuditEvent::Checks,
            if report.1.ok { "ok" } else { "failed" },
        )
        .caller(&session.admin),
    );
    page.replace_checks(report).await;
    Redirect::to("/admin#checks").into_response()
}
