//! Where Microsoft Graph is stricter than the first fakes were (issue 10): attachments chosen
//! per file on the draft path, no resend after an ambiguous answer (and finding the message in
//! Sent Items instead), Outlook's four requests per mailbox across replicas, Exchange stopping a
//! mailbox, and `skip_sent_items` on the MIME form.

use std::time::Duration;

use graph_mailer::proto;
use tonic::Code;

use crate::support::{
    MAILBOX, Microsoft, TestApp, attachment, connected_app, connected_with_drafts,
    fake_graph::{Scripted, sha256_hex},
    keyed_message, patterned_bytes,
    postgres::TestDatabase,
    simple_message,
};

#[tokio::test]
async fn a_large_file_and_a_small_inline_logo_each_take_their_own_way_into_the_draft() {
    let ms = Microsoft::start().await;
    let app = connected_with_drafts(&ms).await;
    let pdf = patterned_bytes(5 * 1024 * 1024);
    let logo = patterned_bytes(10 * 1024);
    let request = proto::SendMailRequest {
        html_body: "<p>Report <img src=\"cid:logo\"></p>".into(),
        text_body: String::new(),
        attachments: vec![
            attachment("report.pdf", "application/pdf", pdf.clone(), ""),
            attachment("logo.png", "image/png", logo.clone(), "logo"),
        ],
        ..simple_message(MAILBOX)
    };
    app.client().send_mail(request).await.unwrap();
    let delivered = ms.graph.delivered();
    assert_eq!(delivered.len(), 1);
    let message = &delivered[0];
    assert_eq!(message.form, "draft");
    let pdf_sent = message.attachments.iter().find(|a| a.name == "report.pdf");
    assert_eq!(pdf_sent.map(|a| a.sha256.clone()), Some(sha256_hex(&pdf)));
    let logo_sent = message
        .attachments
        .iter()
        .find(|a| a.name == "logo.png")
        .unwrap();
    assert_eq!(logo_sent.sha256, sha256_hex(&logo));
    assert!(logo_sent.inline);
    assert_eq!(logo_sent.content_id.as_deref(), Some("logo"));
    assert_eq!(ms.graph.requests("createUploadSession"), 1, "the PDF only");
    assert_eq!(ms.graph.small_attachment_posts(), 1, "the logo");
}

#[tokio::test]
async fn a_body_too_large_for_one_graph_request_is_refused_before_any_draft() {
    let ms = Microsoft::start().await;
    let app = connected_with_drafts(&ms).await;
    let request = proto::SendMailRequest {
        html_body: format!("<p>{}</p>", "x".repeat(5 * 1024 * 1024)),
        ..simple_message(MAILBOX)
    };
    let status = app.client().send_mail(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("4 MB") && status.message().contains("body"),
        "{}",
        status.message()
    );
    assert_eq!(ms.graph.requests("createDraft"), 0);
    assert_eq!(ms.graph.requests("sendMail"), 0);
}

