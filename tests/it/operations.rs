//! Operating the service: Status, health, metrics, the client secret's life, `check`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use graph_mailer::{
    check::{self, Outcome},
    clock::{ManualClock, SystemClock},
    proto,
    settings::{Settings, raw},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{
    MAILBOX, Microsoft, TestApp, connected_app, fake_graph::Scripted, fake_identity::CLIENT_SECRET,
    simple_message,
};

async fn grpc_health(app: &TestApp) -> i32 {
    grpc_health_of(app, "graphmailer.v1.Mailer").await
}

async fn grpc_health_of(app: &TestApp, service: &str) -> i32 {
    let channel = app.channel().await;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn status_warns_before_the_client_secret_expires() {
    let ms = Microsoft::start().await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let app = TestApp::builder()
        .microsoft(&ms)
        .env("CLIENT_SECRET_EXPIRES_AT", &expires)
        .start()
        .await;
    let status = app
        .client()
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.transport, "graph");
    let at = status.client_secret_expires_at.unwrap().seconds;
    assert_eq!(
        chrono::DateTime::from_timestamp(at, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string(),
        expires
    );
    assert_eq!(status.warnings.len(), 1, "{:?}", status.warnings);
    assert!(
        status.warnings[0].contains("expires on"),
        "{}",
        status.warnings[0]
    );

    let expired = TestApp::builder()
        .microsoft(&ms)
        .env("CLIENT_SECRET_EXPIRES_AT", "2020-01-01")
        .start()
        .await;
    let status = expired
        .client()
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.warnings[0].contains("expired on 2020-01-01"),
        "{:?}",
        status.warnings
    );

    let later = (chrono::Utc::now() + chrono::Duration::days(90))
        .format("%Y-%m-%d")
        .to_string();
    let fine = TestApp::builder()
        .microsoft(&ms)
        .env("CLIENT_SECRET_EXPIRES_AT", &later)
        .start()
        .await;
    let status = fine
        .client()
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.warnings.is_empty());
}

#[tokio::test]
async fn health_turns_not_serving_while_the_store_is_unreachable_but_not_for_one_bad_mailbox() {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let app = connected_app(
        &ms,
        TestApp::builder()
            .clock(clock.clone())
            .env("HEALTH_INTERVAL_SECONDS", "1"),
    )
    .await;
    ms.identity
        .fail_refreshes(Some(crate::support::fake_identity::Fault::ExpiredGrant));
    clock.advance(chrono::Duration::minutes(61));
    assert!(
        app.client()
            .send_mail(simple_message(MAILBOX))
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        grpc_health(&app).await,
        ServingStatus::Serving as i32,
        "one mailbox needing Connect is not an outage"
    );

    app.store.close().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(grpc_health(&app).await, ServingStatus::NotServing as i32);
    assert_eq!(
        grpc_health_of(&app, "").await,
        ServingStatus::Serving as i32,
        "still alive"
    );
    let ready = reqwest::get(format!("{}/readyz", app.http_base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let live = reqwest::get(format!("{}/healthz", app.http_base))
        .await
        .unwrap();
    assert_eq!(
        live.status(),
        200,
        "liveness only asks whether the process answers"
    );
}

/// `name{labels} value` lines of the Prometheus text format.
fn parse_metrics(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), HashMap::new()),
        };
        samples.push((name, labels, value));
    }
    samples
}

