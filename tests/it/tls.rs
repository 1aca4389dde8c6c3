//! TLS and mTLS through the real binary: both listeners encrypted, callers identified by their
//! client certificate, probes on the plaintext health listener, renewed certificates picked up
//! without a restart.

use std::{process::Command, time::Duration};

use graph_mailer::proto::{self, mailer_client::MailerClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::support::{
    binary::{BINARY, Service, caller_entry, free_port, keyed},
    certs::{Leaf, TestCa},
    simple_message,
};

const MAILBOX: &str = "billing@contoso.com";
const BILLING_SAN: &str = "spiffe://test/ns/billing/sa/api";
const ADMIN_KEY: &str = "gm_test-tls-admin-key-0000000000000000000000";

struct TlsSetup {
    service: Service,
    ca: TestCa,
    health_port: u16,
    dir: tempfile::TempDir,
}

/// A sandbox service with TLS and mTLS, a caller `billing` known by its certificate's SAN and
/// an admin known by its key.
async fn start() -> TlsSetup {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("graph-mailer test CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let client_ca = dir.path().join("client-ca.pem");
    std::fs::write(&client_ca, ca.pem()).unwrap();
    let callers = dir.path().join("callers.toml");
    std::fs::write(
        &callers,
        format!(
            "{}[[caller]]\nname = \"billing\"\nrole = \"sender\"\nmailboxes = [\"{MAILBOX}\"]\nclient_cert = \"{BILLING_SAN}\"\n",
            caller_entry("ops", ADMIN_KEY, "admin", &[], "")
        ),
    )
    .unwrap();
    let health_port = free_port();
    let service = Service::spawn_in(
        &dir.path().join("data"),
        &[
            ("TLS_CERT_FILE", cert.display().to_string()),
            ("TLS_KEY_FILE", key.display().to_string()),
            ("TLS_CLIENT_CA_FILE", client_ca.display().to_string()),
            ("CALLERS_FILE", callers.display().to_string()),
            ("HEALTH_ADDR", format!("127.0.0.1:{health_port}")),
            ("SECRET_RELOAD_SECONDS", "1".into()),
        ],
    );
    service
        .wait_ready_at(&format!("http://127.0.0.1:{health_port}/readyz"))
        .await;
    TlsSetup {
        service,
        ca,
        health_port,
        dir,
    }
}

async fn tls_channel(
    port: u16,
    ca_pem: &str,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

#[tokio::test]
async fn a_caller_without_a_client_certificate_is_refused_and_one_with_a_known_san_is_served_as_that_caller()
 {
    let setup = start().await;
    let port = setup.service.grpc_port;

    // No client certificate: the handshake fails (or the first call does).
    let refused = match tls_channel(port, &setup.ca.pem(), None).await {
        Err(_) => true,
        Ok(channel) => MailerClient::new(channel)
            .status(proto::StatusRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate got through");

    // Plaintext on the TLS port gets nowhere either.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            MailerClient::new(channel)
                .status(proto::StatusRequest::default())
                .await
                .is_err()
        );
    }

    let billing = setup.ca.client(BILLING_SAN);
    let channel = tls_channel(port, &setup.ca.pem(), Some(&billing))
        .await
        .unwrap();
    let mut client = MailerClient::new(channel.clone());
    client.send_mail(simple_message(MAILBOX)).await.unwrap();
    let status = client
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<&str> = status
        .mailboxes
        .iter()
        .map(|m| m.mailbox.as_str())
        .collect();
    assert_eq!(shown, [MAILBOX], "served as billing: only its mailbox");
    let denied = client
        .send_mail(simple_message("ceo@contoso.com"))
        .await
        .unwrap_err();
    assert!(
        denied.message().contains("caller billing"),
        "{}",
        denied.message()
    );

    // A certificate the callers file does not name, from the same CA: authenticated by TLS,
    // but no caller, so a key is needed.
    let stranger = setup.ca.client("spiffe://test/ns/other/sa/x");
    let channel = tls_channel(port, &setup.ca.pem(), Some(&stranger))
        .await
        .unwrap();
    let status = MailerClient::new(channel.clone())
        .status(proto::StatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    keyed(channel, ADMIN_KEY)
        .status(proto::StatusRequest::default())
        .await
        .expect("with the admin's key the same connection is served");
}

#[tokio::test]
async fn the_http_listener_speaks_tls_with_http2_and_http1_and_probes_stay_plaintext() {
    let setup = start().await;
    let http = |http1_only: bool| {
        let builder = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(setup.ca.pem().as_bytes()).unwrap(),
            )
            .resolve(
                "localhost",
                ([127, 0, 0, 1], setup.service.http_port).into(),
            );
        let builder = if http1_only {
            builder.http1_only()
        } else {
            builder
        };
        builder.build().unwrap()
    };
    // ALPN offers both: a client that can speak HTTP/2 gets it, one that cannot gets HTTP/1.1.
    for (http1_only, expected) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let response = http(http1_only)
            .get(format!(
                "https://localhost:{}/healthz",
                setup.service.http_port
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), expected);
    }
    let plain = reqwest::get(format!(
        "http://127.0.0.1:{}/healthz",
        setup.service.http_port
    ))
    .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "no plaintext on the TLS port"
    );

    // Kubernetes' gRPC probe: plaintext gRPC health on the health listener.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", setup.health_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let serving = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "graphmailer.v1.Mailer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1);
    // The health listener serves nothing else.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", setup.health_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mailer = MailerClient::new(channel)
        .status(proto::StatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(mailer.code(), tonic::Code::Unimplemented);
    // And the container health check finds it.
    let healthcheck = Command::new(BINARY)
        .env_clear()
        .env(
            "GRAPH_MAILER_HEALTH_ADDR",
            format!("127.0.0.1:{}", setup.health_port),
        )
        .arg("healthcheck")
        .output()
        .unwrap();
    assert!(
        healthcheck.status.success(),
        "{}",
        String::from_utf8_lossy(&healthcheck.stdout)
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_used_without_a_restart() {
    let setup = start().await;
    let renewed_ca = TestCa::new("renewed CA");
    let billing = setup.ca.client(BILLING_SAN);
    assert!(
        tls_channel(setup.service.grpc_port, &renewed_ca.pem(), Some(&billing))
            .await
            .is_err(),
        "the renewed CA does not vouch for the old certificate"
    );
    // cert-manager writes the new pair over the old files.
    renewed_ca.server().write(setup.dir.path(), "server");
    wait_for(|| async {
        tls_channel(setup.service.grpc_port, &renewed_ca.pem(), Some(&billing))
            .await
            .is_ok()
    })
    .await;
}

async fn wait_for<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(std::time::Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn metrics_can_move_off_the_public_listener() {
    let metrics_port = free_port();
    let service = Service::spawn(&[("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))]);
    service.wait_ready().await;
    let own = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(
        own.text()
            .await
            .unwrap()
            .contains("graph_mailer_build_info")
    );
    let public = reqwest::get(format!("http://127.0.0.1:{}/metrics", service.http_port))
        .await
        .unwrap();
    assert_eq!(
        public.status(),
        404,
        "the public listener no longer serves /metrics"
    );
}
