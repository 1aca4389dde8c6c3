//! The foundation: health, reflection, the sandbox transport and request validation.

use std::path::Path;

use graph_mailer::proto::{self, Importance};
use mail_parser::{MessageParser, MimeHeaders};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{TestApp, address, attachment, simple_message};

fn eml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(mailboxes) = std::fs::read_dir(dir.join("sandbox")) {
        for mailbox in mailboxes.flatten() {
            for file in std::fs::read_dir(mailbox.path()).unwrap().flatten() {
                files.push(file.path());
            }
        }
    }
    files
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_mailer_service() {
    let app = TestApp::sandbox().await;
    let channel = app.channel().await;
    let mut health = HealthClient::new(channel);
    for service in ["", "graphmailer.v1.Mailer"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let ready = reqwest::get(format!("{}/readyz", app.http_base))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let live = reqwest::get(format!("{}/healthz", app.http_base))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_the_mailer_and_health_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = TestApp::sandbox().await;
    let channel = app.channel().await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"graphmailer.v1.Mailer".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let mut old = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "graphmailer.v1.Mailer".into(),
            ),
        ),
    };
    let mut stream = old
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
}

fn full_message() -> proto::SendMailRequest {
    proto::SendMailRequest {
        mailbox: "NoReply@Contoso.com".into(),
        to: vec![
            address("bob@example.com", "Bob Smith"),
            address("eve@example.org", ""),
        ],
        cc: vec![address("carol@example.net", "Carol")],
        bcc: vec![address("dave@example.com", "")],
        reply_to: vec![address("help@contoso.com", "Help desk")],
        subject: "Invoice 42 – März".into(),
        text_body: "Your invoice is attached.".into(),
        html_body: "<p>Your invoice is attached. <img src=\"cid:logo\"></p>".into(),
        attachments: vec![
            attachment(
                "invoice.pdf",
                "application/pdf",
                b"%PDF-1.7 invoice".to_vec(),
                "",
            ),
            attachment(
                "logo.png",
                "image/png",
                vec![0x89, b'P', b'N', b'G', 0, 1, 2],
                "logo",
            ),
        ],
        headers: [
            ("X-Campaign".to_owned(), "q3".to_owned()),
            ("x-ticket".to_owned(), "T-1".to_owned()),
        ]
        .into(),
        importance: Importance::High as i32,
        skip_sent_items: false,
        idempotency_key: String::new(),
    }
}

