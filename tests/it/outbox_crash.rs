//! The outbox's promises under failure, through the binary: a SIGKILL in the middle of a
//! burst (and of a bulk batch) loses and duplicates nothing after a restart; a SIGTERM gives
//! back what was claimed but not begun; two replicas on PostgreSQL share one queue and one
//! mailbox's limits.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use graph_mailer::proto::{self, MessageState};

use crate::{
    outbox::{connected, outbox_env, queue, start},
    support::{MAILBOX, Microsoft, postgres::TestDatabase, simple_message},
};

/// Settings for a crash test: fast pacing, short leases, Sent Items readable.
fn crash_env(ms: &Microsoft) -> Vec<(&'static str, String)> {
    outbox_env(
        ms,
        &[
            ("LIMIT_MESSAGES_PER_MINUTE", "6000"),
            ("GRAPH_SCOPES", "Mail.Send Mail.ReadBasic"),
            ("RECONCILE_SECONDS", "1"),
            ("OUTBOX_LEASE_SECONDS", "2"),
        ],
    )
}

/// Waits until the fake has accepted `count` messages.
async fn wait_accepted(ms: &Microsoft, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while ms.graph.accepted() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} accepted",
            ms.graph.accepted()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every accepted id was delivered exactly once, and nothing else was.
fn exactly_once(ms: &Microsoft, accepted: &HashSet<String>) {
    let deliveries = ms.graph.deliveries_by_message_id();
    let twice: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !deliveries.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "never delivered: {} of them",
        missing.len()
    );
    assert_eq!(deliveries.len(), accepted.len(), "nothing else delivered");
}

#[tokio::test]
async fn a_sigkill_mid_burst_loses_and_duplicates_nothing_after_a_restart() {
    let ms = Microsoft::start().await;
    ms.graph.set_latency(Duration::from_millis(30));
    let data = tempfile::tempdir().unwrap();
    let env = crash_env(&ms);
    let first = connected(&ms, data.path(), &env).await;
    let mut callers = Vec::new();
    for c in 0..16 {
        let mut client = first.client.clone();
        callers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..63 {
                let mut message = simple_message(MAILBOX);
                message.subject = format!("burst {c}-{i}");
                ids.push(queue(&mut client, message).await);
            }
            ids
        }));
    }
    let mut accepted = HashSet::new();
    for caller in callers {
        accepted.extend(caller.await.unwrap());
    }
    assert_eq!(accepted.len(), 1008);
    wait_accepted(&ms, 300, Duration::from_secs(30)).await;
    first.service.signal("-KILL");
    drop(first);
    let before_restart = ms.graph.accepted();
    assert!(before_restart < accepted.len(), "killed mid-burst");
    let mut second = start(&ms, data.path(), &env).await;
    wait_accepted(&ms, accepted.len(), Duration::from_secs(60)).await;
    // Time for a duplicate to show, were there one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    exactly_once(&ms, &accepted);
    let sent = count_in_state(&mut second.client, MessageState::Sent).await;
    assert_eq!(sent, accepted.len());
}

