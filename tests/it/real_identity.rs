//! Where the Microsoft identity platform is stricter than the first fakes were (issue 10):
//! refreshes ask for what was granted, the signed-in user is read from Graph (UPN, primary
//! address, aliases) and pinned by object id, policy and loop codes are not outages, a second
//! 401 asks to reconnect, slow refreshes hold no database connection, and scopes name the
//! configured Graph.

use std::{sync::Arc, time::Duration};

use graph_mailer::{
    check::{self, Outcome},
    clock::{ManualClock, SystemClock},
    proto,
};
use tonic::Code;

use crate::{
    operations::{outcome_of, settings_for},
    support::{
        MAILBOX, Microsoft, TestApp,
        binary::Service,
        cloud_proxy::CloudProxy,
        connected_app,
        fake_graph::Scripted,
        fake_identity::{CLIENT_ID, CLIENT_SECRET, Fault, TENANT, User},
        postgres::TestDatabase,
        sign_in_link, simple_message,
    },
};

/// A user whose sign-in name is not their address, with two aliases.
fn jane() -> User {
    User {
        oid: "0b7f5c3a-8a4e-4d8e-9f0a-1c2d3e4f5a6b".into(),
        upn: "jane.doe@contoso.onmicrosoft.com".into(),
        mail: "jane@contoso.com".into(),
        proxy_addresses: vec![
            "SMTP:jane@contoso.com".into(),
            "smtp:j.doe@contoso.com".into(),
            "smtp:jane.doe@contoso.onmicrosoft.com".into(),
        ],
    }
}

fn both_bodies(mailbox: &str) -> proto::SendMailRequest {
    proto::SendMailRequest {
        html_body: "<p>Hi</p>".into(),
        ..simple_message(mailbox)
    }
}

#[tokio::test]
async fn a_mailbox_configured_as_its_upn_sends_from_its_primary_address_in_every_form() {
    let ms = Microsoft::start().await;
    ms.identity.add_user(jane());
    let app = TestApp::builder().microsoft(&ms).start().await;
    let upn = jane().upn;
    let (code, page) = app.connect_mailbox(&upn).await;
    assert_eq!(code, 200, "{page}");
    let status = app.mailbox_status(&upn).await;
    assert_eq!(status.account, upn);
    assert_eq!(status.sending_address, "jane@contoso.com");
    app.client().send_mail(simple_message(&upn)).await.unwrap();
    app.client().send_mail(both_bodies(&upn)).await.unwrap();
    let delivered = ms.graph.delivered();
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0].form, "json");
    assert_eq!(delivered[1].form, "mime");
    for message in delivered {
        assert_eq!(message.from, "jane@contoso.com", "{}", message.form);
    }
}

#[tokio::test]
async fn an_alias_of_the_signed_in_user_may_be_connected() {
    let ms = Microsoft::start().await;
    ms.identity.add_user(jane());
    let app = TestApp::builder().microsoft(&ms).start().await;
    let (code, page) = app.connect_mailbox("J.Doe@contoso.com").await;
    assert_eq!(code, 200, "{page}");
    let status = app.mailbox_status("j.doe@contoso.com").await;
    assert_eq!(status.sending_address, "jane@contoso.com");
    assert_eq!(status.account, jane().upn);
}

