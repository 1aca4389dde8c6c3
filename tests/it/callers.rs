//! Callers and their rights, through the real binary: keys, roles, mailbox lists, rates, the
//! callers file's reloads, the refusal to run Graph mode open, and the audit log.

use std::{path::PathBuf, time::Duration};

use graph_mailer::proto;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{
    MAILBOX, Microsoft,
    binary::{KeyedClient, Service, caller_entry, connect_as_owner},
    simple_message,
};

const ADMIN_KEY: &str = "gm_test-admin-key-0000000000000000000000000";
const SENDER_KEY: &str = "gm_test-billing-key-000000000000000000000000";
const OTHER_MAILBOX: &str = "other@contoso.com";

/// A Graph service on the fakes with a callers file: `ops` (admin) and `billing` (a sender of
/// MAILBOX), plus `extra` entries.
struct Setup {
    ms: Microsoft,
    service: Service,
    callers_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(extra_callers: &str, env: &[(&str, String)]) -> Self {
        let ms = Microsoft::start().await;
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let callers_file = dir.join("callers.toml");
        std::fs::write(&callers_file, callers(extra_callers)).unwrap();
        let mut all = vec![
            ("CALLERS_FILE", callers_file.display().to_string()),
            ("SECRET_RELOAD_SECONDS", "1".to_owned()),
        ];
        all.extend(env.iter().cloned());
        let service = ms.service(Some(&dir), &all).await;
        Self {
            ms,
            service,
            callers_file,
            _dir: temp,
        }
    }

    async fn admin(&self) -> KeyedClient {
        self.service.client_with_key(ADMIN_KEY).await
    }

    async fn sender(&self) -> KeyedClient {
        self.service.client_with_key(SENDER_KEY).await
    }

