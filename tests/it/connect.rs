//! Connect: the authorization URL, the callback's checks, and what is (not) stored.

use std::collections::HashMap;

use graph_mailer::{clock::ManualClock, domain::Mailbox, proto};
use tonic::Code;
use url::Url;

use crate::support::{
    MAILBOX, Microsoft, TestApp, browse,
    fake_identity::{CLIENT_ID, Fault, TENANT},
    postgres::TestDatabase,
};

fn query(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

async fn stored_tokens(app: &TestApp) -> bool {
    let mailbox = Mailbox::parse("mailbox", MAILBOX).unwrap();
    app.store.tokens(&mailbox).await.unwrap().is_some()
}

#[tokio::test]
async fn the_authorization_url_carries_every_parameter_microsoft_needs() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    let before = chrono::Utc::now();
    let link = app
        .client()
        .connect(proto::ConnectRequest {
            mailbox: "NoReply@Contoso.com".into(),
            force_consent: false,
        })
        .await
        .unwrap()
        .into_inner();
    let url = Url::parse(&link.authorization_url).unwrap();
    assert_eq!(url.path(), format!("/{TENANT}/oauth2/v2.0/authorize"));
    assert!(link.authorization_url.starts_with(&ms.identity.base_url));
    let q = query(&link.authorization_url);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["response_mode"], "query");
    assert_eq!(
        q["redirect_uri"],
        format!("{}/oauth2/callback", app.http_base)
    );
    // Scopes name the Graph the service talks to (here the fake's origin), and User.Read
    // lets it read who signed in.
    let graph = &ms.graph.base_url;
    assert_eq!(
        q["scope"],
        format!("openid profile email offline_access {graph}/Mail.Send {graph}/User.Read")
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43, "a base64url SHA-256");
    assert!(
        q["state"].len() >= 43,
        "state must carry at least 128 random bits: {}",
        q["state"]
    );
    assert_eq!(q["login_hint"], "noreply@contoso.com");
    assert!(!q.contains_key("prompt"));
    let expires_at = link.expires_at.unwrap().seconds;
    let ten_minutes = (before + chrono::Duration::minutes(10)).timestamp();
    assert!(
        (expires_at - ten_minutes).abs() <= 5,
        "expires_at is ten minutes away"
    );
    assert_eq!(
        app.mailbox_status(MAILBOX).await.state,
        proto::ConnectionState::Pending as i32
    );

    let second = app
        .client()
        .connect(proto::ConnectRequest {
            mailbox: MAILBOX.into(),
            force_consent: true,
        })
        .await
        .unwrap()
        .into_inner();
    let q2 = query(&second.authorization_url);
    assert_eq!(q2["prompt"], "consent");
    assert_ne!(q2["state"], q["state"], "every link has its own state");
    assert_ne!(q2["code_challenge"], q["code_challenge"]);
}

#[tokio::test]
async fn connect_refuses_a_malformed_mailbox() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    let status = app
        .client()
        .connect(proto::ConnectRequest {
            mailbox: "noreply".into(),
            force_consent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("mailbox:"));
}

async fn a_complete_connect_stores_tokens_and_reports_connected(app: TestApp) {
    let (status, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Connected noreply@contoso.com."), "{page}");
    assert!(page.contains("You can close this window."), "{page}");
    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(status.state, proto::ConnectionState::Connected as i32);
    assert_eq!(status.account, MAILBOX);
    for scope in ["Mail.Send", "offline_access", "openid"] {
        assert!(
            status.scopes.iter().any(|s| s == scope),
            "{scope} in {:?}",
            status.scopes
        );
    }
    let now = chrono::Utc::now().timestamp();
    let expires = status.access_token_expires_at.unwrap().seconds;
    assert!(
        (expires - (now + 3900)).abs() < 10,
        "expiry from expires_in"
    );
    assert!(status.connected_at.is_some() && status.last_refreshed_at.is_some());
    assert_eq!(status.last_error, "");
    assert!(stored_tokens(&app).await);
}

#[tokio::test]
async fn a_complete_connect_stores_tokens_and_reports_connected_on_sqlite() {
    let ms = Microsoft::start().await;
    a_complete_connect_stores_tokens_and_reports_connected(
        TestApp::builder().microsoft(&ms).start().await,
    )
    .await;
}

#[tokio::test]
async fn a_complete_connect_stores_tokens_and_reports_connected_on_postgres() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    a_complete_connect_stores_tokens_and_reports_connected(
        TestApp::builder()
            .microsoft(&ms)
            .database(&db.url)
            .start()
            .await,
    )
    .await;
}