#[tokio::test]
async fn metrics_after_traffic_cover_sends_graph_retries_tokens_and_states() {
    let ms = Microsoft::start().await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(200)).to_rfc3339();
    let app = connected_app(
        &ms,
        TestApp::builder().env("CLIENT_SECRET_EXPIRES_AT", &expires),
    )
    .await;
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    let keyed = proto::SendMailRequest {
        idempotency_key: "m-1".into(),
        ..simple_message(MAILBOX)
    };
    app.client().send_mail(keyed.clone()).await.unwrap();
    app.client().send_mail(keyed).await.unwrap();
    ms.graph.script("sendMail", [Scripted::throttle(1)]);
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    ms.graph
        .script("sendMail", [Scripted::error(400, "ErrorInvalidRecipients")]);
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    ms.identity.tokens.revoke_all();
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    app.client()
        .status(proto::StatusRequest::default())
        .await
        .unwrap();

    let text = reqwest::get(format!("{}/metrics", app.http_base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_metrics(&text);
    let find = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .sum()
    };
    assert!(
        find(
            "graph_mailer_sends_total",
            &[("mailbox_domain", "contoso.com"), ("outcome", "sent")]
        ) >= 4.0
    );
    assert!(find("graph_mailer_sends_total", &[("outcome", "deduplicated")]) >= 1.0);
    assert!(
        find(
            "graph_mailer_sends_total",
            &[("outcome", "failed"), ("code", "INVALID_ARGUMENT")]
        ) >= 1.0
    );
    assert!(
        find(
            "graph_mailer_send_duration_seconds_count",
            &[("transport", "graph")]
        ) >= 6.0
    );
    assert!(
        find(
            "graph_mailer_send_duration_seconds_bucket",
            &[("le", "+Inf")]
        ) >= 6.0
    );
    assert!(
        find(
            "graph_mailer_graph_requests_total",
            &[("endpoint", "sendMail"), ("status", "202")]
        ) >= 4.0
    );
    assert!(
        find(
            "graph_mailer_graph_requests_total",
            &[("endpoint", "sendMail"), ("status", "429")]
        ) >= 1.0
    );
    assert!(
        find(
            "graph_mailer_graph_retries_total",
            &[("reason", "throttled")]
        ) >= 1.0
    );
    assert!(
        find(
            "graph_mailer_graph_retries_total",
            &[("reason", "unauthorized")]
        ) >= 1.0
    );
    assert!(find("graph_mailer_graph_throttled_total", &[]) >= 1.0);
    assert!(find("graph_mailer_graph_retry_after_seconds_count", &[]) >= 1.0);
    assert!(
        find(
            "graph_mailer_token_refreshes_total",
            &[("outcome", "success")]
        ) >= 1.0
    );
    assert!(
        find(
            "graph_mailer_connect_callbacks_total",
            &[("outcome", "connected")]
        ) >= 1.0
    );
    assert!(samples.iter().any(|(n, l, _)| n == "graph_mailer_mailboxes"
        && l.get("state").map(String::as_str) == Some("connected")));
    assert!(
        samples
            .iter()
            .any(|(n, _, _)| n == "graph_mailer_sends_in_flight")
    );
    assert!(find("graph_mailer_client_secret_expiry_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(
        find(
            "graph_mailer_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for (name, labels, _) in &samples {
        for value in labels.values() {
            assert!(
                !value.contains('@'),
                "{name} has an address in a label: {value}"
            );
        }
    }
    assert!(
        !text.contains("at-") && !text.contains("rt-"),
        "no token in metrics"
    );
}

#[tokio::test]
async fn a_rotated_secret_file_is_used_without_a_restart() {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let app = connected_app(
        &ms,
        TestApp::builder()
            .clock(clock.clone())
            .env("CLIENT_SECRET_FILE", secret_file.display().to_string())
            .env("SECRET_RELOAD_SECONDS", "1"),
    )
    .await;

    // Rotation: the app registration accepts only the new secret from now on.
    std::fs::write(&secret_file, "new~Rotated.Secret_value").unwrap();
    ms.identity.accept_only_secret("new~Rotated.Secret_value");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    clock.advance(chrono::Duration::minutes(61));
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    assert_eq!(
        ms.identity.token_requests("refresh_token"),
        1,
        "the watcher had already switched"
    );

    // A rotation the watcher has not seen yet: Microsoft refuses, the file is re-read, the
    // request repeated once with the new secret.
    std::fs::write(&secret_file, "third~Secret.value").unwrap();
    ms.identity.accept_only_secret("third~Secret.value");
    clock.advance(chrono::Duration::minutes(61));
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    assert_eq!(ms.identity.token_requests("refresh_token"), 3);
    assert_eq!(ms.identity.successful_refreshes(), 2);
    assert_eq!(ms.graph.delivered().len(), 2);
}

/// A callers file with one admin, as a complete set-up has.
fn callers_file(dir: &std::path::Path) -> String {
    let path = dir.join("callers.toml");
    std::fs::write(
        &path,
        format!(
            "[[caller]]\nname = \"ops\"\nrole = \"admin\"\nkey_sha256 = \"{}\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    path.display().to_string()
}

pub(crate) fn settings_for(
    ms: &Microsoft,
    data_dir: &std::path::Path,
    extra: &[(&str, String)],
) -> Settings {
    let expires = (chrono::Utc::now() + chrono::Duration::days(365))
        .format("%Y-%m-%d")
        .to_string();
    let mut env: Vec<(String, String)> = ms
        .env()
        .into_iter()
        .chain([
            ("DATA_DIR", data_dir.display().to_string()),
            ("CLIENT_SECRET_EXPIRES_AT", expires),
            ("CALLERS_FILE", callers_file(data_dir)),
        ])
        .map(|(k, v)| (format!("GRAPH_MAILER_{k}"), v))
        .collect();
    for (k, v) in extra {
        env.retain(|(name, _)| name != &format!("GRAPH_MAILER_{k}"));
        env.push((format!("GRAPH_MAILER_{k}"), v.clone()));
    }
    Settings::from_raw(raw::load(None, env).unwrap().0).unwrap()
}

pub(crate) fn outcome_of(report: &check::Report, name: &str) -> Outcome {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#?}"))
        .outcome
}

#[tokio::test]
async fn check_passes_a_correct_set_up_and_sends_the_test_mail() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let app = connected_app(&ms, TestApp::builder().data_dir(data.path())).await;
    app.stop().await.unwrap();
    let options = check::Options {
        send_test: Some("admin@example.com".into()),
        ..Default::default()
    };
    let report = check::checks(
        Ok(settings_for(&ms, data.path(), &[])),
        &options,
        Arc::new(SystemClock),
    )
    .await;
    assert!(report.ok, "{report:#?}");
    for name in [
        "tenant ID",
        "client ID",
        "client secret",
        "client secret expiry",
        "redirect URI",
        "authority",
        "store",
    ] {
        assert_eq!(outcome_of(&report, name), Outcome::Pass, "{name}");
    }
    assert_eq!(
        outcome_of(&report, "noreply@contoso.com: refresh token"),
        Outcome::Pass
    );
    let delivered = ms.graph.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].subject.starts_with("graph-mailer test – "),
        "{}",
        delivered[0].subject
    );
    assert_eq!(delivered[0].to[0].0, "admin@example.com");
}

#[tokio::test]
async fn check_names_each_broken_checkpoint_with_its_fix() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let app = connected_app(&ms, TestApp::builder().data_dir(data.path())).await;
    app.stop().await.unwrap();
    ms.identity.accept_only_secret("rotated-elsewhere");
    let settings = settings_for(
        &ms,
        data.path(),
        &[
            (
                "CLIENT_SECRET_EXPIRES_AT",
                (chrono::Utc::now() + chrono::Duration::days(5))
                    .format("%Y-%m-%d")
                    .to_string(),
            ),
            ("PUBLIC_URL", "http://mail.example.com".to_owned()),
        ],
    );
    let report = check::checks(
        Ok(settings),
        &check::Options::default(),
        Arc::new(SystemClock),
    )
    .await;
    assert!(!report.ok);
    assert_eq!(outcome_of(&report, "client secret expiry"), Outcome::Fail);
    assert_eq!(outcome_of(&report, "redirect URI"), Outcome::Fail);
    let refresh = report
        .checks
        .iter()
        .find(|c| c.name == "noreply@contoso.com: refresh token")
        .unwrap();
    assert_eq!(refresh.outcome, Outcome::Fail);
    assert!(
        refresh.detail.contains("AADSTS7000215"),
        "{}",
        refresh.detail
    );
    assert!(
        report
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .all(|c| c.fix.is_some())
    );

    let unknown_tenant = settings_for(
        &ms,
        data.path(),
        &[(
            "TENANT_ID",
            "99999999-9999-9999-9999-999999999999".to_owned(),
        )],
    );
    let report = check::checks(
        Ok(unknown_tenant),
        &check::Options::default(),
        Arc::new(SystemClock),
    )
    .await;
    let authority = report
        .checks
        .iter()
        .find(|c| c.name == "authority")
        .unwrap();
    assert_eq!(authority.outcome, Outcome::Fail);
    assert!(
        authority.detail.contains("AADSTS90002") || authority.detail.contains("not found"),
        "{}",
        authority.detail
    );

    let report = check::checks(
        Err("GRAPH_MAILER_GRPC_ADDR is \"x\"".into()),
        &check::Options::default(),
        Arc::new(SystemClock),
    )
    .await;
    assert!(!report.ok);
}
