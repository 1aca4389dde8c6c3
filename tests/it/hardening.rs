//! Nothing a request contains can hurt the service: each attack through the real binary, with
//! the service still answering afterwards.

use std::{
    convert::Infallible,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use graph_mailer::{proto, settings::LimitSettings};
use prost::Message;
use tonic::{Code, body::Body, server::NamedService};

use crate::support::{
    MAILBOX, Microsoft, attachment,
    binary::{Service, raw_call},
    simple_message,
};

const MIB: u64 = 1024 * 1024;

/// The encoding of a SendMailRequest with `count` copies of a repeated field: built by hand, so
/// the test need not hold millions of structures to send them.
fn repeated_field(field: u32, entry: &[u8], count: usize) -> Bytes {
    let base = simple_message(MAILBOX).encode_to_vec();
    let mut bytes = BytesMut::with_capacity(base.len() + count * (entry.len() + 3));
    bytes.put_slice(&base);
    let key = (field << 3) | 2;
    for _ in 0..count {
        bytes.put_u8(key as u8);
        bytes.put_u8(entry.len() as u8);
        bytes.put_slice(entry);
    }
    bytes.freeze()
}

fn tiny_address() -> Vec<u8> {
    proto::EmailAddress {
        address: "a@b.c".into(),
        name: String::new(),
    }
    .encode_to_vec()
}

async fn healthz_answers(service: &Service) -> bool {
    matches!(
        reqwest::get(format!("http://127.0.0.1:{}/healthz", service.http_port)).await,
        Ok(response) if response.status() == 200
    )
}

#[tokio::test]
async fn a_header_bomb_is_refused_in_under_a_second_while_healthz_keeps_answering() {
    let service = Service::spawn(&[]);
    service.wait_ready().await;
    // A map entry is a message with key = 1 and value = 2.
    let entry = [
        0x0a, 0x06, b'X', b'-', b'B', b'o', b'm', b'b', 0x12, 0x01, b'v',
    ];
    let bomb = repeated_field(10, &entry, 200_000);
    let channel = service.channel().await;
    let call = tokio::spawn(async move {
        let started = Instant::now();
        (raw_call(channel, "SendMail", bomb).await, started.elapsed())
    });
    let mut probes = 0;
    while !call.is_finished() {
        assert!(
            healthz_answers(&service).await,
            "/healthz stopped answering"
        );
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (result, took) = call.await.unwrap();
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("headers:"),
        "{}",
        status.message()
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(healthz_answers(&service).await && probes >= 1);
}

#[tokio::test]
async fn a_header_name_with_a_multibyte_character_is_invalid_not_a_crash() {
    let service = Service::spawn(&[]);
    service.wait_ready().await;
    let mut client = service.client().await;
    let mut request = simple_message(MAILBOX);
    request.headers.insert("x€".into(), "v".into());
    let status = client.send_mail(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("headers[\"x€\"]"),
        "{}",
        status.message()
    );
    client
        .send_mail(simple_message(MAILBOX))
        .await
        .expect("the service still answers on the same connection");
}

#[tokio::test]
async fn ten_million_recipients_are_refused_by_their_count_with_memory_bounded() {
    let mut service = Service::spawn(&[]);
    service.wait_ready().await;
    let before = service.peak_rss();
    let flood = repeated_field(2, &tiny_address(), 10_000_000);
    let size = flood.len() as u64;
    let status = raw_call(service.channel().await, "SendMail", flood)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("recipients: 10000001 recipients"),
        "{}",
        status.message()
    );
    let peak = service.peak_rss();
    assert!(service.is_running());
    // Decoded, ten million addresses would take about a gigabyte; the service holds the request
    // bytes and little more.
    assert!(
        peak < before + size + 150 * MIB,
        "peak RSS {} MiB for a {} MiB request (before: {} MiB)",
        peak / MIB,
        size / MIB,
        before / MIB
    );
}

#[tokio::test]
async fn eight_concurrent_maximum_size_sends_meet_the_in_flight_budget_not_the_oom_killer() {
    let mut service = Service::spawn(&[]);
    service.wait_ready().await;
    // The largest message the default settings accept, sent eight times at once.
    let content = vec![7u8; (150 * MIB) as usize - 1024];
    let mut request = simple_message(MAILBOX);
    request.attachments = vec![attachment("big.bin", "", content, "")];
    let client = service.client().await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (mut client, request) = (client.clone(), request.clone());
            tokio::spawn(async move { client.send_mail(request).await })
        })
        .collect();
    let mut codes = Vec::new();
    for call in calls {
        codes.push(match call.await.unwrap() {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
    }
    assert!(service.is_running(), "the service survived");
    let exhausted = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    let sent = codes.iter().filter(|c| **c == Code::Ok).count();
    assert!(exhausted >= 1 && sent >= 1, "{codes:?}");
    assert_eq!(exhausted + sent, 8, "{codes:?}");
    let peak = service.peak_rss();
    assert!(
        peak < 768 * MIB,
        "peak RSS {} MiB: over the 768 MiB pod limit",
        peak / MIB
    );
    let mut client = service.client().await;
    client
        .send_mail(simple_message(MAILBOX))
        .await
        .expect("and keeps serving");
}

#[tokio::test]
async fn sends_for_thousands_of_unknown_mailboxes_leave_no_row_and_no_label() {
    let ms = Microsoft::start().await;
    let mut env = ms.env();
    env.push(("ALLOW_UNAUTHENTICATED", "true".into()));
    let service = Service::spawn(&env);
    service.wait_ready().await;
    let client = service.client().await;
    let mut tasks = Vec::new();
    for worker in 0..20 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let mailbox = format!("sender{i}@unknown-{worker}-{i}.example");
                let status = client
                    .send_mail(simple_message(&mailbox))
                    .await
                    .unwrap_err();
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Counters are written every second: give them two.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let status = service
        .client()
        .await
        .status(proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.mailboxes.is_empty(), "{:?}", status.mailboxes);
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", service.http_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("unknown-"), "a label per unknown domain");
    assert!(
        metrics.contains("mailbox_domain=\"other\""),
        "unknown mailboxes are counted under other"
    );
}

#[tokio::test]
async fn the_callback_page_sends_security_headers() {
    let service = Service::spawn(&[]);
    service.wait_ready().await;
    let response = reqwest::get(format!(
        "http://127.0.0.1:{}/oauth2/callback?state=nothing",
        service.http_port
    ))
    .await
    .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "no-store");
}

/// A service whose every call panics.
#[derive(Clone)]
struct Panicking;

impl NamedService for Panicking {
    const NAME: &'static str = "test.Panicking";
}

impl tower::Service<http::Request<Body>> for Panicking {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        panic!("a bug in a handler")
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_goes_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = tonic::service::Routes::new(Panicking);
    let limits = LimitSettings {
        max_inflight_bytes: 10 * MIB,
        rpc_timeout: Duration::from_secs(5),
        max_streams_per_connection: 10,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(graph_mailer::grpc::serve(
        routes,
        tonic::transport::server::TcpIncoming::from(listener),
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for _ in 0..2 {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<proto::StatusRequest, proto::StatusResponse, _>(
                tonic::Request::new(proto::StatusRequest::default()),
                http::uri::PathAndQuery::from_static("/test.Panicking/Call"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
