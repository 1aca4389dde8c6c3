//! Idempotency keys: one send per key and mailbox within 24 hours, across replicas.

use std::time::Duration;

use graph_mailer::{clock::ManualClock, proto};
use tonic::Code;

use crate::support::{
    MAILBOX, Microsoft, TestApp, connected_app, fake_graph::Scripted, keyed_message,
    postgres::TestDatabase,
};

async fn the_same_key_and_message_sends_once(app: TestApp, ms: &Microsoft) {
    let first = app
        .client()
        .send_mail(keyed_message("order-1001"))
        .await
        .unwrap()
        .into_inner();
    let second = app
        .client()
        .send_mail(keyed_message("order-1001"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.deduplicated);
    assert!(second.deduplicated);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.accepted_at, first.accepted_at);
    assert_eq!(ms.graph.delivered().len(), 1);
    assert_eq!(app.mailbox_status(MAILBOX).await.sent_total, 1);
}

#[tokio::test]
async fn the_same_key_and_message_sends_once_on_sqlite() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    the_same_key_and_message_sends_once(app, &ms).await;
}

#[tokio::test]
async fn the_same_key_and_message_sends_once_on_postgres() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder().database(&db.url)).await;
    the_same_key_and_message_sends_once(app, &ms).await;
}

#[tokio::test]
async fn a_key_holds_across_replicas() {
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
    first.client().send_mail(keyed_message("k")).await.unwrap();
    let again = second
        .client()
        .send_mail(keyed_message("k"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.deduplicated);
    assert_eq!(ms.graph.delivered().len(), 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_message_is_already_exists() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    app.client().send_mail(keyed_message("k")).await.unwrap();
    let other = proto::SendMailRequest {
        subject: "Something else".into(),
        ..keyed_message("k")
    };
    let status = app.client().send_mail(other).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("different message"),
        "{}",
        status.message()
    );
    assert_eq!(ms.graph.delivered().len(), 1);
}

#[tokio::test]
async fn two_concurrent_calls_with_one_key_send_exactly_once() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    ms.graph.set_latency(Duration::from_millis(500));
    let (mut a, mut b) = (app.client(), app.client());
    let (first, second) = tokio::join!(
        a.send_mail(keyed_message("k")),
        b.send_mail(keyed_message("k"))
    );
    let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
    assert_eq!(first.message_id, second.message_id);
    assert!(
        first.deduplicated != second.deduplicated,
        "one sent, the other waited for it"
    );
    assert_eq!(ms.graph.delivered().len(), 1);
}

#[tokio::test]
async fn keys_expire_after_24_hours() {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    ms.identity.set_access_token_lifetime(3 * 24 * 3600, false);
    let app = connected_app(&ms, TestApp::builder().clock(clock.clone())).await;
    app.client().send_mail(keyed_message("k")).await.unwrap();
    clock.advance(chrono::Duration::hours(23));
    assert!(
        app.client()
            .send_mail(keyed_message("k"))
            .await
            .unwrap()
            .into_inner()
            .deduplicated
    );
    clock.advance(chrono::Duration::hours(2));
    let later = app
        .client()
        .send_mail(keyed_message("k"))
        .await
        .unwrap()
        .into_inner();
    assert!(!later.deduplicated, "a day later the key is new again");
    assert_eq!(ms.graph.delivered().len(), 2);
}

#[tokio::test]
async fn an_unknown_outcome_under_a_key_blocks_a_blind_resend() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder().env("GRAPH_TIMEOUT_SECONDS", "1")).await;
    ms.graph
        .script("sendMail", [Scripted::Delay(Duration::from_secs(2))]);
    let status = app
        .client()
        .send_mail(keyed_message("k"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let retry = app
        .client()
        .send_mail(keyed_message("k"))
        .await
        .unwrap_err();
    assert_eq!(retry.code(), Code::FailedPrecondition);
    assert!(
        retry.message().contains("new idempotency_key"),
        "{}",
        retry.message()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ms.graph.delivered().len(), 1, "no second copy");
    assert_eq!(ms.graph.requests("sendMail"), 1);
}

#[tokio::test]
async fn a_send_that_certainly_failed_frees_its_key() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    ms.graph
        .script("sendMail", [Scripted::error(400, "ErrorQuotaExceeded")]);
    assert_eq!(
        app.client()
            .send_mail(keyed_message("k"))
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );
    let retry = app
        .client()
        .send_mail(keyed_message("k"))
        .await
        .unwrap()
        .into_inner();
    assert!(!retry.deduplicated);
    assert_eq!(ms.graph.delivered().len(), 1);
}
