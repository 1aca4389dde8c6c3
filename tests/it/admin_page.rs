//! The admin page in a real browser (headless Chromium over WebDriver) against the real binary
//! and the fakes of Microsoft: an administrator signs in with Microsoft (and a stranger is
//! refused), connects a mailbox as its owner and sees it turn CONNECTED without a reload, sends
//! a test mail that the fake Graph receives, disconnects after a confirmation, sees the client
//! secret's expiry warning, cannot be made to post without the CSRF token, and can use the page
//! at a phone's width. Each test saves screenshots under `target/browser-screenshots/`.

use std::time::Duration;

use graph_mailer::proto;

use crate::support::{
    Microsoft,
    binary::{KeyedClient, Service, caller_entry, connect_as_owner, keyed},
    browser::Browser,
};

pub(crate) const OWNER: &str = "noreply@contoso.com";
pub(crate) const ADMIN: &str = "ops@contoso.com";
pub(crate) const ADMIN_KEY: &str = "gm_adminpagekey000000000000000000000000000000";

/// The service in graph mode against the fakes, with a callers file (so the page is closed)
/// and `ADMIN` and `OWNER` as administrators.
pub(crate) struct Setup {
    pub ms: Microsoft,
    pub service: Service,
    _callers: tempfile::NamedTempFile,
}

impl Setup {
    pub(crate) async fn start(extra: &[(&str, String)]) -> Self {
        Self::with_callers(
            &caller_entry("operator", ADMIN_KEY, "admin", &[], ""),
            extra,
        )
        .await
    }

    /// The same with this callers file.
    pub(crate) async fn with_callers(entries: &str, extra: &[(&str, String)]) -> Self {
        let ms = Microsoft::start().await;
        let callers = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(callers.path(), entries).unwrap();
        let mut env = vec![
            ("CALLERS_FILE", callers.path().display().to_string()),
            ("ADMINS", format!("{ADMIN}, {OWNER}")),
        ];
        env.extend(extra.iter().cloned());
        let service = ms.service(None, &env).await;
        Self {
            ms,
            service,
            _callers: callers,
        }
    }