#[tokio::test]
async fn another_account_with_the_mailbox_address_is_refused_until_disconnect() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    // The address now belongs to a new account (the old one was deleted).
    let mut successor = User::simple(MAILBOX);
    successor.oid = "ffffffff-0000-4000-8000-000000000001".into();
    ms.identity.replace_user(successor);
    let (code, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(code, 403, "{page}");
    assert!(page.contains("Disconnect"), "{page}");
    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(
        status.state,
        proto::ConnectionState::Connected as i32,
        "unchanged"
    );
    app.client()
        .disconnect(proto::DisconnectRequest {
            mailbox: MAILBOX.into(),
        })
        .await
        .unwrap();
    let (code, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(code, 200, "{page}");
}

#[tokio::test]
async fn an_id_token_from_another_issuer_is_refused() {
    let ms = Microsoft::start().await;
    ms.identity
        .set_issuer(&format!("https://sts.windows.net/{TENANT}/"));
    let app = TestApp::builder().microsoft(&ms).start().await;
    let (code, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(code, 400, "{page}");
    assert!(page.contains("issuer"), "{page}");
}

#[tokio::test]
async fn a_sign_in_without_user_read_explains_the_missing_permission() {
    let ms = Microsoft::start().await;
    let graph = ms.graph.base_url.clone();
    ms.identity.grant_scopes(&format!(
        "openid profile email offline_access {graph}/Mail.Send"
    ));
    let app = TestApp::builder().microsoft(&ms).start().await;
    let (code, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(code, 400, "{page}");
    assert!(page.contains("User.Read"), "{page}");
}

#[tokio::test]
async fn a_permission_added_to_the_configuration_does_not_break_refreshes() {
    let ms = Microsoft::start().await;
    let data = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let app = connected_app(
        &ms,
        TestApp::builder()
            .data_dir(data.path())
            .clock(clock.clone()),
    )
    .await;
    app.stop().await.unwrap();
    let app = TestApp::builder()
        .microsoft(&ms)
        .data_dir(data.path())
        .clock(clock.clone())
        .env("GRAPH_SCOPES", "Mail.Send Mail.ReadWrite")
        .start()
        .await;
    clock.advance(chrono::Duration::minutes(61));
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
    assert_eq!(ms.identity.successful_refreshes(), 1);
    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(status.state, proto::ConnectionState::Connected as i32);
    assert_eq!(status.missing_scopes, ["Mail.ReadWrite"]);
    let warnings = app
        .client()
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .warnings;
    assert!(
        warnings.iter().any(|w| w
            .contains("configured Mail.ReadWrite is not granted: call Connect with force_consent")),
        "{warnings:?}"
    );
    app.stop().await.unwrap();
    let report = check::checks(
        Ok(settings_for(
            &ms,
            data.path(),
            &[("GRAPH_SCOPES", "Mail.Send Mail.ReadWrite".to_owned())],
        )),
        &check::Options::default(),
        Arc::new(SystemClock),
    )
    .await;
    let permissions = format!("{MAILBOX}: permissions");
    assert_eq!(
        outcome_of(&report, &permissions),
        Outcome::Warn,
        "{report:#?}"
    );
    assert_eq!(
        outcome_of(&report, &format!("{MAILBOX}: sending address")),
        Outcome::Pass
    );
}

#[tokio::test]
async fn conditional_access_blocking_refreshes_is_for_an_administrator_not_a_reconnect() {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let app = connected_app(&ms, TestApp::builder().clock(clock.clone())).await;
    ms.identity.fail_refreshes(Some(Fault::ConditionalAccess));
    clock.advance(chrono::Duration::minutes(61));
    let refused = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("administrator"),
        "{}",
        refused.message()
    );
    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(
        status.state,
        proto::ConnectionState::Connected as i32,
        "a new sign-in would be blocked again: the grant is kept"
    );
    assert!(
        status.last_error.contains("AADSTS53003"),
        "{}",
        status.last_error
    );
    assert!(
        status.last_error.contains("Conditional Access"),
        "{}",
        status.last_error
    );
}

#[tokio::test]
async fn a_loop_detected_refresh_is_a_bug_not_an_outage_to_retry() {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let app = connected_app(&ms, TestApp::builder().clock(clock.clone())).await;
    ms.identity.fail_refreshes(Some(Fault::LoopDetected));
    clock.advance(chrono::Duration::minutes(61));
    let refused = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Internal, "{}", refused.message());
    assert!(
        refused.message().contains("AADSTS50196"),
        "{}",
        refused.message()
    );
    assert_eq!(
        ms.identity.token_requests("refresh_token"),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn a_second_401_after_the_refresh_asks_the_operator_to_reconnect() {
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder()).await;
    ms.graph.script(
        "sendMail",
        [
            Scripted::error(401, "InvalidAuthenticationToken"),
            Scripted::error(401, "InvalidAuthenticationToken"),
        ],
    );
    let refused = app
        .client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("Connect"),
        "{}",
        refused.message()
    );
    assert_eq!(ms.identity.successful_refreshes(), 1);
}

#[tokio::test]
async fn slow_refreshes_of_many_mailboxes_hold_no_database_connection() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let first = TestApp::builder()
        .microsoft(&ms)
        .clock(clock.clone())
        .database(&db.url)
        .start()
        .await;
    let second = TestApp::builder()
        .microsoft(&ms)
        .clock(clock.clone())
        .database(&db.url)
        .start()
        .await;
    let mailboxes: Vec<String> = (0..40).map(|i| format!("box{i}@contoso.com")).collect();
    for mailbox in &mailboxes {
        let (code, page) = first.connect_mailbox(mailbox).await;
        assert_eq!(code, 200, "{page}");
    }
    ms.identity.set_refresh_latency(Duration::from_secs(4));
    clock.advance(chrono::Duration::minutes(61));
    let mut sends = Vec::new();
    for (i, mailbox) in mailboxes.iter().enumerate() {
        let mut client = if i % 2 == 0 {
            first.client()
        } else {
            second.client()
        };
        let request = simple_message(mailbox);
        sends.push(tokio::spawn(async move { client.send_mail(request).await }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While forty refreshes wait on Microsoft, the database still answers.
    for replica in [&first, &second] {
        let mut status = tonic::Request::new(proto::StatusRequest::default());
        status.set_timeout(Duration::from_millis(1500));
        let answer = replica.client().status(status).await;
        assert!(answer.is_ok(), "Status during slow refreshes: {answer:?}");
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(ms.identity.successful_refreshes(), 40, "once per mailbox");
}

#[tokio::test]
async fn a_connect_during_a_slow_refresh_is_not_overwritten_by_it() {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let app = connected_app(&ms, TestApp::builder().clock(clock.clone())).await;
    ms.identity.set_refresh_latency(Duration::from_secs(2));
    clock.advance(chrono::Duration::minutes(61));
    let tokens = app.token_manager();
    let mailbox = graph_mailer::domain::Mailbox::parse("mailbox", MAILBOX).unwrap();
    let refresh = tokio::spawn(async move { tokens.refresh_now(&mailbox).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The owner connects again while the old grant's refresh is on its way.
    let (code, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(code, 200, "{page}");
    let _ = refresh.await.unwrap();
    let mailbox = graph_mailer::domain::Mailbox::parse("mailbox", MAILBOX).unwrap();
    let stored = app.store.tokens(&mailbox).await.unwrap().unwrap();
    let stored = secrecy::ExposeSecret::expose_secret(&stored.refresh_token).to_owned();
    assert_eq!(
        ms.identity.sign_in_of(&stored),
        Some(2),
        "the new sign-in's grant is kept, not the old one's refresh"
    );
    app.client()
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_us_government_cloud_deployment_gets_tokens_for_its_own_graph_end_to_end() {
    let ms = Microsoft::start().await;
    let (authority, graph) = ("login.microsoftonline.us", "graph.microsoft.us");
    ms.identity.set_graph_resource(&format!("http://{graph}"));
    ms.identity
        .set_issuer(&format!("http://{authority}/{TENANT}/v2.0"));
    let proxy = CloudProxy::start(&[
        (authority, ms.identity.base_url.clone()),
        (graph, ms.graph.base_url.clone()),
    ])
    .await;
    let data = tempfile::tempdir().unwrap();
    let service = Service::spawn_with_process_env(
        data.path(),
        &[
            ("TENANT_ID", TENANT.to_owned()),
            ("CLIENT_ID", CLIENT_ID.to_owned()),
            ("CLIENT_SECRET", CLIENT_SECRET.to_owned()),
            ("AUTHORITY_URL", format!("http://{authority}")),
            ("GRAPH_URL", format!("http://{graph}")),
            ("ALLOW_UNAUTHENTICATED", "true".to_owned()),
        ],
        &[("HTTP_PROXY", proxy.url.clone())],
    );
    ms.identity.register_redirect_uri(&format!(
        "http://127.0.0.1:{}/oauth2/callback",
        service.http_port
    ));
    service.wait_ready().await;
    let mut client = service.client().await;
    let link = sign_in_link(&mut client, MAILBOX).await;
    assert!(
        link.starts_with(&format!("http://{authority}/{TENANT}/")),
        "{link}"
    );
    let scope = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(
        scope.contains("http://graph.microsoft.us/Mail.Send"),
        "{scope}"
    );
    assert!(!scope.contains("graph.microsoft.com"), "{scope}");
    let browser = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(&proxy.url).unwrap())
        .build()
        .unwrap();
    let page = browser.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());
    client.send_mail(simple_message(MAILBOX)).await.unwrap();
    assert_eq!(ms.graph.delivered().len(), 1);
    let seen = proxy.hosts_seen();
    for host in [authority, graph] {
        assert!(seen.iter().any(|h| h == host), "{host} in {seen:?}");
    }
}
