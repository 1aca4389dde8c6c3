//! The refresh engine: single flight, rotation, failure classes, upkeep, encryption at rest.

use std::sync::Arc;

use graph_mailer::{clock::ManualClock, domain::Mailbox, oauth::TokenError, proto};
use secrecy::ExposeSecret;

use crate::support::{
    MAILBOX, Microsoft, TestApp, connected_app, fake_identity::Fault, postgres::TestDatabase,
};

fn mailbox() -> Mailbox {
    Mailbox::parse("mailbox", MAILBOX).unwrap()
}

async fn clocked_app(ms: &Microsoft) -> (TestApp, Arc<ManualClock>) {
    let clock = ManualClock::starting_now();
    let app = connected_app(ms, TestApp::builder().clock(clock.clone())).await;
    (app, clock)
}

#[tokio::test]
async fn a_fresh_token_is_served_without_asking_microsoft() {
    let ms = Microsoft::start().await;
    let (app, _) = clocked_app(&ms).await;
    let tokens = app.token_manager();
    tokens.access_token(&mailbox()).await.unwrap();
    assert_eq!(ms.identity.token_requests("refresh_token"), 0);
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_exactly_once_for_a_thousand_concurrent_callers() {
    let ms = Microsoft::start().await;
    let (app, clock) = clocked_app(&ms).await;
    ms.identity
        .set_refresh_latency(std::time::Duration::from_millis(200));
    // 3900 s lifetime; 61 minutes later less than the 5-minute margin is left.
    clock.advance(chrono::Duration::minutes(61));
    let tokens = app.token_manager();
    let mut calls = Vec::new();
    for _ in 0..1000 {
        let tokens = tokens.clone();
        calls.push(tokio::spawn(async move {
            tokens.access_token(&mailbox()).await
        }));
    }
    let mut secrets = std::collections::HashSet::new();
    for call in calls {
        let token = call.await.unwrap().unwrap();
        secrets.insert(token.secret.expose_secret().to_owned());
    }
    assert_eq!(ms.identity.token_requests("refresh_token"), 1);
    assert_eq!(secrets.len(), 1, "everyone got the one new token");
    assert!(
        ms.identity
            .tokens
            .lookup(secrets.iter().next().unwrap())
            .is_some()
    );
}

async fn the_rotated_refresh_token_is_stored_and_survives_a_restart(database: Option<String>) {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let data = tempfile::tempdir().unwrap();
    let builder = |clock: Arc<ManualClock>| {
        let b = TestApp::builder().clock(clock).data_dir(data.path());
        match &database {
            Some(url) => b.database(url),
            None => b,
        }
    };
    let app = connected_app(&ms, builder(clock.clone())).await;
    clock.advance(chrono::Duration::minutes(61));
    app.token_manager().access_token(&mailbox()).await.unwrap();
    assert_eq!(ms.identity.successful_refreshes(), 1);
    app.stop().await.unwrap();

    // The fake revoked the first refresh token when it was used: only the rotated one works.
    let restarted = builder(clock.clone()).microsoft(&ms).start().await;
    clock.advance(chrono::Duration::minutes(61));
    restarted
        .token_manager()
        .access_token(&mailbox())
        .await
        .unwrap();
    assert_eq!(ms.identity.successful_refreshes(), 2);
    let status = restarted.mailbox_status(MAILBOX).await;
    assert_eq!(status.state, proto::ConnectionState::Connected as i32);
    assert_eq!(status.last_error, "");
}

#[tokio::test]
async fn the_rotated_refresh_token_is_stored_and_survives_a_restart_on_sqlite() {
    the_rotated_refresh_token_is_stored_and_survives_a_restart(None).await;
}

#[tokio::test]
async fn the_rotated_refresh_token_is_stored_and_survives_a_restart_on_postgres() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    the_rotated_refresh_token_is_stored_and_survives_a_restart(Some(db.url.clone())).await;
}

