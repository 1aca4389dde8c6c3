//! The outbox's benchmarks: how fast QueueMail stores messages durably (SQLite and
//! PostgreSQL), how fast a 10,000-recipient SendBulk is accepted and then delivered at its
//! pace, and how close 100 mailboxes come to their allowed rate against a fake Graph that
//! refuses any send over it.
//!
//! ```text
//! cargo build --release && cargo run --release --example outbox_bench -- [--seconds 5] [--rounds 3] [--only mailboxes]
//! ```
//!
//! PostgreSQL is the local server (`GRAPH_MAILER_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`); a database of its own is created and dropped.

#[allow(dead_code)]
#[path = "../tests/it/support/fake_graph/mod.rs"]
mod fake_graph;
#[allow(dead_code)]
#[path = "../tests/it/support/fake_identity.rs"]
mod fake_identity;
#[allow(dead_code)] // each harness uses part of it
mod harness;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use fake_graph::FakeGraph;
use fake_identity::{FakeIdentity, TokenRegistry};
use graph_mailer::proto;
use harness::{MAILBOX, Run, Service, small_message};
use sqlx::Connection;

struct Options {
    seconds: u64,
    rounds: usize,
    /// Only the benchmarks whose names contain this (`queue`, `bulk`, `mailboxes`).
    only: Option<String>,
}

impl Options {
    fn runs(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| name.contains(only))
    }
}

fn options() -> Options {
    let mut options = Options {
        seconds: 5,
        rounds: 3,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--seconds", Some(v)) => options.seconds = v,
            ("--rounds", Some(v)) => options.rounds = v as usize,
            ("--only", _) if pair.len() == 2 => options.only = Some(pair[1].clone()),
            _ => {
                eprintln!(
                    "usage: outbox_bench [--seconds N] [--rounds N] [--only queue|bulk|mailboxes]"
                );
                std::process::exit(2);
            }
        }
    }
    options
}

/// QueueMail from 64 callers for `seconds`: messages/s and latencies.
async fn accept(service: &Service, seconds: u64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut client = service.client().await;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                client
                    .queue_mail(proto::QueueMailRequest {
                        message: Some(small_message()),
                        send_at: None,
                    })
                    .await
                    .unwrap();
                latencies.push(began.elapsed());
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Run {
        messages: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

/// Median, lowest and highest of the rounds' rates, and the median round's p50 and p99.
fn summary(mut runs: Vec<Run>) -> String {
    runs.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    let (low, high) = (runs[0].per_second(), runs[runs.len() - 1].per_second());
    let middle = runs.len() / 2;
    let median = &mut runs[middle];
    format!(
        "{:.0} messages/s (rounds {:.0}–{:.0}); p50 {:.1} ms, p99 {:.1} ms",
        median.per_second(),
        low,
        high,
        median.percentile(0.5).as_secs_f64() * 1e3,
        median.percentile(0.99).as_secs_f64() * 1e3
    )
}

async fn fakes() -> (FakeIdentity, FakeGraph) {
    let tokens = TokenRegistry::default();
    let identity = FakeIdentity::start(tokens.clone()).await;
    identity.set_access_token_lifetime(24 * 3600, false);
    let graph = FakeGraph::start(tokens).await;
    identity.set_graph_resource(&graph.base_url);
    graph.forget_deliveries();
    (identity, graph)
}

/// A database of its own on the local PostgreSQL, or `None` when there is no server.
async fn postgres_database() -> Option<(String, String, String)> {
    let admin = std::env::var("GRAPH_MAILER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut connection = sqlx::PgConnection::connect(&admin).await.ok()?;
    let name = format!("gm_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut connection)
        .await
        .ok()?;
    let mut url = url::Url::parse(&admin).ok()?;
    url.set_path(&name);
    Some((url.to_string(), admin, name))
}

async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut connection) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut connection)
        .await;
    }
}

/// QueueMail rounds on one store.
async fn accept_rounds(env: &[(&str, String)], options: &Options) -> String {
    let (identity, graph) = fakes().await;
    let service = Service::start_with(&identity, &graph, env, &[MAILBOX]).await;
    accept(&service, 1).await;
    let mut runs = Vec::new();
    for _ in 0..options.rounds {
        runs.push(accept(&service, options.seconds).await);
    }
    summary(runs)
}