#[tokio::test]
async fn a_503_after_sendmail_accepted_the_message_is_not_resent_and_is_found_in_sent_items() {
    let ms = Microsoft::start().await;
    let app = connected_app(
        &ms,
        TestApp::builder().env("GRAPH_SCOPES", "Mail.Send Mail.ReadBasic"),
    )
    .await;
    ms.graph.set_sent_items_delay(Duration::from_millis(1500));
    ms.graph.script(
        "sendMail",
        [Scripted::accepted_then(503, "ServiceUnavailable")],
    );
    let response = app
        .client()
        .send_mail(keyed_message("k1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ms.graph.delivered().len(), 1, "exactly one copy went out");
    assert_eq!(ms.graph.requests("sendMail"), 1, "never resent");
    assert!(ms.graph.requests("listMessages") >= 2, "polled Sent Items");
    let again = app
        .client()
        .send_mail(keyed_message("k1"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.deduplicated);
    assert_eq!(again.message_id, response.message_id);
    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(status.sent_total, 1);
    // The marker Graph kept is the one the service set.
    let marker = ms.graph.delivered()[0].internet_message_id.clone().unwrap();
    assert!(
        marker.starts_with(&format!("<{}@", response.message_id)),
        "{marker}"
    );
}

#[tokio::test]
async fn without_a_read_permission_an_ambiguous_answer_is_unavailable_and_keeps_the_key() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    for (status, code) in [
        (504, "GatewayTimeout"),
        (500, "UnknownError"),
        (502, "BadGateway"),
    ] {
        ms.graph
            .script("sendMail", [Scripted::accepted_then(status, code)]);
        let key = format!("k-{status}");
        let refused = app
            .client()
            .send_mail(keyed_message(&key))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unavailable,
            "{status}: {}",
            refused.message()
        );
        assert!(
            refused.message().contains("may or may not"),
            "{status}: {}",
            refused.message()
        );
        let resend = app
            .client()
            .send_mail(keyed_message(&key))
            .await
            .unwrap_err();
        assert_eq!(
            resend.code(),
            Code::FailedPrecondition,
            "{status}: the key holds"
        );
    }
    assert_eq!(ms.graph.delivered().len(), 3, "one copy each, none resent");
    assert_eq!(ms.graph.requests("sendMail"), 3);
    assert_eq!(ms.graph.requests("listMessages"), 0, "nothing to look in");
}

#[tokio::test]
async fn a_message_not_in_sent_items_within_the_window_stays_of_unknown_outcome() {
    let ms = Microsoft::start().await;
    let app = connected_app(
        &ms,
        TestApp::builder()
            .env("GRAPH_SCOPES", "Mail.Send Mail.Read")
            .env("RECONCILE_SECONDS", "2"),
    )
    .await;
    ms.graph
        .script("sendMail", [Scripted::error(503, "ServiceUnavailable")]);
    let started = std::time::Instant::now();
    let refused = app
        .client()
        .send_mail(keyed_message("k"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{}", refused.message());
    assert!(
        refused.message().contains("Sent Items"),
        "{}",
        refused.message()
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(ms.graph.requests("sendMail"), 1);
    assert!(ms.graph.delivered().is_empty());
}

#[tokio::test]
async fn a_draft_gone_when_its_send_is_repeated_is_looked_up_not_reported_as_failed() {
    let ms = Microsoft::start().await;
    let app = connected_with_drafts(&ms).await;
    // The draft goes out, the answer is a 401: after the one refresh the repeated send finds
    // no draft (404), because it was sent.
    ms.graph.script(
        "sendDraft",
        [Scripted::accepted_then(401, "InvalidAuthenticationToken")],
    );
    let request = proto::SendMailRequest {
        attachments: vec![attachment(
            "big.bin",
            "",
            patterned_bytes(4 * 1024 * 1024),
            "",
        )],
        ..keyed_message("draft")
    };
    app.client().send_mail(request).await.unwrap();
    assert_eq!(ms.graph.delivered().len(), 1);
    assert_eq!(ms.graph.requests("sendDraft"), 2);
}

#[tokio::test]
async fn skip_sent_items_on_the_mime_form_is_refused_not_ignored() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    let request = proto::SendMailRequest {
        html_body: "<p>Hi</p>".into(),
        skip_sent_items: true,
        ..simple_message(MAILBOX)
    };
    let status = app.client().send_mail(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("skip_sent_items"),
        "{}",
        status.message()
    );
    assert_eq!(ms.graph.requests("sendMail"), 0);
}

#[tokio::test]
async fn exchange_stopping_a_mailbox_pauses_its_sends_and_status_says_why() {
    let ms = Microsoft::start().await;
    let app = connected_app(
        &ms,
        TestApp::builder().env("SENDING_BLOCKED_PAUSE_SECONDS", "2"),
    )
    .await;
    ms.graph
        .block_sending(MAILBOX, 403, "ErrorMessageSubmissionBlocked");
    let first = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(first.code(), Code::ResourceExhausted, "{}", first.message());
    assert!(
        first.message().contains("ErrorMessageSubmissionBlocked"),
        "{}",
        first.message()
    );
    let paused = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(paused.code(), Code::ResourceExhausted);
    assert_eq!(
        ms.graph.requests("sendMail"),
        1,
        "the pause spares Exchange"
    );
    let status = app.mailbox_status(MAILBOX).await;
    assert!(status.paused_until.is_some());
    assert!(
        status
            .pause_reason
            .contains("ErrorMessageSubmissionBlocked"),
        "{}",
        status.pause_reason
    );
    ms.graph.unblock_sending(MAILBOX);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    assert!(app.mailbox_status(MAILBOX).await.paused_until.is_none());
}

#[tokio::test]
async fn a_message_limit_answered_as_429_is_not_retried_as_throttling() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    ms.graph
        .block_sending(MAILBOX, 429, "ErrorExceededMessageLimit");
    let refused = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::ResourceExhausted,
        "{}",
        refused.message()
    );
    assert!(refused.message().contains("ErrorExceededMessageLimit"));
    assert_eq!(ms.graph.requests("sendMail"), 1);
}

#[tokio::test]
async fn two_replicas_on_postgres_keep_to_four_requests_per_mailbox_between_them() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    let first = connected_app(&ms, TestApp::builder().database(&db.url)).await;
    let second = TestApp::builder()
        .microsoft(&ms)
        .database(&db.url)
        .start()
        .await;
    ms.graph.set_latency(Duration::from_millis(300));
    let mut sends = Vec::new();
    for i in 0..24 {
        let mut client = if i % 2 == 0 {
            first.client()
        } else {
            second.client()
        };
        sends.push(tokio::spawn(async move {
            client.send_mail(simple_message(MAILBOX)).await
        }));
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(ms.graph.accepted(), 24);
    assert_eq!(
        ms.graph.concurrency_refusals(),
        0,
        "no 429 MailboxConcurrency: the replicas share the four places"
    );
    assert!(ms.graph.max_in_flight() <= 4);
}

#[tokio::test]
async fn a_503_while_preparing_a_draft_is_still_retried() {
    let ms = Microsoft::start().await;
    let app = connected_with_drafts(&ms).await;
    // Nothing is sent by creating a draft or adding an attachment: safe to repeat.
    ms.graph.script(
        "createDraft",
        [Scripted::Fail {
            status: 503,
            code: "ServiceUnavailable",
            retry_after: Some("1".into()),
        }],
    );
    ms.graph
        .script("addAttachment", [Scripted::error(504, "GatewayTimeout")]);
    let request = proto::SendMailRequest {
        attachments: vec![
            attachment("big.bin", "", patterned_bytes(3 * 1024 * 1024), ""),
            attachment("small.txt", "text/plain", b"hello".to_vec(), ""),
        ],
        ..simple_message(MAILBOX)
    };
    app.client().send_mail(request).await.unwrap();
    assert_eq!(ms.graph.requests("createDraft"), 2);
    assert_eq!(ms.graph.requests("addAttachment"), 2);
    assert_eq!(ms.graph.delivered()[0].attachments.len(), 2);
}