    /// Connects `mailbox` as the admin and plays its owner's browser.
    async fn connect(&self, mailbox: &str) {
        connect_as_owner(&mut self.admin().await, mailbox).await;
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.service.data_dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn callers(extra: &str) -> String {
    format!(
        "{}{}{extra}",
        caller_entry("ops", ADMIN_KEY, "admin", &[], ""),
        caller_entry("billing", SENDER_KEY, "sender", &[MAILBOX], "")
    )
}

fn send_as(mailbox: &str) -> proto::SendMailRequest {
    simple_message(mailbox)
}

#[tokio::test]
async fn calls_without_a_key_or_with_an_unknown_key_are_unauthenticated_but_health_answers() {
    let setup = Setup::start("", &[]).await;
    let status = setup
        .service
        .client()
        .await
        .send_mail(send_as(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("authorization: Bearer"),
        "{}",
        status.message()
    );
    let status = setup
        .service
        .client_with_key("gm_not-a-key-anyone-was-given")
        .await
        .status(proto::StatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(setup.service.channel().await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "graphmailer.v1.Mailer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1, "probes carry no keys and are answered");
    assert_eq!(setup.ms.graph.accepted(), 0);
}

#[tokio::test]
async fn a_sender_sends_only_as_its_mailboxes_and_sees_only_their_status() {
    let setup = Setup::start("", &[]).await;
    setup.connect(MAILBOX).await;
    setup.connect(OTHER_MAILBOX).await;
    let mut sender = setup.sender().await;

    sender.send_mail(send_as(MAILBOX)).await.unwrap();
    let unnamed = proto::SendMailRequest {
        mailbox: String::new(),
        ..send_as(MAILBOX)
    };
    sender.send_mail(unnamed).await.unwrap();
    let refused = sender.send_mail(send_as(OTHER_MAILBOX)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("caller billing may not send as other@contoso.com"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("noreply@contoso.com"),
        "{}",
        refused.message()
    );
    let delivered = setup.ms.graph.delivered();
    assert_eq!(delivered.len(), 2);
    assert!(delivered.iter().all(|d| d.account == MAILBOX));

    let all = sender
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<&str> = all.mailboxes.iter().map(|m| m.mailbox.as_str()).collect();
    assert_eq!(shown, [MAILBOX]);
    let hidden = sender
        .status(proto::StatusRequest {
            mailbox: OTHER_MAILBOX.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::PermissionDenied);
    let admin_view = setup
        .admin()
        .await
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(admin_view.mailboxes.len(), 2);
}

#[tokio::test]
async fn connect_and_disconnect_are_for_admins() {
    let setup = Setup::start("", &[]).await;
    setup.connect(MAILBOX).await;
    let mut sender = setup.sender().await;
    let connect = sender
        .connect(proto::ConnectRequest {
            mailbox: MAILBOX.into(),
            force_consent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(connect.code(), Code::PermissionDenied);
    assert!(
        connect
            .message()
            .contains("caller billing may not call Connect"),
        "{}",
        connect.message()
    );
    assert!(connect.message().contains("admin"), "{}", connect.message());
    let disconnect = sender
        .disconnect(proto::DisconnectRequest {
            mailbox: MAILBOX.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(disconnect.code(), Code::PermissionDenied);
    sender
        .send_mail(send_as(MAILBOX))
        .await
        .expect("still connected");
    setup
        .admin()
        .await
        .disconnect(proto::DisconnectRequest {
            mailbox: MAILBOX.into(),
        })
        .await
        .unwrap();
    let gone = sender.send_mail(send_as(MAILBOX)).await.unwrap_err();
    assert_eq!(gone.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn allowed_mailboxes_refuse_a_connect_even_for_an_admin() {
    let setup = Setup::start("", &[("ALLOWED_MAILBOXES", "*@billing.contoso.com".into())]).await;
    let refused = setup
        .admin()
        .await
        .connect(proto::ConnectRequest {
            mailbox: "ceo@contoso.com".into(),
            force_consent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("GRAPH_MAILER_ALLOWED_MAILBOXES"),
        "{}",
        refused.message()
    );
    assert!(setup.ms.identity.authorize_requests().is_empty());
    setup
        .admin()
        .await
        .connect(proto::ConnectRequest {
            mailbox: "invoices@billing.contoso.com".into(),
            force_consent: false,
        })
        .await
        .expect("a listed domain may be connected");
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_resource_exhausted_with_the_wait() {
    let limited = caller_entry(
        "reports",
        "gm_test-reports-key-00000000000000000000000",
        "sender",
        &[MAILBOX],
        "max_per_minute = 3",
    );
    let setup = Setup::start(&limited, &[]).await;
    setup.connect(MAILBOX).await;
    let mut reports = setup
        .service
        .client_with_key("gm_test-reports-key-00000000000000000000000")
        .await;
    for _ in 0..3 {
        reports.send_mail(send_as(MAILBOX)).await.unwrap();
    }
    let over = reports.send_mail(send_as(MAILBOX)).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    assert!(
        over.message().contains("caller reports"),
        "{}",
        over.message()
    );
    let wait = over.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(
        wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    assert_eq!(setup.ms.graph.accepted(), 3);
    setup
        .sender()
        .await
        .send_mail(send_as(MAILBOX))
        .await
        .expect("other callers keep their own allowance");
}

#[tokio::test]
async fn a_callers_file_change_takes_effect_without_a_restart_and_a_broken_one_is_ignored() {
    let setup = Setup::start("", &[]).await;
    setup.connect(MAILBOX).await;
    const NEW_KEY: &str = "gm_test-rotated-billing-key-00000000000000";

    std::fs::write(&setup.callers_file, "[[caller]]\nname = \"broken").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    setup
        .sender()
        .await
        .send_mail(send_as(MAILBOX))
        .await
        .expect("a broken file leaves the previous callers in force");

    std::fs::write(
        &setup.callers_file,
        format!(
            "{}{}",
            caller_entry("ops", ADMIN_KEY, "admin", &[], ""),
            caller_entry("billing", NEW_KEY, "sender", &[MAILBOX], "")
        ),
    )
    .unwrap();
    setup.service.signal("-HUP");
    let mut rotated = setup.service.client_with_key(NEW_KEY).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rotated.send_mail(send_as(MAILBOX)).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key never worked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = setup
        .sender()
        .await
        .send_mail(send_as(MAILBOX))
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);

    let reloads: Vec<String> = setup
        .audit_lines()
        .iter()
        .filter(|l| l["event"] == "callers_reload")
        .map(|l| l["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reloads, ["kept_previous", "loaded"]);
}

#[tokio::test]
async fn graph_mode_refuses_to_start_without_callers_unless_told_to_run_open() {
    let ms = Microsoft::start().await;
    let service = Service::spawn(&ms.env());
    let (code, output) = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("GRAPH_MAILER_CALLERS_FILE is not set"),
        "{output}"
    );
    assert!(output.contains("new-key"), "{output}");

    let mut open = ms.env();
    open.push(("ALLOW_UNAUTHENTICATED", "true".into()));
    let service = Service::spawn(&open);
    service.wait_ready().await;
    service.terminate();
    let (code, output) = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("anyone who reaches the gRPC port"),
        "{output}"
    );
}

#[tokio::test]
async fn the_audit_log_names_caller_mailbox_and_outcome_and_never_a_secret() {
    let setup = Setup::start("", &[]).await;
    setup.connect(MAILBOX).await;
    let _ = setup
        .service
        .client()
        .await
        .send_mail(send_as(MAILBOX))
        .await;
    let _ = setup
        .sender()
        .await
        .disconnect(proto::DisconnectRequest {
            mailbox: MAILBOX.into(),
        })
        .await;
    setup
        .admin()
        .await
        .disconnect(proto::DisconnectRequest {
            mailbox: MAILBOX.into(),
        })
        .await
        .unwrap();
    let lines = setup.audit_lines();
    let find = |event: &str, outcome: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event && l["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {event}/{outcome} in {lines:#?}"))
            .clone()
    };
    let connect = find("connect", "link_issued");
    assert_eq!(connect["caller"], "ops");
    assert_eq!(connect["mailbox"], MAILBOX);
    let callback = find("callback", "connected");
    assert_eq!(
        callback["caller"], "ops",
        "the callback names who asked for the link"
    );
    assert_eq!(callback["mailbox"], MAILBOX);
    let refused = find("refused", "unauthenticated");
    assert_eq!(refused["rpc"], "SendMail");
    let denied = find("refused", "permission_denied");
    assert_eq!(denied["caller"], "billing");
    assert_eq!(denied["rpc"], "Disconnect");
    let disconnect = find("disconnect", "disconnected");
    assert_eq!(disconnect["caller"], "ops");
    let text = std::fs::read_to_string(setup.service.data_dir.join("audit.log")).unwrap();
    let mut secrets = vec![ADMIN_KEY.to_owned(), SENDER_KEY.to_owned()];
    secrets.extend(setup.ms.identity.issued_access_tokens());
    secrets.extend(setup.ms.identity.issued_refresh_tokens());
    secrets.extend(setup.ms.identity.issued_codes());
    for secret in secrets {
        assert!(!text.contains(&secret), "{secret} in the audit log");
    }
}