#[tokio::test]
async fn signing_in_as_another_account_is_refused_with_instructions_and_nothing_is_stored() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    ms.identity.sign_in_as("admin@contoso.com");
    let (status, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 403);
    let expected = "You signed in as admin@contoso.com, which is neither noreply@contoso.com nor one \
                    of its addresses. Sign out of Microsoft (or use a private window), open the link \
                    again and sign in as the owner of noreply@contoso.com.";
    assert!(page.contains(expected), "{page}");
    assert!(!stored_tokens(&app).await);
    assert_eq!(
        app.mailbox_status(MAILBOX).await.state,
        proto::ConnectionState::NotConnected as i32
    );
}

#[tokio::test]
async fn a_replayed_callback_is_refused_without_redeeming_the_code_again() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    let callback = app.authorize_redirect(MAILBOX).await;
    let (first, _) = browse(&callback).await;
    assert_eq!(first, 200);
    assert_eq!(ms.identity.token_requests("authorization_code"), 1);
    let (replay, page) = browse(&callback).await;
    assert_eq!(replay, 400);
    assert!(page.contains("unknown or was already used"), "{page}");
    assert_eq!(
        ms.identity.token_requests("authorization_code"),
        1,
        "no second redemption"
    );
}

#[tokio::test]
async fn forged_or_missing_states_are_refused_without_a_token_request() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    let callback = app.authorize_redirect(MAILBOX).await;
    let mut forged = Url::parse(&callback).unwrap();
    let code = query(&callback)["code"].clone();
    forged.set_query(Some(&format!("code={code}&state=forged-state-value")));
    let (status, _) = browse(forged.as_str()).await;
    assert_eq!(status, 400);
    let (status, page) = browse(&format!("{}/oauth2/callback?code={code}", app.http_base)).await;
    assert_eq!(status, 400);
    assert!(page.contains("incomplete"), "{page}");
    assert_eq!(ms.identity.token_requests("authorization_code"), 0);
    assert!(!stored_tokens(&app).await);
}

#[tokio::test]
async fn an_expired_link_is_refused_without_a_token_request() {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let app = TestApp::builder()
        .microsoft(&ms)
        .clock(clock.clone())
        .start()
        .await;
    let callback = app.authorize_redirect(MAILBOX).await;
    clock.advance(chrono::Duration::minutes(11));
    let (status, page) = browse(&callback).await;
    assert_eq!(status, 400);
    assert!(page.contains("has expired"), "{page}");
    assert_eq!(ms.identity.token_requests("authorization_code"), 0);
}

#[tokio::test]
async fn declined_consent_shows_microsofts_reason_and_leaves_the_mailbox_as_it_was() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    let (status, _) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 200);
    let before = app.mailbox_status(MAILBOX).await;
    ms.identity.decline_consent();
    let (status, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 403);
    assert!(
        page.contains("AADSTS65004: User declined to consent to access the app."),
        "{page}"
    );
    assert!(page.contains("call Connect again"), "{page}");
    let after = app.mailbox_status(MAILBOX).await;
    assert_eq!(after.state, proto::ConnectionState::Connected as i32);
    assert_eq!(
        after.access_token_expires_at,
        before.access_token_expires_at
    );
    assert_eq!(ms.identity.token_requests("authorization_code"), 1);
}

#[tokio::test]
async fn a_grant_without_mail_send_explains_the_missing_permission() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    ms.identity
        .grant_scopes("openid profile email offline_access");
    let (status, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 400);
    assert!(
        page.contains("did not grant the Mail.Send permission"),
        "{page}"
    );
    assert!(page.contains("API permissions"), "{page}");
    assert!(!stored_tokens(&app).await);
}

#[tokio::test]
async fn a_grant_without_a_refresh_token_explains_offline_access() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    ms.identity.omit_refresh_token();
    let (status, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 400);
    assert!(page.contains("offline_access"), "{page}");
    assert!(!stored_tokens(&app).await);
}