#[tokio::test]
async fn a_sigkill_mid_bulk_batch_loses_and_duplicates_nothing_after_a_restart() {
    let ms = Microsoft::start().await;
    ms.graph.set_latency(Duration::from_millis(30));
    let data = tempfile::tempdir().unwrap();
    let env = crash_env(&ms);
    let mut first = connected(&ms, data.path(), &env).await;
    let recipients: Vec<proto::BulkRecipient> = (0..800)
        .map(|i| proto::BulkRecipient {
            to: Some(proto::EmailAddress {
                address: format!("reader{i}@example.com"),
                name: String::new(),
            }),
            variables: [("n".to_owned(), i.to_string())].into(),
        })
        .collect();
    let batch = first
        .client
        .send_bulk(proto::SendBulkRequest {
            template: Some(proto::SendMailRequest {
                mailbox: MAILBOX.into(),
                subject: "Issue {{ n }}".into(),
                text_body: "Hello reader {{ n }}".into(),
                ..Default::default()
            }),
            recipients,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait_accepted(&ms, 250, Duration::from_secs(30)).await;
    first.service.signal("-KILL");
    drop(first);
    let mut second = start(&ms, data.path(), &env).await;
    wait_accepted(&ms, 800, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = batch_ids(&mut second.client, &batch.batch_id).await;
    assert_eq!(ids.len(), 800);
    exactly_once(&ms, &ids);
    let status = second
        .client
        .get_batch(proto::GetBatchRequest {
            batch_id: batch.batch_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.sent, status.queued, status.unknown), (800, 0, 0));
    let subjects: HashSet<String> = ms
        .graph
        .delivered()
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(subjects.len(), 800, "each reader got their own issue");
}

#[tokio::test]
async fn two_replicas_on_postgres_share_one_queue_and_one_mailboxs_limits() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    let env = outbox_env(
        &ms,
        &[
            ("LIMIT_MESSAGES_PER_MINUTE", "1150"),
            ("DATABASE_URL", &db.url),
            ("ENCRYPTION_KEY", crate::support::TEST_KEY),
        ],
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = connected(&ms, dir_a.path(), &env).await;
    let mut b = start(&ms, dir_b.path(), &env).await;
    // Exchange's 1,200 a minute, checked as 120 in any 6 s, for both replicas together. The
    // service is set a little under it (1,150): the replicas' sends leave from two processes,
    // and a loaded test machine delays one more than the 2 % slack of a 6 s window allows.
    ms.graph.set_message_rate(120, Duration::from_secs(6));
    let started = Instant::now();
    let mut accepted = HashSet::new();
    for i in 0..100 {
        let mut message = simple_message(MAILBOX);
        message.subject = format!("a{i}");
        accepted.insert(queue(&mut a.client, message).await);
        let mut message = simple_message(MAILBOX);
        message.subject = format!("b{i}");
        accepted.insert(queue(&mut b.client, message).await);
    }
    wait_accepted(&ms, 200, Duration::from_secs(40)).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    exactly_once(&ms, &accepted);
    assert_eq!(ms.graph.rate_refusals(), 0, "the replicas kept to one pace");
    // 199 slots of 53 ms between them: the pace is shared, not doubled.
    assert!(took >= Duration::from_millis(10_400), "{took:?}");
    assert!(ms.graph.max_in_flight() <= 4);
}

/// How many messages are in `state`, through ListMessages' pages.
async fn count_in_state(
    client: &mut graph_mailer::proto::mailer_client::MailerClient<tonic::transport::Channel>,
    state: MessageState,
) -> usize {
    let mut count = 0;
    let mut token = String::new();
    loop {
        let page = client
            .list_messages(proto::ListMessagesRequest {
                state: state as i32,
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        count += page.messages.len();
        if page.next_page_token.is_empty() {
            return count;
        }
        token = page.next_page_token;
    }
}

/// The ids of a batch's messages.
async fn batch_ids(
    client: &mut graph_mailer::proto::mailer_client::MailerClient<tonic::transport::Channel>,
    batch_id: &str,
) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_messages(proto::ListMessagesRequest {
                batch_id: batch_id.to_owned(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.messages.into_iter().map(|m| m.message_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_sigterm_gives_back_claimed_messages_whose_send_had_not_begun() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut env = crash_env(&ms);
    env.extend([
        ("OUTBOX_WORKERS", "1".to_owned()),
        ("SHUTDOWN_DRAIN_SECONDS", "1".to_owned()),
    ]);
    let mut first = connected(&ms, data.path(), &env).await;
    // One send at a time, and the first one outlasts the drain: the other messages are
    // claimed (SENDING) and wait for the send permit when SIGTERM comes.
    ms.graph.set_latency(Duration::from_secs(4));
    let mut ids = Vec::new();
    for i in 0..10 {
        let mut message = simple_message(MAILBOX);
        message.subject = format!("m{i}");
        ids.push(queue(&mut first.client, message).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.service.terminate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.service.is_running() {
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop the service"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first);
    ms.graph.set_latency(Duration::ZERO);
    let mut second = start(&ms, data.path(), &env).await;
    let accepted: HashSet<String> = ids.iter().cloned().collect();
    wait_accepted(&ms, accepted.len(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    exactly_once(&ms, &accepted);
    // Given back, they went out on their first real attempt; only the message whose send was
    // under way when the service stopped had to be looked up and sent again.
    let mut once = 0;
    for id in &ids {
        let status = crate::outbox::status(&mut second.client, id).await;
        assert_eq!(status.state(), MessageState::Sent);
        once += usize::from(status.attempts == 1);
    }
    assert!(once >= 9, "only {once} of 10 sent at their first attempt");
}

#[tokio::test]
async fn two_replicas_taking_the_same_idempotency_keys_at_once_store_each_message_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    let env = outbox_env(
        &ms,
        &[
            ("DATABASE_URL", &db.url),
            ("ENCRYPTION_KEY", crate::support::TEST_KEY),
        ],
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = connected(&ms, dir_a.path(), &env).await;
    let b = start(&ms, dir_b.path(), &env).await;
    // Every caller takes the keys in an order of its own (rotated, every other one reversed):
    // group commits on both replicas meet keys that another transaction is inserting, in
    // opposite orders.
    let keys: Vec<String> = (0..60).map(|k| format!("key-{k:03}")).collect();
    let mut calls = Vec::new();
    for (replica, client) in [a.client.clone(), b.client.clone()].into_iter().enumerate() {
        for caller in 0..12 {
            let mut client = client.clone();
            let mut keys = keys.clone();
            let by = (caller * 7 + replica * 3) % keys.len();
            keys.rotate_left(by);
            if (caller + replica) % 2 == 1 {
                keys.reverse();
            }
            calls.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for key in keys {
                    let mut message = simple_message(MAILBOX);
                    message.subject = key.clone();
                    message.idempotency_key = key.clone();
                    let answer = client
                        .queue_mail(proto::QueueMailRequest {
                            message: Some(message),
                            send_at: None,
                        })
                        .await;
                    ids.push((key, answer.map(|r| r.into_inner().message_id)));
                }
                ids
            }));
        }
    }
    let mut by_key: std::collections::HashMap<String, HashSet<String>> = Default::default();
    for call in calls {
        for (key, answer) in call.await.unwrap() {
            let id = answer.unwrap_or_else(|status| panic!("{key}: {status:?}"));
            by_key.entry(key).or_default().insert(id);
        }
    }
    assert_eq!(by_key.len(), keys.len());
    for (key, ids) in by_key {
        assert_eq!(ids.len(), 1, "{key} stored as {ids:?}");
    }
}
