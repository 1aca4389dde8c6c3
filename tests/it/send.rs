//! SendMail through Graph: wire forms, upload sessions, the error table, retries, limits.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use graph_mailer::proto::{self, Importance};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{
    MAILBOX, Microsoft, TestApp, address, attachment, connected_app, connected_with_drafts,
    fake_graph::{Scripted, sha256_hex},
    patterned_bytes, simple_message,
};

fn full_json_message() -> proto::SendMailRequest {
    proto::SendMailRequest {
        mailbox: MAILBOX.into(),
        to: vec![
            address("bob@example.com", "Bob Smith"),
            address("eve@example.org", ""),
        ],
        cc: vec![address("carol@example.net", "Carol")],
        bcc: vec![address("dave@example.com", "Dave")],
        reply_to: vec![address("help@contoso.com", "Help desk")],
        subject: "Invoice 42".into(),
        text_body: String::new(),
        html_body: "<p>Attached. <img src=\"cid:logo\"></p>".into(),
        attachments: vec![
            attachment("invoice.pdf", "application/pdf", b"%PDF-1.7".to_vec(), ""),
            attachment("logo.png", "image/png", vec![1, 2, 3], "logo"),
        ],
        headers: [
            ("X-Campaign".to_owned(), "q3".to_owned()),
            ("X-Ticket".to_owned(), "T-1".to_owned()),
        ]
        .into(),
        importance: Importance::High as i32,
        skip_sent_items: true,
        idempotency_key: String::new(),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, n)| ((*a).to_owned(), (*n).to_owned()))
        .collect()
}

#[tokio::test]
async fn every_field_of_a_full_message_arrives_exactly_as_json() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    let response = app
        .client()
        .send_mail(full_json_message())
        .await
        .unwrap()
        .into_inner();
    let delivered = ms.graph.delivered();
    assert_eq!(delivered.len(), 1);
    let m = &delivered[0];
    assert_eq!(m.form, "json");
    assert_eq!(m.account, MAILBOX);
    assert_eq!(
        m.client_request_id, response.message_id,
        "client-request-id is the message id"
    );
    assert_eq!(
        m.to,
        pairs(&[("bob@example.com", "Bob Smith"), ("eve@example.org", "")])
    );
    assert_eq!(m.cc, pairs(&[("carol@example.net", "Carol")]));
    assert_eq!(m.bcc, pairs(&[("dave@example.com", "Dave")]));
    assert_eq!(m.reply_to, pairs(&[("help@contoso.com", "Help desk")]));
    assert_eq!(m.subject, "Invoice 42");
    assert_eq!(
        m.html_body.as_deref(),
        Some("<p>Attached. <img src=\"cid:logo\"></p>")
    );
    assert_eq!(m.text_body, None);
    assert_eq!(m.importance.as_deref(), Some("High"));
    assert_eq!(
        m.headers,
        pairs(&[("X-Campaign", "q3"), ("X-Ticket", "T-1")])
    );
    assert!(!m.save_to_sent_items);
    assert_eq!(m.attachments.len(), 2);
    let logo = m.attachments.iter().find(|a| a.name == "logo.png").unwrap();
    assert!(logo.inline);
    assert_eq!(logo.content_id.as_deref(), Some("logo"));
    assert_eq!(logo.sha256, sha256_hex(&[1, 2, 3]));
    let pdf = m
        .attachments
        .iter()
        .find(|a| a.name == "invoice.pdf")
        .unwrap();
    assert!(!pdf.inline);
    assert_eq!(pdf.content_type, "application/pdf");

    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(status.sent_total, 1);
    assert!(status.last_sent_at.is_some());
}

#[tokio::test]
async fn text_and_html_together_travel_as_mime() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    let request = proto::SendMailRequest {
        text_body: "Plain words".into(),
        skip_sent_items: false,
        ..full_json_message()
    };
    app.client().send_mail(request).await.unwrap();
    let m = &ms.graph.delivered()[0];
    assert_eq!(m.form, "mime");
    assert_eq!(m.text_body.as_deref(), Some("Plain words"));
    assert!(m.html_body.as_deref().unwrap().contains("cid:logo"));
    assert_eq!(
        m.to,
        pairs(&[("bob@example.com", "Bob Smith"), ("eve@example.org", "")])
    );
    assert_eq!(m.bcc, pairs(&[("dave@example.com", "Dave")]));
    assert_eq!(m.subject, "Invoice 42");
    assert_eq!(m.importance.as_deref(), Some("high"));
    assert_eq!(m.attachments.len(), 2);
    assert!(
        m.attachments
            .iter()
            .any(|a| a.content_id.as_deref() == Some("logo") && a.sha256 == sha256_hex(&[1, 2, 3]))
    );
}

#[tokio::test]
async fn six_custom_headers_travel_as_mime() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    let headers: std::collections::BTreeMap<String, String> = (1..=6)
        .map(|i| (format!("X-H{i}"), format!("v{i}")))
        .collect();
    let request = proto::SendMailRequest {
        headers,
        ..simple_message(MAILBOX)
    };
    app.client().send_mail(request).await.unwrap();
    let m = &ms.graph.delivered()[0];
    assert_eq!(m.form, "mime");
    let got: HashMap<_, _> = m.headers.iter().cloned().collect();
    for i in 1..=6 {
        assert_eq!(
            got.get(&format!("X-H{i}")).map(String::as_str),
            Some(format!("v{i}").as_str())
        );
    }
    assert_eq!(m.text_body.as_deref(), Some("Hi Bob"));
}