#[tokio::test]
async fn a_rejected_client_secret_names_the_code_and_microsofts_trace_ids() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    ms.identity.accept_only_secret("a-different-secret");
    let (status, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 500);
    assert!(page.contains("AADSTS7000215"), "{page}");
    assert!(page.contains("not its Secret ID"), "{page}");
    assert!(
        page.contains("trace_id") && page.contains("correlation_id"),
        "{page}"
    );
    let status = app.mailbox_status(MAILBOX).await;
    assert!(
        status.last_error.starts_with("AADSTS7000215"),
        "{}",
        status.last_error
    );
    assert!(!stored_tokens(&app).await);
    let _ = Fault::BadSecret;
}

#[tokio::test]
async fn expires_in_sent_as_a_string_is_accepted() {
    let ms = Microsoft::start().await;
    ms.identity.set_access_token_lifetime(4242, true);
    let app = TestApp::builder().microsoft(&ms).start().await;
    let (status, page) = app.connect_mailbox(MAILBOX).await;
    assert_eq!(status, 200, "{page}");
    let expires = app
        .mailbox_status(MAILBOX)
        .await
        .access_token_expires_at
        .unwrap()
        .seconds;
    assert!((expires - (chrono::Utc::now().timestamp() + 4242)).abs() < 10);
}

#[tokio::test]
async fn disconnect_forgets_the_tokens_and_pending_links() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    app.connect_mailbox(MAILBOX).await;
    let pending = app.authorize_redirect(MAILBOX).await;
    app.client()
        .disconnect(proto::DisconnectRequest {
            mailbox: MAILBOX.into(),
        })
        .await
        .unwrap();
    assert!(!stored_tokens(&app).await);
    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(status.state, proto::ConnectionState::NotConnected as i32);
    let (code, _) = browse(&pending).await;
    assert_eq!(code, 400, "a link issued before Disconnect no longer works");
    let send = app
        .client()
        .send_mail(crate::support::simple_message(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(send.code(), Code::FailedPrecondition);
    assert!(
        send.message().contains("call Connect"),
        "{}",
        send.message()
    );
}

#[tokio::test]
async fn a_callback_may_land_on_another_replica() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    let first = TestApp::builder()
        .microsoft(&ms)
        .database(&db.url)
        .start()
        .await;
    let public_url = first.http_base.clone();
    let second = TestApp::builder()
        .microsoft(&ms)
        .database(&db.url)
        .env("PUBLIC_URL", &public_url)
        .start()
        .await;
    let callback = first.authorize_redirect(MAILBOX).await;
    // The load balancer sends the browser to the other replica.
    let on_second = callback.replace(&first.http_base, &second.http_base);
    let (status, page) = browse(&on_second).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        first.mailbox_status(MAILBOX).await.state,
        proto::ConnectionState::Connected as i32
    );
}

#[tokio::test]
async fn sign_in_links_are_capped_per_mailbox_and_their_mailbox_shows_pending() {
    let ms = Microsoft::start().await;
    let app = TestApp::builder().microsoft(&ms).start().await;
    let mut links = Vec::new();
    for _ in 0..4 {
        links.push(app.authorize_redirect(MAILBOX).await);
    }
    // A link makes no mailbox row, yet Status shows the mailbox as pending.
    assert_eq!(
        app.mailbox_status(MAILBOX).await.state,
        proto::ConnectionState::Pending as i32
    );
    // Three links per mailbox: the fourth replaced the first.
    let (first, page) = browse(&links[0]).await;
    assert_eq!(first, 400, "{page}");
    assert!(page.contains("unknown or was already used"), "{page}");
    let (last, page) = browse(&links[3]).await;
    assert_eq!(last, 200, "{page}");
}

#[tokio::test]
async fn the_store_refuses_sign_in_links_beyond_its_total() {
    use graph_mailer::store::{LinkLimits, PendingAuthorization, Stored};
    let app = TestApp::sandbox().await;
    let now = chrono::Utc::now();
    let limits = LinkLimits {
        per_mailbox: 3,
        total: 5,
    };
    let mut outcomes = Vec::new();
    for i in 0..7 {
        let pending = PendingAuthorization {
            state_hash: format!("state-{i}"),
            mailbox: Mailbox::parse("mailbox", &format!("user{i}@contoso.com")).unwrap(),
            pkce_verifier: secrecy::SecretString::from("verifier".to_owned()),
            created_at: now,
            expires_at: now + chrono::Duration::minutes(10),
            requested_by: Some("ops".into()),
        };
        outcomes.push(app.store.insert_pending(&pending, limits).await.unwrap());
    }
    assert_eq!(outcomes[..5], [Stored::Yes; 5]);
    assert_eq!(outcomes[5], Stored::Full { outstanding: 5 });
}
