//! The outbox through the binary: QueueMail to SENT, pacing without 429s, transient and
//! permanent failures, a mailbox held for reconnection, ambiguous answers reconciled, Cancel,
//! SendBulk, WatchMessages resumed, retention.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use graph_mailer::proto::{self, MessageState, mailer_client::MailerClient};
use tonic::{Code, transport::Channel};

use crate::support::{
    MAILBOX, Microsoft, attachment,
    binary::Service,
    browse,
    fake_graph::Scripted,
    fake_identity::{CLIENT_ID, CLIENT_SECRET, Fault, TENANT},
    sign_in_link, simple_message,
};

/// A connected service on the fakes, run as its own process.
pub struct Outboxed {
    pub service: Service,
    pub client: MailerClient<Channel>,
}

/// The binary's settings for the fakes, plus `extra`.
pub fn outbox_env(ms: &Microsoft, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("TENANT_ID", TENANT.to_owned()),
        ("CLIENT_ID", CLIENT_ID.to_owned()),
        ("CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("AUTHORITY_URL", ms.identity.base_url.clone()),
        ("GRAPH_URL", ms.graph.base_url.clone()),
        ("ALLOW_UNAUTHENTICATED", "true".to_owned()),
        ("GRAPH_TIMEOUT_SECONDS", "5".to_owned()),
        ("OUTBOX_RETRY_BASE_SECONDS", "1".to_owned()),
    ];
    for (name, value) in extra {
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        env.retain(|(n, _)| *n != name);
        env.push((name, (*value).to_owned()));
    }
    env
}

/// Starts the binary on `data_dir` and waits until it is ready.
pub async fn start(ms: &Microsoft, data_dir: &Path, env: &[(&str, String)]) -> Outboxed {
    let service =
        Service::spawn_with_process_env(data_dir, env, &[("RUST_LOG", "warn".to_owned())]);
    ms.identity.register_redirect_uri(&format!(
        "http://127.0.0.1:{}/oauth2/callback",
        service.http_port
    ));
    service.wait_ready().await;
    let client = service.client().await;
    Outboxed { service, client }
}

/// Starts the binary and connects MAILBOX.
pub async fn connected(ms: &Microsoft, data_dir: &Path, env: &[(&str, String)]) -> Outboxed {
    let mut outboxed = start(ms, data_dir, env).await;
    let (status, page) = browse(&sign_in_link(&mut outboxed.client, MAILBOX).await).await;
    assert_eq!(status, 200, "{page}");
    outboxed
}

pub async fn queue(client: &mut MailerClient<Channel>, message: proto::SendMailRequest) -> String {
    client
        .queue_mail(proto::QueueMailRequest {
            message: Some(message),
            send_at: None,
        })
        .await
        .unwrap()
        .into_inner()
        .message_id
}

