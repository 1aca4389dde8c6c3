//! The admin page at the HTTP level, where a browser would hide the details: headers,
//! cookies, key sign-in, a sign-in finished in another browser, and the audit log.

use reqwest::{StatusCode, header, redirect::Policy};

use crate::{
    admin_page::{ADMIN, ADMIN_KEY, OWNER, Setup},
    support::binary::{Service, caller_entry},
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` of a `Set-Cookie` header named `name`, and the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v.to_owned()))
}

/// `GET url` with the cookie `name=value`.
async fn get_with(url: impl reqwest::IntoUrl, cookie: impl AsRef<str>) -> reqwest::Response {
    client()
        .get(url)
        .header(header::COOKIE, cookie.as_ref())
        .send()
        .await
        .unwrap()
}

/// `POST url` of a form with the cookie `name=value`.
async fn post_with(
    url: impl reqwest::IntoUrl,
    cookie: impl AsRef<str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(url)
        .header(header::COOKIE, cookie.as_ref())
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A sign-in that was refused with `status`, started no session, and says `says`.
async fn assert_refused(response: reqwest::Response, status: StatusCode, says: &str) {
    assert_eq!(response.status(), status);
    assert!(
        set_cookie(&response, "gm_admin_session").is_none(),
        "a session"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains(says), "{page}");
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with a CSRF token")
        .to_owned()
}

async fn sign_in_with_key(setup: &Setup, key: &str) -> reqwest::Response {
    client()
        .post(setup.url("/admin/sign-in/key"))
        .form(&[("key", key)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_sessions_a_strict_cookie() {
    let setup = Setup::start(&[("ADMIN_KEY_SIGN_IN", "true".into())]).await;
    let sign_in = client()
        .get(setup.url("/admin/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in.status(), StatusCode::OK);
    let headers = sign_in.headers();
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");

    let response = sign_in_with_key(&setup, ADMIN_KEY).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (cookie, whole) = set_cookie(&response, "gm_admin_session").expect("a session cookie");
    assert!(
        whole.contains("HttpOnly") && whole.contains("SameSite=Lax"),
        "{whole}"
    );
    assert!(!whole.contains("Secure"), "plain http here: {whole}");
    let overview = get_with(setup.url("/admin"), &cookie).await;
    assert_eq!(overview.status(), StatusCode::OK);
    assert_eq!(overview.headers()[header::CACHE_CONTROL], "no-store");
    assert!(overview.text().await.unwrap().contains("key operator"));
}

#[tokio::test]
async fn session_cookies_are_secure_when_the_public_url_is_https() {
    let setup = Setup::start(&[
        ("ADMIN_KEY_SIGN_IN", "true".into()),
        ("PUBLIC_URL", "https://mailer.contoso.com".into()),
    ])
    .await;
    let response = sign_in_with_key(&setup, ADMIN_KEY).await;
    let (_, whole) = set_cookie(&response, "gm_admin_session").expect("a session cookie");
    assert!(whole.ends_with("; Secure"), "{whole}");
}

#[tokio::test]
async fn key_sign_in_admits_only_admin_keys_and_only_when_switched_on() {
    let setup = Setup::start(&[]).await;
    let off = sign_in_with_key(&setup, ADMIN_KEY).await;
    assert_eq!(
        off.status(),
        StatusCode::FORBIDDEN,
        "off by default in graph mode"
    );
    assert!(set_cookie(&off, "gm_admin_session").is_none());

    let setup = Setup::start(&[("ADMIN_KEY_SIGN_IN", "true".into())]).await;
    let unknown = sign_in_with_key(&setup, "gm_not-a-key").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&unknown, "gm_admin_session").is_none());
    let audit = std::fs::read_to_string(setup.service.data_dir.join("audit.log")).unwrap();
    assert!(
        audit.contains("\"rpc\":\"admin page sign-in\",\"outcome\":\"unauthenticated\""),
        "{audit}"
    );
    assert!(!audit.contains("gm_not-a-key"), "a key in the audit log");
}

#[tokio::test]
async fn a_sender_key_does_not_open_the_admin_page() {
    let sender_key = "gm_senderkey0000000000000000000000000000000000";
    let callers = caller_entry("billing", sender_key, "sender", &[OWNER], "");
    let setup = Setup::with_callers(&callers, &[("ADMIN_KEY_SIGN_IN", "true".into())]).await;
    let response = sign_in_with_key(&setup, sender_key).await;
    assert_refused(response, StatusCode::FORBIDDEN, "sender").await;
}

/// Starts a Microsoft sign-in: the browser cookie, and the callback URL Microsoft sends back.
async fn start_microsoft_sign_in(setup: &Setup) -> (String, String) {
    setup.ms.identity.sign_in_as(ADMIN);
    let start = client()
        .get(setup.url("/admin/sign-in/microsoft"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let (browser, _) = set_cookie(&start, "gm_admin_sign_in").expect("a sign-in cookie");
    let authorize = start.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let back = client().get(authorize).send().await.unwrap();
    let callback = back.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    (browser, callback)
}

#[tokio::test]
async fn a_sign_in_finished_in_another_browser_or_twice_is_refused() {
    let setup = Setup::start(&[]).await;
    let (_, callback) = start_microsoft_sign_in(&setup).await;
    let elsewhere = client().get(&callback).send().await.unwrap();
    assert_refused(elsewhere, StatusCode::BAD_REQUEST, "another browser").await;

    let (browser, callback) = start_microsoft_sign_in(&setup).await;
    let here = get_with(&callback, &browser).await;
    assert_eq!(
        here.status(),
        StatusCode::SEE_OTHER,
        "the same browser is admitted"
    );
    assert!(set_cookie(&here, "gm_admin_session").is_some());
    let again = get_with(&callback, &browser).await;
    assert!(
        set_cookie(&again, "gm_admin_session").is_none(),
        "a state works once"
    );
    assert_ne!(again.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_id_token_made_for_another_sign_in_is_refused() {
    let setup = Setup::start(&[]).await;
    setup.ms.identity.answer_with_a_foreign_nonce();
    let (browser, callback) = start_microsoft_sign_in(&setup).await;
    let refused = get_with(&callback, &browser).await;
    assert_refused(
        refused,
        StatusCode::BAD_REQUEST,
        "not made for this request",
    )
    .await;
}

#[tokio::test]
async fn a_declined_sign_in_or_a_microsoft_outage_leaves_no_session_and_says_which() {
    use crate::support::fake_identity::Fault;
    let setup = Setup::start(&[]).await;
    setup
        .ms
        .identity
        .fail_code_redemptions(Some(Fault::Unavailable));
    let (browser, callback) = start_microsoft_sign_in(&setup).await;
    let outage = get_with(&callback, &browser).await;
    assert_refused(
        outage,
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign in again in a minute",
    )
    .await;

    setup.ms.identity.fail_code_redemptions(None);
    setup.ms.identity.decline_consent();
    let (browser, callback) = start_microsoft_sign_in(&setup).await;
    let declined = get_with(&callback, &browser).await;
    assert_refused(declined, StatusCode::BAD_REQUEST, "Microsoft reported").await;
}

#[tokio::test]
async fn admin_actions_are_audited_with_the_admins_identity() {
    let setup = Setup::start(&[]).await;
    setup.connect_owner_directly().await;
    let (browser, callback) = start_microsoft_sign_in(&setup).await;
    let signed_in = get_with(&callback, &browser).await;
    let (session, _) = set_cookie(&signed_in, "gm_admin_session").unwrap();
    let page = get_with(setup.url("/admin"), &session)
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let sent = post_with(
        setup.url("/admin/test-mail"),
        &session,
        &[
            ("csrf", csrf.as_str()),
            ("mailbox", OWNER),
            ("to", "alice@example.com"),
        ],
    )
    .await;
    assert_eq!(sent.status(), StatusCode::OK);
    let gone = post_with(
        setup.url("/admin/disconnect"),
        &session,
        &[("csrf", csrf.as_str()), ("mailbox", OWNER)],
    )
    .await;
    assert_eq!(gone.status(), StatusCode::OK);
    let audit = std::fs::read_to_string(setup.service.data_dir.join("audit.log")).unwrap();
    let by_admin = |event: &str| {
        audit.lines().any(|line| {
            line.contains(&format!("\"event\":\"{event}\""))
                && line.contains(&format!("\"caller\":\"admin page: {ADMIN}\""))
        })
    };
    assert!(by_admin("test_mail"), "{audit}");
    assert!(by_admin("disconnect"), "{audit}");
    assert!(
        audit.contains(&format!("\"caller\":\"{ADMIN}\"")),
        "sign-in: {audit}"
    );
}

#[tokio::test]
async fn a_session_ends_when_its_admin_leaves_the_callers_file() {
    let setup = Setup::start(&[("ADMIN_KEY_SIGN_IN", "true".into())]).await;
    let response = sign_in_with_key(&setup, ADMIN_KEY).await;
    let (session, _) = set_cookie(&response, "gm_admin_session").unwrap();
    let overview = |cookie: String| {
        let url = setup.url("/admin");
        async move { get_with(url, cookie).await.status() }
    };
    assert_eq!(overview(session.clone()).await, StatusCode::OK);
    std::fs::write(
        setup.callers_file(),
        caller_entry(
            "someone-else",
            "gm_anotherkey000000000000000000000000000000000",
            "admin",
            &[],
            "",
        ),
    )
    .unwrap();
    setup.service.signal("-HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while overview(session.clone()).await == StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived its admin"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        overview(session).await,
        StatusCode::SEE_OTHER,
        "back to sign-in"
    );
}

#[tokio::test]
async fn the_open_sandbox_lets_anyone_in_and_its_test_mail_becomes_an_eml_file() {
    let service = Service::spawn(&[]);
    service.wait_ready().await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", service.http_port);
    let page = client().get(url("/admin/sign-in")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("runs without callers"));
    let entered = client()
        .post(url("/admin/sign-in/open"))
        .send()
        .await
        .unwrap();
    let (session, _) = set_cookie(&entered, "gm_admin_session").expect("a session");
    let overview = get_with(url("/admin"), &session)
        .await
        .text()
        .await
        .unwrap();
    assert!(overview.contains("sandbox"));
    let csrf = csrf_of(&overview);
    let sent = post_with(
        url("/admin/test-mail"),
        &session,
        &[
            ("csrf", csrf.as_str()),
            ("mailbox", "noreply@example.com"),
            ("to", "dev@example.com"),
        ],
    )
    .await;
    assert_eq!(sent.status(), StatusCode::OK);
    let files: Vec<_> = std::fs::read_dir(service.data_dir.join("sandbox"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1, "one .eml file");
    let bad = post_with(
        url("/admin/test-mail"),
        &session,
        &[
            ("csrf", csrf.as_str()),
            ("mailbox", "noreply@example.com"),
            ("to", "not an address"),
        ],
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("to"), "names the field");
}

#[tokio::test]
async fn an_expired_session_is_no_session() {
    let app = crate::support::TestApp::sandbox().await;
    let store = app.store.clone();
    // Whole milliseconds, as the store keeps times.
    let now =
        chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis()).unwrap();
    let session = graph_mailer::store::AdminSession {
        admin: "ops".into(),
        entry: "{\"by\":\"open\"}".into(),
        expires_at: now + chrono::Duration::minutes(1),
    };
    store
        .insert_admin_session("h", &session, now)
        .await
        .unwrap();
    assert_eq!(
        store.admin_session("h", now).await.unwrap(),
        Some(session.clone())
    );
    let later = now + chrono::Duration::minutes(2);
    assert_eq!(store.admin_session("h", later).await.unwrap(), None);
    assert_eq!(store.purge_expired(later).await.unwrap(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_admin_page_can_be_switched_off() {
    let service = Service::spawn(&[("ADMIN_PAGE", "false".into())]);
    service.wait_ready().await;
    for path in ["/admin", "/admin/sign-in", "/admin/admin.css"] {
        let response = client()
            .get(format!("http://127.0.0.1:{}{path}", service.http_port))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// Two replicas sharing PostgreSQL behind one public URL: a sign-in started on one finishes on
/// the other, and a session (and its end) holds on both.
#[tokio::test]
async fn replicas_share_admin_sign_ins_and_sessions_through_postgres() {
    let Some(db) = crate::support::postgres::TestDatabase::create().await else {
        return;
    };
    let ms = crate::support::Microsoft::start().await;
    let callers = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        callers.path(),
        caller_entry("operator", ADMIN_KEY, "admin", &[], ""),
    )
    .unwrap();
    let public = "http://mailer.test";
    ms.identity
        .register_redirect_uri(&format!("{public}/oauth2/callback"));
    let mut env = ms.env();
    env.extend([
        ("CALLERS_FILE", callers.path().display().to_string()),
        ("ADMINS", ADMIN.to_owned()),
        ("DATABASE_URL", db.url.clone()),
        ("ENCRYPTION_KEY", crate::support::TEST_KEY.to_owned()),
        ("PUBLIC_URL", public.to_owned()),
    ]);
    let (a, b) = (Service::spawn(&env), Service::spawn(&env));
    a.wait_ready().await;
    b.wait_ready().await;
    let on =
        |service: &Service, path: &str| format!("http://127.0.0.1:{}{path}", service.http_port);

    ms.identity.sign_in_as(ADMIN);
    let start = client()
        .get(on(&a, "/admin/sign-in/microsoft"))
        .send()
        .await
        .unwrap();
    let (browser, _) = set_cookie(&start, "gm_admin_sign_in").unwrap();
    let authorize = start.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let back = client().get(authorize).send().await.unwrap();
    let callback = back.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let on_b = callback.replace(public, &on(&b, ""));
    let finished = get_with(on_b, &browser).await;
    assert_eq!(finished.status(), StatusCode::SEE_OTHER);
    let (session, _) = set_cookie(&finished, "gm_admin_session").expect("signed in on b");

    let page = |service: &Service| {
        let (url, session) = (on(service, "/admin"), session.clone());
        async move { get_with(url, session).await }
    };
    let overview = page(&a).await;
    assert_eq!(overview.status(), StatusCode::OK, "the session holds on a");
    let csrf = csrf_of(&overview.text().await.unwrap());
    let signed_out = post_with(
        on(&b, "/admin/sign-out"),
        &session,
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page(&a).await.status(),
        StatusCode::SEE_OTHER,
        "signed out on a too"
    );
}