#[tokio::test]
async fn a_20_megabyte_attachment_goes_through_an_upload_session() {
    let ms = Microsoft::start().await;
    let app = connected_with_drafts(&ms).await;
    let content = patterned_bytes(20 * 1024 * 1024);
    let request = proto::SendMailRequest {
        attachments: vec![
            attachment("video.bin", "application/octet-stream", content.clone(), ""),
            attachment("note.txt", "text/plain", b"small".to_vec(), ""),
        ],
        ..simple_message(MAILBOX)
    };
    app.client().send_mail(request).await.unwrap();
    let m = &ms.graph.delivered()[0];
    assert_eq!(m.form, "draft");
    assert_eq!(m.to, pairs(&[("bob@example.com", "Bob")]));
    assert_eq!(m.text_body.as_deref(), Some("Hi Bob"));
    let video = m
        .attachments
        .iter()
        .find(|a| a.name == "video.bin")
        .unwrap();
    assert_eq!(video.size, content.len());
    assert_eq!(video.sha256, sha256_hex(&content));
    assert!(
        m.attachments
            .iter()
            .any(|a| a.name == "note.txt" && a.sha256 == sha256_hex(b"small"))
    );
    assert_eq!(
        ms.graph.upload_requests_with_authorization(),
        0,
        "no Authorization header on upload URLs"
    );
    let chunks = ms.graph.upload_chunk_sizes();
    assert!(chunks.len() >= 7);
    assert!(chunks.iter().all(|c| *c <= 4 * 1024 * 1024));
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .filter(|c| **c > 10)
            .all(|c| c % (320 * 1024) == 0)
    );
    assert_eq!(ms.graph.drafts_left(), 0);
}

#[tokio::test]
async fn large_attachments_without_mail_readwrite_fail_before_any_draft_is_made() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    let request = proto::SendMailRequest {
        attachments: vec![attachment(
            "big.bin",
            "",
            patterned_bytes(3 * 1024 * 1024),
            "",
        )],
        ..simple_message(MAILBOX)
    };
    let status = app.client().send_mail(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("Mail.ReadWrite"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("Connect again"),
        "{}",
        status.message()
    );
    assert_eq!(ms.graph.requests("createDraft"), 0);
}

#[tokio::test]
async fn a_failed_upload_deletes_the_draft() {
    let ms = Microsoft::start().await;
    let app = connected_with_drafts(&ms).await;
    ms.graph.script(
        "uploadChunk",
        [Scripted::error(400, "ErrorAttachmentSizeLimitExceeded")],
    );
    let request = proto::SendMailRequest {
        attachments: vec![attachment(
            "big.bin",
            "",
            patterned_bytes(4 * 1024 * 1024),
            "",
        )],
        ..simple_message(MAILBOX)
    };
    let status = app.client().send_mail(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{}", status.message());
    assert_eq!(ms.graph.deleted_drafts(), 1);
    assert_eq!(ms.graph.drafts_left(), 0);
    assert!(ms.graph.delivered().is_empty());
}

#[tokio::test]
async fn each_graph_error_code_maps_to_its_grpc_status() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    let table = [
        (400, "ErrorInvalidRecipients", Code::InvalidArgument),
        (403, "ErrorSendAsDenied", Code::PermissionDenied),
        (403, "ErrorAccessDenied", Code::PermissionDenied),
        (400, "MailboxNotEnabledForRESTAPI", Code::FailedPrecondition),
        (400, "ErrorQuotaExceeded", Code::ResourceExhausted),
        (400, "ErrorMessageSizeExceeded", Code::InvalidArgument),
        // A 500 from a sending call may come after the mail went out: unknown, not failed.
        (500, "ErrorInternalServerError", Code::Unavailable),
    ];
    for (i, (status, code, expected)) in table.into_iter().enumerate() {
        ms.graph.script("sendMail", [Scripted::error(status, code)]);
        let error = app
            .client()
            .send_mail(simple_message(MAILBOX))
            .await
            .unwrap_err();
        assert_eq!(error.code(), expected, "{code}: {}", error.message());
        let mailbox = app.mailbox_status(MAILBOX).await;
        assert_eq!(mailbox.failed_total, i as u64 + 1);
        assert!(!mailbox.last_error.is_empty());
        if expected == Code::Unavailable {
            assert!(
                error.message().contains("request-id")
                    && error.message().contains("client-request-id"),
                "{}",
                error.message()
            );
        }
    }
    assert_eq!(ms.graph.requests("sendMail"), 7, "none of these is retried");
    assert!(ms.graph.delivered().is_empty());
    // A success clears the send error from Status.
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    assert_eq!(app.mailbox_status(MAILBOX).await.last_error, "");
}