#[tokio::test]
async fn each_dead_grant_requires_reauthorization_with_its_code_in_last_error() {
    let cases = [
        (
            Fault::ExpiredGrant,
            "AADSTS70008: the refresh token expired after 90 days without use — call Connect again for noreply@contoso.com",
        ),
        (Fault::RevokedGrant, "AADSTS50173"),
        (Fault::MfaRequired, "AADSTS50076"),
        (Fault::ConsentRequired, "AADSTS65001"),
    ];
    for (fault, expected) in cases {
        let ms = Microsoft::start().await;
        let (app, clock) = clocked_app(&ms).await;
        ms.identity.fail_refreshes(Some(fault));
        clock.advance(chrono::Duration::minutes(61));
        let error = app
            .token_manager()
            .access_token(&mailbox())
            .await
            .unwrap_err();
        assert!(
            matches!(error, TokenError::ReauthorizationRequired { .. }),
            "{fault:?}: {error}"
        );
        let status = app.mailbox_status(MAILBOX).await;
        assert_eq!(
            status.state,
            proto::ConnectionState::ReauthorizationRequired as i32,
            "{fault:?}"
        );
        assert!(
            status.last_error.starts_with(expected),
            "{fault:?}: {}",
            status.last_error
        );
        assert!(
            status.last_error.contains("call Connect again"),
            "{}",
            status.last_error
        );
        // Sends now fail with what to do, and Microsoft is not asked again.
        let send = app
            .client()
            .send_mail(crate::support::simple_message(MAILBOX))
            .await
            .unwrap_err();
        assert_eq!(send.code(), tonic::Code::FailedPrecondition);
        assert!(
            send.message().contains("reauthorized"),
            "{}",
            send.message()
        );
        assert_eq!(ms.identity.token_requests("refresh_token"), 1, "{fault:?}");
        // A new sign-in brings it back.
        ms.identity.fail_refreshes(None);
        let (code, page) = app.connect_mailbox(MAILBOX).await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(
            app.mailbox_status(MAILBOX).await.state,
            proto::ConnectionState::Connected as i32
        );
    }
}

