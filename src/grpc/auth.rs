//! Authentication of every Mailer call, before it runs: who is calling (a key in the
//! `authorization` metadata, or the TLS client certificate's SAN), and whether its rate allows
//! the call. The caller travels on to the handlers as a request extension; what the caller may
//! do is the core's decision.
//!
//! A tower service rather than a tonic interceptor, because the refusal's audit line names the
//! RPC, which only the request's path says. Health and reflection are not wrapped: probes carry
//! no keys.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{Request, Response};
use tonic::{
    Status,
    body::Body,
    server::NamedService,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::Service;

use crate::{
    audit::{AuditEvent, AuditLog, AuditRecord},
    callers::{Caller, CallerRegistry, Credentials, Refusal},
};

/// A Mailer service whose calls are authenticated first.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    registry: Arc<CallerRegistry>,
    audit: Arc<AuditLog>,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, registry: Arc<CallerRegistry>, audit: Arc<AuditLog>) -> Self {
        Self {
            inner,
            registry,
            audit,
        }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Authenticated<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        match self.authenticate(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                // The clone that was made ready is the one to call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(refusal) => {
                let rpc = rpc_name(request.uri().path());
                self.audit.record(
                    AuditRecord::new(AuditEvent::Refused, refusal_outcome(&refusal))
                        .rpc(rpc)
                        .detail(refusal.to_string()),
                );
                tracing::info!(rpc, reason = %refusal, "call refused");
                let response = Status::from(refusal).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

impl<S> Authenticated<S> {
    fn authenticate(&self, request: &Request<Body>) -> Result<Arc<Caller>, Refusal> {
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("?"));
        let certificate_names = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .and_then(|certs| certs.first().map(crate::tls::subject_alt_names))
            .unwrap_or_default();
        self.registry.authenticate(&Credentials {
            authorization,
            certificate_names,
        })
    }
}

/// `Connect` from `/graphmailer.v1.Mailer/Connect`.
fn rpc_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn refusal_outcome(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::RateLimited { .. } => "rate_limited",
        _ => "unauthenticated",
    }
}