#[tokio::test]
async fn throttled_twice_then_accepted_honours_retry_after_and_delivers_once() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    ms.graph
        .script("sendMail", [Scripted::throttle(1), Scripted::throttle(1)]);
    let started = Instant::now();
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited Retry-After twice"
    );
    assert_eq!(ms.graph.requests("sendMail"), 3);
    assert_eq!(ms.graph.delivered().len(), 1);
}

#[tokio::test]
async fn a_429_with_an_http_date_retry_after_is_retried() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(1));
    // Throttled requests are not processed: a 429 is the one answer to a send that may be
    // retried. (A 503 may come after the mail went out; see real_graph.)
    ms.graph.script(
        "sendMail",
        [Scripted::Fail {
            status: 429,
            code: "ApplicationThrottled",
            retry_after: Some(soon),
        }],
    );
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    assert_eq!(ms.graph.requests("sendMail"), 2);
    assert_eq!(ms.graph.delivered().len(), 1);
}

#[tokio::test]
async fn persistent_throttling_ends_within_the_budget_with_retry_info_and_nothing_sent() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder().env("RETRY_BUDGET_SECONDS", "3")).await;
    ms.graph
        .script("sendMail", (0..20).map(|_| Scripted::throttle(1)));
    let started = Instant::now();
    let status = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped within the budget"
    );
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("retry after 1 s"),
        "{}",
        status.message()
    );
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    assert!(ms.graph.delivered().is_empty());
    assert!(
        ms.graph.requests("sendMail") <= 4,
        "the attempt budget holds"
    );
}

#[tokio::test]
async fn a_timeout_after_the_request_was_sent_is_not_retried() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder().env("GRAPH_TIMEOUT_SECONDS", "1")).await;
    ms.graph
        .script("sendMail", [Scripted::Delay(Duration::from_secs(2))]);
    let status = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("may or may not have been accepted"),
        "{}",
        status.message()
    );
    assert_eq!(ms.graph.requests("sendMail"), 1, "not resent");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        ms.graph.delivered().len(),
        1,
        "Microsoft did accept it: exactly one copy"
    );
}

#[tokio::test]
async fn an_unreachable_graph_is_retried_within_the_budget_and_reported_as_not_sent() {
    let ms = Microsoft::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Connect needs Graph (to read who signed in): connect first, then restart with a Graph
    // that cannot be reached.
    let data = tempfile::tempdir().unwrap();
    let connected = connected_app(&ms, TestApp::builder().data_dir(data.path())).await;
    connected.stop().await.unwrap();
    let app = TestApp::builder()
        .microsoft(&ms)
        .data_dir(data.path())
        .env("GRAPH_URL", format!("http://{closed}"))
        .env("RETRY_BUDGET_SECONDS", "3")
        .start()
        .await;
    let started = Instant::now();
    let status = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("cannot be reached")
            && status.message().contains("nothing was sent"),
        "{}",
        status.message()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_rejected_access_token_is_refreshed_once_and_the_send_retried_once() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    ms.identity.tokens.revoke_all();
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    assert_eq!(ms.identity.successful_refreshes(), 1);
    assert_eq!(ms.graph.requests("sendMail"), 2);
    assert_eq!(ms.graph.delivered().len(), 1);
}

#[tokio::test]
async fn never_more_than_four_requests_per_mailbox_are_in_flight() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    ms.graph.set_latency(Duration::from_millis(20));
    let mut calls = Vec::new();
    for i in 0..200 {
        let mut client = app.client();
        calls.push(tokio::spawn(async move {
            let request = proto::SendMailRequest {
                subject: format!("n{i}"),
                ..simple_message(MAILBOX)
            };
            client.send_mail(request).await
        }));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(ms.graph.delivered().len(), 200);
    assert!(
        ms.graph.max_in_flight() <= 4,
        "max in flight {}",
        ms.graph.max_in_flight()
    );
    assert_eq!(ms.graph.max_in_flight(), 4, "the limit is used");
}

#[tokio::test]
async fn an_empty_mailbox_means_the_only_connected_one() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    let status = app
        .client()
        .send_mail(simple_message(""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("no mailbox is connected"),
        "{}",
        status.message()
    );
    app.connect_mailbox(MAILBOX).await;
    app.client().send_mail(simple_message("")).await.unwrap();
    assert_eq!(ms.graph.delivered()[0].account, MAILBOX);
    app.connect_mailbox("second@contoso.com").await;
    let status = app
        .client()
        .send_mail(simple_message(""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("2 mailboxes are connected"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_send_finish() {
    let ms = Microsoft::start().await;
    let mut app = connected_app(&ms, TestApp::builder()).await;
    ms.graph.set_latency(Duration::from_millis(1500));
    let mut client = app.client();
    let send = tokio::spawn(async move { client.send_mail(simple_message(MAILBOX)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = app.begin_stop();
    let response = send.await.unwrap();
    assert!(response.is_ok(), "{response:?}");
    stopping.await.unwrap().unwrap();
    assert_eq!(ms.graph.delivered().len(), 1);
    assert!(
        app.client()
            .send_mail(simple_message(MAILBOX))
            .await
            .is_err(),
        "new calls are refused"
    );
}
