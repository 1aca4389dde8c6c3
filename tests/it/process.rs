//! The binary as operators run it: SIGTERM, JSON logs, `healthcheck`, `check`.

use std::{process::Command, time::Duration};

use graph_mailer::proto::{self, mailer_client::MailerClient};

use crate::support::{
    MAILBOX, Microsoft,
    binary::{BINARY, Service},
    browse,
    fake_graph::Scripted,
    fake_identity::CLIENT_SECRET,
    sign_in_link, simple_message,
};

fn graph_env(ms: &Microsoft) -> Vec<(&'static str, String)> {
    let mut env = ms.env();
    env.push(("LOG_FORMAT", "json".to_owned()));
    env.push(("ALLOW_UNAUTHENTICATED", "true".to_owned()));
    env
}

/// Starts the binary on the fakes and connects MAILBOX through it.
async fn connected_service(
    ms: &Microsoft,
    env: &[(&str, String)],
) -> (Service, MailerClient<tonic::transport::Channel>) {
    let service = Service::spawn(env);
    ms.identity.register_redirect_uri(&format!(
        "http://127.0.0.1:{}/oauth2/callback",
        service.http_port
    ));
    service.wait_ready().await;
    let mut client = service.client().await;
    let (status, page) = browse(&sign_in_link(&mut client, MAILBOX).await).await;
    assert_eq!(status, 200, "{page}");
    (service, client)
}

#[tokio::test]
async fn sigterm_drains_in_flight_sends_and_json_logs_carry_no_secret() {
    let ms = Microsoft::start().await;
    let mut env = graph_env(&ms);
    env.push(("SHUTDOWN_DRAIN_SECONDS", "10".to_owned()));
    let (service, mut client) = connected_service(&ms, &env).await;
    let sent = client
        .send_mail(simple_message(MAILBOX))
        .await
        .unwrap()
        .into_inner();
    ms.graph
        .script("sendMail", [Scripted::error(400, "ErrorInvalidRecipients")]);
    client.send_mail(simple_message(MAILBOX)).await.unwrap_err();
    ms.identity.sign_in_as("admin@contoso.com");
    let (status, _) = browse(
        &client
            .connect(proto::ConnectRequest {
                mailbox: MAILBOX.into(),
                force_consent: true,
            })
            .await
            .unwrap()
            .into_inner()
            .authorization_url,
    )
    .await;
    assert_eq!(status, 403);

    // A slow send is in flight when SIGTERM arrives: it completes, then the process exits 0.
    ms.graph.set_latency(Duration::from_millis(1500));
    let mut slow = client.clone();
    let in_flight = tokio::spawn(async move { slow.send_mail(simple_message(MAILBOX)).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    service.terminate();
    let response = in_flight.await.unwrap();
    assert!(
        response.is_ok(),
        "the in-flight call finished: {response:?}"
    );
    let (code, output) = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(ms.graph.delivered().len(), 2);

    let mut lines = 0;
    let mut with_message_id = false;
    let mut with_rpc_duration = false;
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(value.get(field).is_some(), "{field} missing in {line}");
        }
        lines += 1;
        with_message_id |=
            line.contains(&sent.message_id) && line.contains("\"mailbox_domain\":\"contoso.com\"");
        with_rpc_duration |= value.get("rpc").is_some() && value.get("duration_ms").is_some();
    }
    assert!(lines > 10, "{output}");
    assert!(
        with_message_id,
        "a line names the message id and the mailbox's domain"
    );
    assert!(with_rpc_duration, "RPC lines carry their name and duration");
    let mut secrets = vec![
        CLIENT_SECRET.to_owned(),
        "bob@example.com".to_owned(),
        MAILBOX.to_owned(),
        "admin@contoso.com".to_owned(),
    ];
    secrets.extend(ms.identity.issued_access_tokens());
    secrets.extend(ms.identity.issued_refresh_tokens());
    secrets.extend(ms.identity.issued_codes());
    assert!(secrets.len() > 8);
    for secret in secrets {
        assert!(!output.contains(&secret), "{secret} appears in the logs");
    }
}

#[tokio::test]
async fn healthcheck_exits_zero_only_while_the_service_serves() {
    let service = Service::spawn(&[]);
    service.wait_ready().await;
    let addr = format!("127.0.0.1:{}", service.grpc_port);
    let healthy = Command::new(BINARY)
        .args(["healthcheck", "--addr", &addr])
        .output()
        .unwrap();
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&healthy.stdout).trim(), "SERVING");
    service.terminate();
    let (code, output) = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("SANDBOX MODE"), "the sandbox warns loudly");
    let gone = Command::new(BINARY)
        .args(["healthcheck", "--addr", &addr, "--timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
}

#[tokio::test]
async fn check_prints_json_and_exits_non_zero_on_a_failure() {
    let data = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut command = Command::new(BINARY);
        command
            .env_clear()
            .env("GRAPH_MAILER_DATA_DIR", data.path())
            .args(["check", "--json"]);
        for (k, v) in env {
            command.env(format!("GRAPH_MAILER_{k}"), v);
        }
        command.output().unwrap()
    };
    let sandbox = run(&[]);
    assert!(
        sandbox.status.success(),
        "{}",
        String::from_utf8_lossy(&sandbox.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&sandbox.stdout).unwrap();
    assert_eq!(report["ok"], true);

    let broken = run(&[
        ("TENANT_ID", "common"),
        ("CLIENT_ID", "my-app"),
        ("CLIENT_SECRET", "x"),
    ]);
    assert_eq!(broken.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let text = report.to_string();
    assert!(
        text.contains("AADSTS50194") && text.contains("Application (client) ID"),
        "{text}"
    );
}

#[test]
fn help_explains_the_commands_and_settings() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "serve",
        "check",
        "healthcheck",
        "--config",
        "GRAPH_MAILER_TENANT_ID",
        "GRAPH_MAILER_DATABASE_URL",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
    let bad = Command::new(BINARY)
        .env_clear()
        .env("GRAPH_MAILER_GRPC_ADDR", "nowhere")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("GRAPH_MAILER_GRPC_ADDR"));
}

#[tokio::test]
async fn sighup_makes_the_service_read_a_rotated_secret_file() {
    let ms = Microsoft::start().await;
    // Tokens that live less than the refresh margin: every send refreshes.
    ms.identity.set_access_token_lifetime(120, false);
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("client-secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    let mut env: Vec<(&str, String)> = graph_env(&ms)
        .into_iter()
        .filter(|(k, _)| *k != "CLIENT_SECRET")
        .collect();
    env.push(("CLIENT_SECRET_FILE", secret_file.display().to_string()));
    env.push(("SECRET_RELOAD_SECONDS", "3600".to_owned()));
    let (service, mut client) = connected_service(&ms, &env).await;

    std::fs::write(&secret_file, "rotated~Secret.value").unwrap();
    ms.identity.accept_only_secret("rotated~Secret.value");
    let status = Command::new("kill")
        .args(["-HUP", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.send_mail(simple_message(MAILBOX)).await.unwrap();
    assert_eq!(
        ms.identity.token_requests("refresh_token"),
        1,
        "no request with the old secret"
    );
    assert_eq!(ms.identity.successful_refreshes(), 1);
    service.terminate();
    let (code, output) = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(output.contains("client secret file changed"), "{output}");
    assert!(!output.contains("rotated~Secret.value"));
}