#[tokio::test]
async fn a_rejected_client_secret_is_a_configuration_error_and_keeps_the_connection() {
    let ms = Microsoft::start().await;
    let (app, clock) = clocked_app(&ms).await;
    ms.identity.fail_refreshes(Some(Fault::ExpiredSecret));
    clock.advance(chrono::Duration::minutes(61));
    let error = app
        .token_manager()
        .access_token(&mailbox())
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::Configuration { .. }), "{error}");
    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(status.state, proto::ConnectionState::Connected as i32);
    assert!(
        status.last_error.starts_with("AADSTS7000222"),
        "{}",
        status.last_error
    );
    assert!(
        status.last_error.contains("rotate") || status.last_error.contains("create a new one"),
        "{}",
        status.last_error
    );
    assert_eq!(
        ms.identity.token_requests("refresh_token"),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn an_outage_is_retried_and_the_old_token_served_while_it_is_still_valid() {
    let ms = Microsoft::start().await;
    let (app, clock) = clocked_app(&ms).await;
    let tokens = app.token_manager();
    let original = tokens.access_token(&mailbox()).await.unwrap();

    // Two 503s, then success: one refresh, three requests.
    ms.identity.fail_next_refreshes(2, Fault::Unavailable);
    clock.advance(chrono::Duration::minutes(61));
    let refreshed = tokens.access_token(&mailbox()).await.unwrap();
    assert_ne!(
        refreshed.secret.expose_secret(),
        original.secret.expose_secret()
    );
    assert_eq!(ms.identity.token_requests("refresh_token"), 3);

    // A lasting outage: 2 minutes of validity left, so the old token is still served.
    ms.identity.fail_refreshes(Some(Fault::Unavailable));
    clock.advance(chrono::Duration::minutes(63));
    let served = tokens.access_token(&mailbox()).await.unwrap();
    assert_eq!(
        served.secret.expose_secret(),
        refreshed.secret.expose_secret()
    );
    let status = app.mailbox_status(MAILBOX).await;
    assert_eq!(status.state, proto::ConnectionState::Connected as i32);
    assert!(
        status.last_error.contains("temporarily unavailable"),
        "{}",
        status.last_error
    );

    // Once it has expired there is nothing to serve: UNAVAILABLE, not reauthorization.
    clock.advance(chrono::Duration::minutes(5));
    let error = tokens.access_token(&mailbox()).await.unwrap_err();
    assert!(matches!(error, TokenError::Unavailable { .. }), "{error}");

    // When Microsoft is back, the next refresh clears the error.
    ms.identity.fail_refreshes(None);
    tokens.access_token(&mailbox()).await.unwrap();
    assert_eq!(app.mailbox_status(MAILBOX).await.last_error, "");
}

#[tokio::test]
async fn upkeep_refreshes_tokens_ahead_of_expiry_and_idle_connections() {
    let ms = Microsoft::start().await;
    let (app, clock) = clocked_app(&ms).await;
    let tokens = app.token_manager();
    assert_eq!(tokens.upkeep().await.refreshed, 0, "nothing due yet");
    // 3900 s lifetime, 15-minute look-ahead: due after 50 minutes.
    clock.advance(chrono::Duration::minutes(51));
    assert_eq!(tokens.upkeep().await.refreshed, 1);
    assert_eq!(tokens.upkeep().await.refreshed, 0, "fresh again");

    // Long-lived tokens still get refreshed after 7 idle days, before the 90-day expiry.
    ms.identity.set_access_token_lifetime(30 * 24 * 3600, false);
    clock.advance(chrono::Duration::minutes(51));
    assert_eq!(tokens.upkeep().await.refreshed, 1);
    clock.advance(chrono::Duration::days(6));
    assert_eq!(tokens.upkeep().await.refreshed, 0);
    clock.advance(chrono::Duration::days(2));
    assert_eq!(
        tokens.upkeep().await.refreshed,
        1,
        "idle for more than 7 days"
    );
}

#[tokio::test]
async fn two_instances_on_one_postgres_database_refresh_once_between_them() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    ms.identity
        .set_refresh_latency(std::time::Duration::from_millis(300));
    let clock = ManualClock::starting_now();
    let first = connected_app(
        &ms,
        TestApp::builder().clock(clock.clone()).database(&db.url),
    )
    .await;
    let second = TestApp::builder()
        .microsoft(&ms)
        .clock(clock.clone())
        .database(&db.url)
        .start()
        .await;
    clock.advance(chrono::Duration::minutes(61));
    let mut calls = Vec::new();
    for i in 0..100 {
        let replica = if i % 2 == 0 { &first } else { &second };
        let tokens = replica.token_manager();
        calls.push(tokio::spawn(async move {
            tokens.access_token(&mailbox()).await
        }));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(ms.identity.token_requests("refresh_token"), 1);
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn tokens_are_not_readable_in_the_sqlite_file() {
    let ms = Microsoft::start().await;
    let clock = ManualClock::starting_now();
    let data = tempfile::tempdir().unwrap();
    let app = connected_app(
        &ms,
        TestApp::builder()
            .clock(clock.clone())
            .data_dir(data.path()),
    )
    .await;
    clock.advance(chrono::Duration::minutes(61));
    app.token_manager().access_token(&mailbox()).await.unwrap();
    let data_dir = app.data_dir.clone();
    app.stop().await.unwrap();
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&data_dir).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("graph-mailer.db")
        {
            stored.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    assert!(!stored.is_empty());
    let secrets: Vec<String> = ms
        .identity
        .issued_refresh_tokens()
        .into_iter()
        .chain(ms.identity.issued_access_tokens())
        .collect();
    assert!(secrets.len() >= 4);
    for secret in secrets {
        assert!(
            !contains(&stored, &secret),
            "{secret} is readable in the database file"
        );
        // Not even its distinctive middle part.
        assert!(!contains(&stored, &secret[3..20]));
    }
}

#[tokio::test]
async fn tokens_are_not_readable_in_a_postgres_dump() {
    use sqlx::Row;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let ms = Microsoft::start().await;
    let app = connected_app(&ms, TestApp::builder().database(&db.url)).await;
    let mut connection = db.connect().await;
    let mut dump = String::new();
    for table in ["mailboxes", "pending_authorizations"] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t"
        )))
        .fetch_all(&mut connection)
        .await
        .unwrap();
        for row in rows {
            dump.push_str(&row.get::<String, _>(0));
        }
    }
    // pg_dump, when the machine has it (its PostgreSQL client), sees what an attacker with a
    // backup would see.
    if let Ok(output) = std::process::Command::new("pg_dump")
        .args(["--data-only", "--table=mailboxes", &db.url])
        .output()
        && output.status.success()
    {
        dump.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    assert!(
        dump.contains("noreply@contoso.com"),
        "the dump has the rows"
    );
    for secret in ms
        .identity
        .issued_refresh_tokens()
        .into_iter()
        .chain(ms.identity.issued_access_tokens())
    {
        assert!(!dump.contains(&secret), "{secret} readable in the dump");
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!dump.contains(&hex), "{secret} readable as bytea hex");
    }
    drop(app);
}

#[tokio::test]
async fn a_different_encryption_key_is_a_clear_start_up_error() {
    let data = tempfile::tempdir().unwrap();
    let first = TestApp::builder().data_dir(data.path()).start().await;
    first.stop().await.unwrap();
    let error = TestApp::builder()
        .data_dir(data.path())
        .env("ENCRYPTION_KEY", crate::support::TEST_KEY)
        .try_start()
        .await
        .err()
        .expect("a different key must not start");
    let message = format!("{error:#}");
    assert!(message.contains("different encryption key"), "{message}");
}