/// A 10,000-recipient SendBulk: how long acceptance takes, then the delivery rate over
/// `seconds` against the configured one.
async fn bulk(seconds: u64) -> (Duration, f64, f64) {
    let (identity, graph) = fakes().await;
    let per_minute = 1200.0;
    let env = [(
        "GRAPH_MAILER_LIMIT_MESSAGES_PER_MINUTE",
        format!("{per_minute}"),
    )];
    let service = Service::start_with(&identity, &graph, &env, &[MAILBOX]).await;
    let mut client = service.client().await;
    let recipients: Vec<proto::BulkRecipient> = (0..10_000)
        .map(|i| proto::BulkRecipient {
            to: Some(proto::EmailAddress {
                address: format!("reader{i}@example.com"),
                name: format!("Reader {i}"),
            }),
            variables: [("code".to_owned(), format!("{i:05}"))].into(),
        })
        .collect();
    let request = proto::SendBulkRequest {
        template: Some(proto::SendMailRequest {
            mailbox: MAILBOX.into(),
            subject: "Your code {{ code }}".into(),
            text_body: "Hello {{ display_name }}, your code is {{ code }}. ".repeat(20),
            ..Default::default()
        }),
        recipients,
        ..Default::default()
    };
    let started = Instant::now();
    client.send_bulk(request).await.unwrap();
    let accepted_in = started.elapsed();
    // From the first delivery on, count what goes out in `seconds`.
    while graph.accepted() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (from, at) = (graph.accepted(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = (graph.accepted() - from) as f64 / at.elapsed().as_secs_f64();
    (accepted_in, rate, per_minute / 60.0)
}

/// 100 mailboxes, 120 messages a minute each, against a fake that refuses a 21st send of a
/// mailbox within any 10 s: delivered rate against the allowed one, and the 429s provoked.
async fn hundred_mailboxes(seconds: u64) -> (f64, f64, usize) {
    let (identity, graph) = fakes().await;
    let mailboxes: Vec<String> = (0..100).map(|i| format!("box{i}@contoso.com")).collect();
    let names: Vec<&str> = mailboxes.iter().map(String::as_str).collect();
    let env = [("GRAPH_MAILER_LIMIT_MESSAGES_PER_MINUTE", "120".to_owned())];
    let service = Service::start_with(&identity, &graph, &env, &names).await;
    graph.set_message_rate(20, Duration::from_secs(10));
    let mut client = service.client().await;
    for mailbox in &mailboxes {
        for _ in 0..(seconds as usize * 2 + 20) {
            let message = proto::SendMailRequest {
                mailbox: mailbox.clone(),
                ..small_message()
            };
            client
                .queue_mail(proto::QueueMailRequest {
                    message: Some(message),
                    send_at: None,
                })
                .await
                .unwrap();
        }
    }
    // Let every mailbox reach its pace, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (from, at) = (graph.accepted(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let rate = (graph.accepted() - from) as f64 / at.elapsed().as_secs_f64();
    let allowed = 100.0 * 120.0 / 60.0;
    (rate, allowed, graph.rate_refusals())
}

#[tokio::main]
async fn main() {
    let options = options();
    println!(
        "graph-mailer outbox benchmark: {} rounds of {} s, {} cores",
        options.rounds,
        options.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    if options.runs("queue") {
        queue_benchmarks(&options).await;
    }
    if options.runs("bulk") {
        let (accepted_in, rate, configured) = bulk(options.seconds * 3).await;
        println!(
            "| SendBulk, 10,000 recipients | SQLite | accepted in {:.2} s; then {:.2} messages/s delivered against {:.2} configured ({:.1} %) |",
            accepted_in.as_secs_f64(),
            rate,
            configured,
            rate / configured * 100.0
        );
    }
    if options.runs("mailboxes") {
        let (rate, allowed, refusals) = hundred_mailboxes(options.seconds * 3).await;
        println!(
            "| 100 mailboxes at 120/min each | SQLite | {:.1} messages/s delivered of {:.0} allowed ({:.1} %), {} 429s provoked |",
            rate,
            allowed,
            rate / allowed * 100.0,
            refusals
        );
    }
}

/// QueueMail's throughput on SQLite, then on PostgreSQL.
async fn queue_benchmarks(options: &Options) {
    let sqlite = accept_rounds(&[], options).await;
    println!("| QueueMail, 64 callers, 2 KB, durable | SQLite | {sqlite} |");
    match postgres_database().await {
        Some((url, admin, name)) => {
            let env = [
                ("GRAPH_MAILER_DATABASE_URL", url),
                (
                    "GRAPH_MAILER_ENCRYPTION_KEY",
                    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
                ),
            ];
            let postgres = accept_rounds(&env, options).await;
            println!("| QueueMail, 64 callers, 2 KB, durable | PostgreSQL | {postgres} |");
            drop_database(&admin, &name).await;
        }
        None => println!("| QueueMail | PostgreSQL | no server reachable: skipped |"),
    }
}