pub async fn status(client: &mut MailerClient<Channel>, id: &str) -> proto::MessageStatus {
    client
        .get_message(proto::GetMessageRequest {
            message_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the message is in a final state; returns its last status either way.
pub async fn settle(
    client: &mut MailerClient<Channel>,
    id: &str,
    timeout: Duration,
) -> proto::MessageStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(client, id).await;
        let done = matches!(
            s.state(),
            MessageState::Sent | MessageState::Failed | MessageState::Cancelled
        );
        if done || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every message is in a final state (or `timeout` passes); returns the states.
pub async fn wait_final(
    client: &mut MailerClient<Channel>,
    ids: &[String],
    timeout: Duration,
) -> HashMap<String, proto::MessageStatus> {
    let deadline = Instant::now() + timeout;
    let mut done = HashMap::new();
    loop {
        let pending: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
        for id in pending {
            let s = status(client, id).await;
            if matches!(
                s.state(),
                MessageState::Sent | MessageState::Failed | MessageState::Cancelled
            ) {
                done.insert(id.clone(), s);
            }
        }
        if done.len() == ids.len() || Instant::now() > deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn queue_mail_answers_at_once_and_get_message_follows_it_to_sent() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut o = connected(&ms, data.path(), &outbox_env(&ms, &[])).await;
    ms.graph.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    let receipt = o
        .client
        .queue_mail(proto::QueueMailRequest {
            message: Some(simple_message(MAILBOX)),
            send_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "not held until Graph answers"
    );
    assert!(receipt.estimated_send_at.is_some());
    // Stored in SQLite's write-ahead log: a commit is an append and an fsync.
    assert!(data.path().join("graph-mailer.db-wal").exists());
    let sent = &settle(&mut o.client, &receipt.message_id, Duration::from_secs(10)).await;
    assert_eq!(sent.state(), MessageState::Sent);
    assert_eq!(sent.attempts, 1);
    assert!(sent.sent_at.is_some());
    assert_eq!(ms.graph.deliveries_by_message_id()[&receipt.message_id], 1);
    let unknown = o
        .client
        .get_message(proto::GetMessageRequest {
            message_id: "no-such-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_burst_of_200_goes_out_at_the_configured_rate_without_a_429() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    // 1,200 a minute: a slot every 51 ms. The fake refuses a 121st send within any 6 s.
    let env = outbox_env(&ms, &[("LIMIT_MESSAGES_PER_MINUTE", "1200")]);
    let mut o = connected(&ms, data.path(), &env).await;
    ms.graph.set_message_rate(120, Duration::from_secs(6));
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..200 {
        let mut message = simple_message(MAILBOX);
        message.subject = format!("burst {i}");
        ids.push(queue(&mut o.client, message).await);
    }
    let done = wait_final(&mut o.client, &ids, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(done.len(), 200);
    assert!(done.values().all(|s| s.state() == MessageState::Sent));
    assert_eq!(ms.graph.rate_refusals(), 0, "no 429 provoked");
    assert_eq!(ms.graph.accepted(), 200);
    // 199 gaps of 51 ms: about 10.1 s; paced, not bursting, and not much slower.
    assert!(took >= Duration::from_millis(9_900), "{took:?}");
    assert!(took <= Duration::from_millis(13_000), "{took:?}");
    let mailbox = o
        .client
        .status(proto::StatusRequest {
            mailbox: MAILBOX.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mailboxes
        .remove(0);
    assert_eq!(mailbox.queued, 0);
    assert!(mailbox.sent_last_minute >= 200);
}

#[tokio::test]
async fn a_transient_outage_is_retried_until_delivered_and_a_permanent_error_fails_at_once() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = outbox_env(
        &ms,
        &[
            ("GRAPH_SCOPES", "Mail.Send Mail.ReadWrite"),
            ("RETRY_MAX_ATTEMPTS", "1"),
        ],
    );
    let mut o = connected(&ms, data.path(), &env).await;
    // Drafts are retried inside a send too; with one attempt each outage fails the attempt.
    ms.graph.script(
        "createDraft",
        (0..3).map(|_| Scripted::error(503, "ServiceUnavailable")),
    );
    let big = proto::SendMailRequest {
        attachments: vec![attachment("big.bin", "", vec![7; 3 * 1024 * 1024], "")],
        ..simple_message(MAILBOX)
    };
    let transient = queue(&mut o.client, big).await;
    let delivered = &settle(&mut o.client, &transient, Duration::from_secs(30)).await;
    assert_eq!(delivered.state(), MessageState::Sent, "{delivered:?}");
    assert_eq!(delivered.attempts, 4);
    ms.graph
        .script("sendMail", [Scripted::error(400, "ErrorInvalidRecipients")]);
    let permanent = queue(&mut o.client, simple_message(MAILBOX)).await;
    let failed = &settle(&mut o.client, &permanent, Duration::from_secs(10)).await;
    assert_eq!(failed.state(), MessageState::Failed);
    assert_eq!(failed.attempts, 1);
    assert!(
        failed.last_error.contains("ErrorInvalidRecipients"),
        "{}",
        failed.last_error
    );
}

#[tokio::test]
async fn a_mailbox_that_must_reconnect_holds_its_queue_until_connect() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut o = connected(&ms, data.path(), &outbox_env(&ms, &[])).await;
    // Every token is already within the refresh margin, and the grant is gone.
    ms.identity.set_access_token_lifetime(60, false);
    ms.identity.revoke_refresh_tokens();
    let (code, _) = browse(&sign_in_link(&mut o.client, MAILBOX).await).await;
    assert_eq!(code, 200);
    ms.identity.revoke_refresh_tokens();
    let id = queue(&mut o.client, simple_message(MAILBOX)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = status(&mut o.client, &id).await;
    assert_eq!(held.state(), MessageState::Queued, "{held:?}");
    let mailbox = o
        .client
        .status(proto::StatusRequest {
            mailbox: MAILBOX.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mailboxes
        .remove(0);
    assert_eq!(
        mailbox.state,
        proto::ConnectionState::ReauthorizationRequired as i32
    );
    assert_eq!(mailbox.queued, 1);
    assert!(ms.graph.delivered().is_empty());
    ms.identity.set_access_token_lifetime(3900, false);
    let (code, page) = browse(&sign_in_link(&mut o.client, MAILBOX).await).await;
    assert_eq!(code, 200, "{page}");
    let done = settle(&mut o.client, &id, Duration::from_secs(45)).await;
    assert_eq!(done.state(), MessageState::Sent);
    assert_eq!(ms.graph.delivered().len(), 1);
}

#[tokio::test]
async fn an_ambiguous_answer_becomes_unknown_then_sent_through_sent_items_never_twice() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = outbox_env(
        &ms,
        &[
            ("GRAPH_SCOPES", "Mail.Send Mail.ReadBasic"),
            ("RECONCILE_SECONDS", "1"),
        ],
    );
    let mut o = connected(&ms, data.path(), &env).await;
    // The copy shows in Sent Items only after the service's own look-up window.
    ms.graph.set_sent_items_delay(Duration::from_secs(4));
    ms.graph
        .script("sendMail", [Scripted::accepted_then(504, "GatewayTimeout")]);
    let id = queue(&mut o.client, simple_message(MAILBOX)).await;
    let mut saw_unknown = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let s = status(&mut o.client, &id).await;
        saw_unknown |= s.state() == MessageState::Unknown;
        if s.state() == MessageState::Sent || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(saw_unknown, "UNKNOWN while it was looked for");
    assert_eq!(last.state(), MessageState::Sent, "{last:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ms.graph.requests("sendMail"), 1, "never sent twice");
    assert_eq!(ms.graph.delivered().len(), 1);
}

#[tokio::test]
async fn a_queued_message_can_be_cancelled_until_it_is_sent() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut o = connected(&ms, data.path(), &outbox_env(&ms, &[])).await;
    let later = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 60,
        nanos: 0,
    };
    let id = o
        .client
        .queue_mail(proto::QueueMailRequest {
            message: Some(simple_message(MAILBOX)),
            send_at: Some(later),
        })
        .await
        .unwrap()
        .into_inner()
        .message_id;
    let cancelled = o
        .client
        .cancel_message(proto::CancelMessageRequest {
            message_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), MessageState::Cancelled);
    let again = o
        .client
        .cancel_message(proto::CancelMessageRequest { message_id: id })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(again.message().contains("CANCELLED"), "{}", again.message());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ms.graph.delivered().is_empty());
}

#[tokio::test]
async fn send_bulk_personalises_each_message_and_refuses_a_missing_variable() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = outbox_env(&ms, &[("LIMIT_MESSAGES_PER_MINUTE", "6000")]);
    let mut o = connected(&ms, data.path(), &env).await;
    let template = proto::SendMailRequest {
        mailbox: MAILBOX.into(),
        subject: "Hello {{ name }}".into(),
        html_body: "<p>Your code: {{ code }}</p>".into(),
        ..Default::default()
    };
    let recipient = |i: usize, vars: &[(&str, String)]| proto::BulkRecipient {
        to: Some(proto::EmailAddress {
            address: format!("r{i}@example.com"),
            name: String::new(),
        }),
        variables: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    };
    let mut missing: Vec<proto::BulkRecipient> = (0..5)
        .map(|i| recipient(i, &[("name", format!("N{i}")), ("code", format!("{i}"))]))
        .collect();
    missing[3].variables.remove("code");
    let refused = o
        .client
        .send_bulk(proto::SendBulkRequest {
            template: Some(template.clone()),
            recipients: missing,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("recipients[3].variables")
            && refused.message().contains("code"),
        "{}",
        refused.message()
    );
    let recipients: Vec<proto::BulkRecipient> = (0..50)
        .map(|i| recipient(i, &[("name", format!("<N{i}>")), ("code", format!("{i}"))]))
        .collect();
    let batch = o
        .client
        .send_bulk(proto::SendBulkRequest {
            template: Some(template),
            recipients,
            idempotency_key: "newsletter-1".into(),
            send_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.messages, 50);
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let b = o
            .client
            .get_batch(proto::GetBatchRequest {
                batch_id: batch.batch_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if b.sent == 50 || Instant::now() > deadline {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((done.total, done.sent, done.queued), (50, 50, 0));
    let delivered = ms.graph.delivered();
    assert_eq!(delivered.len(), 50, "one message per recipient");
    let m7 = delivered
        .iter()
        .find(|m| m.to[0].0 == "r7@example.com")
        .unwrap();
    assert_eq!(m7.subject, "Hello <N7>");
    assert_eq!(m7.html_body.as_deref(), Some("<p>Your code: 7</p>"));
    assert!(
        delivered
            .iter()
            .all(|m| m.to.len() == 1 && m.cc.is_empty() && m.bcc.is_empty())
    );
    let first = delivered
        .iter()
        .find(|m| m.to[0].0 == "r0@example.com")
        .unwrap();
    assert_eq!(first.subject, "Hello <N0>");
    let listed = o
        .client
        .list_messages(proto::ListMessagesRequest {
            batch_id: batch.batch_id.clone(),
            page_size: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.messages.len(), 20);
    assert!(!listed.next_page_token.is_empty());
}

#[tokio::test]
async fn watch_messages_resumed_after_a_disconnect_misses_no_event() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = outbox_env(&ms, &[("LIMIT_MESSAGES_PER_MINUTE", "600")]);
    let mut o = connected(&ms, data.path(), &env).await;
    let mut ids = HashSet::new();
    let mut stream = o
        .client
        .watch_messages(proto::WatchMessagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    for _ in 0..5 {
        ids.insert(queue(&mut o.client, simple_message(MAILBOX)).await);
    }
    let mut events = Vec::new();
    while events.len() < 4 {
        events.push(stream.message().await.unwrap().unwrap());
    }
    drop(stream);
    for _ in 0..5 {
        ids.insert(queue(&mut o.client, simple_message(MAILBOX)).await);
    }
    let last = events.last().unwrap().sequence;
    let mut resumed = o
        .client
        .watch_messages(proto::WatchMessagesRequest {
            after_sequence: last,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let sent: HashSet<&String> = events
            .iter()
            .filter(|e| e.message.as_ref().unwrap().state() == MessageState::Sent)
            .map(|e| &e.message.as_ref().unwrap().message_id)
            .collect();
        if sent.len() == ids.len() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(5), resumed.message()).await {
            Ok(Ok(Some(event))) => events.push(event),
            other => panic!("stream ended: {other:?}"),
        }
    }
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    for id in &ids {
        let states: Vec<MessageState> = events
            .iter()
            .filter_map(|e| e.message.as_ref())
            .filter(|m| &m.message_id == id)
            .map(|m| m.state())
            .collect();
        assert_eq!(
            states,
            [
                MessageState::Queued,
                MessageState::Sending,
                MessageState::Sent
            ],
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_finished_message_loses_its_body_at_once_and_its_status_after_the_retention() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = outbox_env(&ms, &[("OUTBOX_RETENTION_SECONDS", "2")]);
    let mut o = connected(&ms, data.path(), &env).await;
    let secret = "body-that-must-not-linger-7d1c";
    let mut message = simple_message(MAILBOX);
    message.text_body = secret.into();
    let id = queue(&mut o.client, message).await;
    settle(&mut o.client, &id, Duration::from_secs(10)).await;
    let url = format!("sqlite://{}", data.path().join("graph-mailer.db").display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let body: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT body FROM outbox_messages WHERE message_id = ?")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(body, None, "the body goes when the message is sent");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let gone = o
            .client
            .get_message(proto::GetMessageRequest {
                message_id: id.clone(),
            })
            .await;
        if matches!(&gone, Err(status) if status.code() == Code::NotFound) {
            break;
        }
        assert!(Instant::now() < deadline, "still there: {gone:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_refresh_outage_is_transient_for_the_outbox() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut o = connected(&ms, data.path(), &outbox_env(&ms, &[])).await;
    ms.identity.set_access_token_lifetime(60, false);
    let (code, _) = browse(&sign_in_link(&mut o.client, MAILBOX).await).await;
    assert_eq!(code, 200);
    ms.identity.fail_next_refreshes(6, Fault::Unavailable);
    let id = queue(&mut o.client, simple_message(MAILBOX)).await;
    let done = settle(&mut o.client, &id, Duration::from_secs(30)).await;
    assert_eq!(done.state(), MessageState::Sent, "{done:?}");
}

#[tokio::test]
async fn delivering_large_queued_messages_holds_no_more_than_the_in_flight_budget() {
    const MIB: u64 = 1024 * 1024;
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = outbox_env(
        &ms,
        &[
            ("LIMIT_MESSAGES_PER_MINUTE", "6000"),
            ("LIMIT_UPLOAD_BYTES_PER_5_MINUTES", "10000000000"),
            ("MAX_MESSAGE_BYTES", &(25 * MIB).to_string()),
            ("MAX_INFLIGHT_BYTES", &(50 * MIB).to_string()),
            ("OUTBOX_WORKERS", "16"),
            ("GRAPH_SCOPES", "Mail.Send Mail.ReadWrite"),
        ],
    );
    let mut outboxed = connected(&ms, data.path(), &env).await;
    // Slow uploads: without a budget every queued message would be loaded at once.
    ms.graph.set_latency(Duration::from_millis(300));
    // All due together, once they are all stored.
    let due = std::time::SystemTime::now() + Duration::from_secs(5);
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut message = simple_message(MAILBOX);
        message.subject = format!("large {i}");
        let content = vec![u8::try_from(i).unwrap(); (20 * MIB) as usize];
        message.attachments = vec![attachment("big.bin", "", content, "")];
        let response = outboxed
            .client
            .queue_mail(proto::QueueMailRequest {
                message: Some(message),
                send_at: Some(due.into()),
            })
            .await
            .unwrap();
        ids.push(response.into_inner().message_id);
    }
    let before = outboxed.service.peak_rss();
    let states = wait_final(&mut outboxed.client, &ids, Duration::from_secs(60)).await;
    let sent = states
        .values()
        .filter(|s| s.state() == MessageState::Sent)
        .count();
    let errors: HashSet<&str> = states.values().map(|s| s.last_error.as_str()).collect();
    assert_eq!(sent, ids.len(), "{errors:?}");
    let peak = outboxed.service.peak_rss();
    // Without the budget all twelve 20 MiB messages are loaded together (measured: +270 MiB
    // over the queueing peak); with a 50 MiB budget two at a time (+1 MiB).
    assert!(
        peak < before.max(200 * MIB) + 150 * MIB,
        "peak RSS {} MiB (before the deliveries: {} MiB)",
        peak / MIB,
        before / MIB
    );
}

#[tokio::test]
async fn the_daily_recipient_limit_holds_the_queue_instead_of_getting_the_mailbox_blocked() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let env = outbox_env(
        &ms,
        &[
            ("LIMIT_MESSAGES_PER_MINUTE", "600"),
            ("LIMIT_RECIPIENTS_PER_DAY", "6"),
        ],
    );
    let mut o = connected(&ms, data.path(), &env).await;
    // Exchange blocks the mailbox past its recipients of a rolling day.
    ms.graph.set_recipient_limit(6);
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut message = simple_message(MAILBOX);
        message.subject = format!("two recipients {i}");
        message.cc = vec![crate::support::address("carol@example.com", "Carol")];
        ids.push(queue(&mut o.client, message).await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ms.graph.accepted() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a fourth send, were the limit not kept.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ms.graph.accepted(), 3);
    assert_eq!(
        ms.graph.recipient_refusals(),
        0,
        "never sent past the limit"
    );
    let last = status(&mut o.client, &ids[3]).await;
    assert_eq!(last.state(), MessageState::Queued, "held, not failed");
    let mailbox = o
        .client
        .status(proto::StatusRequest {
            mailbox: MAILBOX.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .mailboxes
        .remove(0);
    assert_eq!(mailbox.recipients_last_24h, 6);
    assert_eq!(mailbox.queued, 1);
}