    pub(crate) fn callers_file(&self) -> &std::path::Path {
        self._callers.path()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.service.http_port)
    }

    pub(crate) async fn operator(&self) -> KeyedClient {
        keyed(self.service.channel().await, ADMIN_KEY)
    }

    pub(crate) async fn mailbox_state(&self, mailbox: &str) -> proto::ConnectionState {
        let status = self
            .operator()
            .await
            .status(proto::StatusRequest {
                mailbox: mailbox.into(),
            })
            .await
            .unwrap()
            .into_inner();
        proto::ConnectionState::try_from(status.mailboxes[0].state).unwrap()
    }

    /// Connects `OWNER` the way an operator's script would: Connect, then the owner's browser.
    pub(crate) async fn connect_owner_directly(&self) {
        connect_as_owner(&mut self.operator().await, OWNER).await;
    }

    /// Opens the admin page in `browser` and signs in with Microsoft as `account`.
    pub(crate) async fn sign_in(&self, browser: &Browser, account: &str) {
        self.ms.identity.sign_in_as(account);
        browser.goto(&self.url("/admin")).await;
        assert_eq!(browser.path().await, "/admin/sign-in");
        browser.click("#sign-in-microsoft").await;
        browser.wait_for_text("Overview").await;
        assert_eq!(browser.path().await, "/admin");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_signs_in_with_microsoft_and_an_unlisted_account_is_refused() {
    let setup = Setup::start(&[]).await;
    let browser = Browser::start().await;
    setup.sign_in(&browser, ADMIN).await;
    browser.wait_for_text(ADMIN).await;
    browser.wait_for_text("PASS").await;
    browser.screenshot("admin-signed-in").await;
    let sign_in = &setup.ms.identity.authorize_requests()[0];
    assert_eq!(sign_in["scope"], "openid profile", "only OpenID scopes");
    assert_eq!(sign_in["code_challenge_method"], "S256");
    assert!(sign_in.contains_key("nonce"));

    browser.click("button.link").await; // Sign out
    browser.wait_for_text("Sign in with Microsoft").await;
    browser.goto(&setup.url("/admin")).await;
    assert_eq!(browser.path().await, "/admin/sign-in", "signed out");

    setup.ms.identity.sign_in_as("stranger@contoso.com");
    browser.click("#sign-in-microsoft").await;
    browser
        .wait_for_text("stranger@contoso.com is not an administrator")
        .await;
    browser.screenshot("admin-stranger-refused").await;
    browser.goto(&setup.url("/admin")).await;
    assert_eq!(browser.path().await, "/admin/sign-in", "no session");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_connects_a_mailbox_and_sees_it_connected_without_a_reload() {
    let setup = Setup::start(&[]).await;
    let browser = Browser::start().await;
    setup.sign_in(&browser, OWNER).await;
    browser.fill("#connect-mailbox", OWNER).await;
    browser.click("form.row button[type=submit]").await;
    browser.wait_for_text("Sign-in link").await;
    let link = browser
        .find("#link")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(link.starts_with(&setup.ms.identity.base_url), "{link}");
    assert_eq!(
        browser.find("#state").await.text().await.unwrap(),
        "waiting for the sign-in"
    );
    let copy = browser.find("button[data-copy]").await;
    assert!(
        copy.is_displayed().await.unwrap(),
        "the script offers a copy button"
    );
    browser.screenshot("admin-connect-link").await;

    let page = browser.client.window().await.unwrap();
    browser.click("#sign-in-now").await; // opens Microsoft in a new tab
    let state = browser.find("#state").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state.text().await.unwrap() != "CONNECTED" {
        assert!(
            std::time::Instant::now() < deadline,
            "never turned CONNECTED"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(browser.client.window().await.unwrap(), page);
    assert_eq!(
        browser.path().await,
        "/admin/connect",
        "no reload, no navigation"
    );
    browser.screenshot("admin-connected").await;
    assert_eq!(
        setup.mailbox_state(OWNER).await,
        proto::ConnectionState::Connected
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_mail_from_the_page_is_delivered_through_graph() {
    let expires = chrono::Utc::now() + chrono::Duration::days(200);
    let setup = Setup::start(&[("CLIENT_SECRET_EXPIRES_AT", expires.to_rfc3339())]).await;
    setup.connect_owner_directly().await;
    let browser = Browser::start().await;
    setup.sign_in(&browser, ADMIN).await;
    browser.wait_for_text("CONNECTED").await;
    browser.fill("#test-to-1", "alice@example.com").await;
    browser
        .click("#mailbox-1 form.row button[type=submit]")
        .await;
    browser.wait_for_text("Test mail sent").await;
    browser.screenshot("admin-test-mail-sent").await;
    let delivered = setup.ms.graph.delivered();
    assert_eq!(delivered.len(), 1, "one message reached Graph");
    assert_eq!(delivered[0].account, OWNER);
    assert!(
        delivered[0]
            .to
            .iter()
            .any(|(to, _)| to == "alice@example.com")
    );
    assert!(delivered[0].subject.starts_with("graph-mailer test"));
    // The whole overview, as the README shows it.
    browser.client.set_window_size(1000, 1100).await.unwrap();
    browser.goto(&setup.url("/admin")).await;
    browser.wait_for_text("Sent / failed").await;
    browser.screenshot("admin-overview").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnect_asks_for_confirmation_then_forgets_the_mailbox() {
    let setup = Setup::start(&[]).await;
    setup.connect_owner_directly().await;
    let browser = Browser::start().await;
    setup.sign_in(&browser, ADMIN).await;
    browser.click("#mailbox-1 a.danger").await;
    browser.wait_for_text(&format!("Disconnect {OWNER}?")).await;
    browser.screenshot("admin-disconnect-confirmation").await;
    assert_eq!(
        setup.mailbox_state(OWNER).await,
        proto::ConnectionState::Connected,
        "asking changes nothing"
    );
    browser.click("#confirm-disconnect").await;
    browser
        .wait_for_text(&format!("Disconnected {OWNER}"))
        .await;
    browser.screenshot("admin-disconnected").await;
    assert_eq!(
        setup.mailbox_state(OWNER).await,
        proto::ConnectionState::NotConnected
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_warns_when_the_client_secret_expires_in_ten_days() {
    let expires = chrono::Utc::now() + chrono::Duration::days(10);
    let setup = Setup::start(&[("CLIENT_SECRET_EXPIRES_AT", expires.to_rfc3339())]).await;
    let browser = Browser::start().await;
    setup.sign_in(&browser, ADMIN).await;
    let expiry = browser.find("#secret-expiry").await.text().await.unwrap();
    assert!(expiry.contains("10 days left"), "{expiry}");
    let steps = browser.find("#rotate-secret").await.text().await.unwrap();
    assert!(steps.contains("New client secret"), "{steps}");
    browser.screenshot("admin-secret-expiry-warning").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let setup = Setup::start(&[]).await;
    setup.connect_owner_directly().await;
    let browser = Browser::start().await;
    setup.sign_in(&browser, ADMIN).await;
    // From the signed-in page itself, so the session cookie goes along.
    for body in [
        format!("mailbox={OWNER}"),
        format!("mailbox={OWNER}&csrf=0000"),
    ] {
        let status = browser
            .run(&format!(
                "const r = await fetch('/admin/disconnect', {{ method: 'POST', \
                 headers: {{ 'content-type': 'application/x-www-form-urlencoded' }}, \
                 body: '{body}' }}); return r.status;"
            ))
            .await;
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(
        setup.mailbox_state(OWNER).await,
        proto::ConnectionState::Connected
    );
    browser
        .run(
            "const f = document.createElement('form'); f.method = 'post'; \
             f.action = '/admin/disconnect'; f.innerHTML = \
             '<input name=mailbox value=noreply@contoso.com>'; document.body.append(f); \
             f.submit(); return true;",
        )
        .await;
    browser
        .wait_for_text("did not come from this admin page")
        .await;
    browser.screenshot("admin-csrf-refused").await;
    assert_eq!(
        setup.mailbox_state(OWNER).await,
        proto::ConnectionState::Connected
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_usable_at_a_phone_width() {
    let setup = Setup::start(&[]).await;
    setup.connect_owner_directly().await;
    let browser = Browser::start().await;
    browser.client.set_window_size(390, 844).await.unwrap();
    setup.sign_in(&browser, ADMIN).await;
    let width = browser.run("return window.innerWidth;").await;
    assert!(width.as_u64().unwrap() <= 400, "phone width: {width}");
    let overflow = browser
        .run("return document.documentElement.scrollWidth - window.innerWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page scrolls sideways by {overflow}px"
    );
    // Every button is within the screen's width and large enough to tap.
    let misplaced = browser
        .run(
            "return [...document.querySelectorAll('button, .button, input')]
               .filter(e => e.offsetParent !== null && e.type !== 'hidden')
               .map(e => e.getBoundingClientRect())
               .filter(r => r.right > window.innerWidth || r.height < 24).length;",
        )
        .await;
    assert_eq!(misplaced, 0, "controls off screen or too small to tap");
    let unlabelled = browser
        .run(
            "return [...document.querySelectorAll('input, select')]
               .filter(e => e.type !== 'hidden' && e.labels.length === 0
                            && !e.getAttribute('aria-label')).length;",
        )
        .await;
    assert_eq!(unlabelled, 0, "every field has a label");
    browser.screenshot("admin-phone").await;
    browser.fill("#test-to-1", "alice@example.com").await;
    browser
        .click("#mailbox-1 form.row button[type=submit]")
        .await;
    browser.wait_for_text("Test mail sent").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_lists_filters_and_cancels_queued_messages_and_batches() {
    let setup = Setup::start(&[]).await;
    setup.connect_owner_directly().await;
    let mut operator = setup.operator().await;
    let later = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    let single = operator
        .queue_mail(proto::QueueMailRequest {
            message: Some(crate::support::simple_message(OWNER)),
            send_at: Some(later),
        })
        .await
        .unwrap()
        .into_inner()
        .message_id;
    let mut template = crate::support::simple_message(OWNER);
    template.to.clear();
    let batch = operator
        .send_bulk(proto::SendBulkRequest {
            template: Some(template),
            recipients: ["ann@example.com", "bea@example.com"]
                .map(|to| proto::BulkRecipient {
                    to: Some(crate::support::address(to, "")),
                    variables: Default::default(),
                })
                .to_vec(),
            idempotency_key: "newsletter-1".into(),
            send_at: Some(later),
        })
        .await
        .unwrap()
        .into_inner()
        .batch_id;

    let browser = Browser::start().await;
    setup.sign_in(&browser, ADMIN).await;
    browser.click("nav a[href='/admin/outbox']").await;
    browser.wait_for_text(&single).await;
    let rows = browser.run("return document.querySelectorAll('table.messages tbody tr').length;");
    assert_eq!(rows.await, 3);
    browser.fill("#filter-mailbox", OWNER).await;
    browser
        .run("document.getElementById('filter-state').value = 'QUEUED'; return true;")
        .await;
    browser.click("form[aria-label=Filter] button").await;
    browser.wait_for_text("Cancel").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .query()
            .unwrap()
            .contains("state=QUEUED")
    );
    browser.screenshot("admin-outbox").await;

    // Cancel the single message from its row.
    browser
        .click(&format!("input[value='{single}'] + button"))
        .await;
    browser.find("td .badge.cancelled").await;
    let state = |id: String| {
        let mut operator = operator.clone();
        async move {
            operator
                .get_message(proto::GetMessageRequest { message_id: id })
                .await
                .unwrap()
                .into_inner()
                .state
        }
    };
    assert_eq!(
        state(single.clone()).await,
        proto::MessageState::Cancelled as i32
    );

    // Then the batch, from its filtered list.
    browser
        .goto(&setup.url(&format!("/admin/outbox?batch={batch}")))
        .await;
    browser.click("button.danger").await;
    browser.find("td .badge.cancelled").await;
    let status = operator
        .get_batch(proto::GetBatchRequest { batch_id: batch })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.cancelled, status.queued), (2, 0));
    browser.screenshot("admin-outbox-cancelled").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_action_works_with_javascript_switched_off() {
    let setup = Setup::start(&[]).await;
    let browser = Browser::without_javascript().await;
    setup.sign_in(&browser, OWNER).await;
    browser.fill("#connect-mailbox", OWNER).await;
    browser.click("form.row button[type=submit]").await;
    browser.wait_for_text("Sign-in link").await;
    let copy = browser.find("button[data-copy]").await;
    assert!(
        !copy.is_displayed().await.unwrap(),
        "no copy button without a script"
    );
    let link = browser
        .find("#link")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    browser.goto(&link).await;
    browser.wait_for_text(&format!("Connected {OWNER}")).await;
    browser.goto(&setup.url("/admin")).await;
    browser.find("#mailbox-1 .badge.pass").await;
    browser.fill("#test-to-1", "alice@example.com").await;
    browser
        .click("#mailbox-1 form.row button[type=submit]")
        .await;
    browser.wait_for_text("Test mail sent").await;
    assert_eq!(setup.ms.graph.delivered().len(), 1);
    browser.goto(&setup.url("/admin")).await;
    browser.click("#mailbox-1 a.danger").await;
    browser.click("#confirm-disconnect").await;
    browser
        .wait_for_text(&format!("Disconnected {OWNER}"))
        .await;
    browser.screenshot("admin-without-javascript").await;
    assert_eq!(
        setup.mailbox_state(OWNER).await,
        proto::ConnectionState::NotConnected
    );
    browser.close().await;
}