#[tokio::test]
async fn a_sandbox_send_writes_an_eml_that_a_mime_parser_reads_back_field_for_field() {
    let app = TestApp::sandbox().await;
    let response = app
        .client()
        .send_mail(full_message())
        .await
        .unwrap()
        .into_inner();
    assert!(uuid::Uuid::parse_str(&response.message_id).is_ok());
    assert!(response.accepted_at.is_some());
    assert!(!response.deduplicated);

    let files = eml_files(&app.data_dir);
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.ends_with(&format!("-{}.eml", response.message_id)),
        "{name}"
    );
    assert!(files[0].parent().unwrap().ends_with("noreply@contoso.com"));

    let raw = std::fs::read(&files[0]).unwrap();
    let parsed = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(
        parsed.from().unwrap().first().unwrap().address(),
        Some("noreply@contoso.com")
    );
    let to: Vec<_> = parsed
        .to()
        .unwrap()
        .iter()
        .map(|a| (a.address().unwrap(), a.name()))
        .collect();
    assert_eq!(
        to,
        [
            ("bob@example.com", Some("Bob Smith")),
            ("eve@example.org", None)
        ]
    );
    assert_eq!(
        parsed.cc().unwrap().first().unwrap().address(),
        Some("carol@example.net")
    );
    assert_eq!(
        parsed.bcc().unwrap().first().unwrap().address(),
        Some("dave@example.com")
    );
    assert_eq!(
        parsed.reply_to().unwrap().first().unwrap().address(),
        Some("help@contoso.com")
    );
    assert_eq!(parsed.subject(), Some("Invoice 42 – März"));
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("Your invoice is attached.")
    );
    assert!(parsed.body_html(0).unwrap().contains("cid:logo"));
    assert_eq!(parsed.header_raw("X-Campaign").map(str::trim), Some("q3"));
    assert_eq!(parsed.header_raw("x-ticket").map(str::trim), Some("T-1"));
    assert_eq!(parsed.header_raw("Importance").map(str::trim), Some("high"));
    assert_eq!(
        parsed.message_id(),
        Some(format!("{}@contoso.com", response.message_id).as_str())
    );
    let attachments: Vec<_> = parsed.attachments().collect();
    assert_eq!(attachments.len(), 2);
    let pdf = attachments
        .iter()
        .find(|a| a.attachment_name() == Some("invoice.pdf"))
        .unwrap();
    assert_eq!(pdf.contents(), b"%PDF-1.7 invoice");
    let logo = attachments
        .iter()
        .find(|a| a.content_id() == Some("logo"))
        .unwrap();
    assert_eq!(logo.contents(), [0x89, b'P', b'N', b'G', 0, 1, 2]);

    let status = app.mailbox_status("noreply@contoso.com").await;
    assert_eq!(status.sent_total, 1);
    assert_eq!(status.state, proto::ConnectionState::Connected as i32);
    let all = app
        .client()
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.transport, "sandbox");
    assert_eq!(all.version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn every_invalid_request_gets_invalid_argument_naming_the_field_and_writes_nothing() {
    let app = TestApp::sandbox().await;
    let base = || simple_message("noreply@contoso.com");
    let cases: Vec<(&str, proto::SendMailRequest)> = vec![
        (
            "to[0].address",
            proto::SendMailRequest {
                to: vec![address("bob@", "")],
                ..base()
            },
        ),
        (
            "to[2].address",
            proto::SendMailRequest {
                to: vec![
                    address("a@example.com", ""),
                    address("b@example.com", ""),
                    address("not an address", ""),
                ],
                ..base()
            },
        ),
        (
            "cc[0].address",
            proto::SendMailRequest {
                cc: vec![address("", "")],
                ..base()
            },
        ),
        (
            "bcc[0].name",
            proto::SendMailRequest {
                bcc: vec![address("x@example.com", "Evil\r\nBcc: y@example.com")],
                ..base()
            },
        ),
        (
            "reply_to[0].address",
            proto::SendMailRequest {
                reply_to: vec![address("@example.com", "")],
                ..base()
            },
        ),
        (
            "to",
            proto::SendMailRequest {
                to: vec![],
                ..base()
            },
        ),
        (
            "recipients",
            proto::SendMailRequest {
                to: (0..501)
                    .map(|i| address(&format!("r{i}@example.com"), ""))
                    .collect(),
                ..base()
            },
        ),
        (
            "subject",
            proto::SendMailRequest {
                subject: "Hi\nBcc: x@example.com".into(),
                ..base()
            },
        ),
        (
            "headers[\"Subject\"]",
            proto::SendMailRequest {
                headers: [("Subject".to_owned(), "x".to_owned())].into(),
                ..base()
            },
        ),
        (
            "headers[\"X-Bad Name\"]",
            proto::SendMailRequest {
                headers: [("X-Bad Name".to_owned(), "x".to_owned())].into(),
                ..base()
            },
        ),
        (
            "headers[\"X-Tag\"]",
            proto::SendMailRequest {
                headers: [("X-Tag".to_owned(), "a\r\nb".to_owned())].into(),
                ..base()
            },
        ),
        (
            "attachments[0].filename",
            proto::SendMailRequest {
                attachments: vec![attachment("", "text/plain", vec![1], "")],
                ..base()
            },
        ),
        (
            "attachments[1].content_type",
            proto::SendMailRequest {
                attachments: vec![
                    attachment("a.txt", "text/plain", vec![1], ""),
                    attachment("b.txt", "not-a-type", vec![1], ""),
                ],
                ..base()
            },
        ),
        (
            "mailbox",
            proto::SendMailRequest {
                mailbox: "nobody".into(),
                ..base()
            },
        ),
        (
            "mailbox",
            proto::SendMailRequest {
                mailbox: String::new(),
                ..base()
            },
        ),
        (
            "idempotency_key",
            proto::SendMailRequest {
                idempotency_key: "k".repeat(256),
                ..base()
            },
        ),
        (
            "importance",
            proto::SendMailRequest {
                importance: 7,
                ..base()
            },
        ),
    ];
    for (field, request) in cases {
        let status = app.client().send_mail(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{field}: {}",
            status.message()
        );
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "expected the message to name {field}, got {:?}",
            status.message()
        );
    }
    assert!(
        eml_files(&app.data_dir).is_empty(),
        "a rejected request wrote a file"
    );
}

#[tokio::test]
async fn the_message_size_limit_is_enforced_with_the_setting_named() {
    let app = TestApp::builder()
        .env("MAX_MESSAGE_BYTES", "1048576")
        .start()
        .await;
    let request = proto::SendMailRequest {
        attachments: vec![attachment("big.bin", "", vec![7; 1_100_000], "")],
        ..simple_message("noreply@contoso.com")
    };
    let status = app.client().send_mail(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("message:"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("GRAPH_MAILER_MAX_MESSAGE_BYTES"));
    assert!(eml_files(&app.data_dir).is_empty());
}

#[tokio::test]
async fn a_20_megabyte_attachment_passes_the_grpc_size_limit() {
    let app = TestApp::sandbox().await;
    let content: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let request = proto::SendMailRequest {
        attachments: vec![attachment(
            "big.bin",
            "application/octet-stream",
            content.clone(),
            "",
        )],
        ..simple_message("noreply@contoso.com")
    };
    app.client().send_mail(request).await.unwrap();
    let raw = std::fs::read(&eml_files(&app.data_dir)[0]).unwrap();
    let parsed = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(
        parsed.attachments().next().unwrap().contents(),
        &content[..]
    );
}

#[tokio::test]
async fn status_of_an_unknown_mailbox_is_not_found_and_a_bad_one_invalid() {
    let app = TestApp::sandbox().await;
    let status = app
        .client()
        .status(proto::StatusRequest {
            mailbox: "ghost@contoso.com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .client()
        .status(proto::StatusRequest {
            mailbox: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("mailbox:"));
}

#[tokio::test]
async fn connect_in_the_sandbox_says_what_to_configure() {
    let app = TestApp::sandbox().await;
    let status = app
        .client()
        .connect(proto::ConnectRequest {
            mailbox: "noreply@contoso.com".into(),
            force_consent: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("GRAPH_MAILER_TENANT_ID"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    use tonic_reflection::pb::v1;
    let app = TestApp::builder().env("REFLECTION", "false").start().await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let status = match client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
    {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::Unimplemented);
}
