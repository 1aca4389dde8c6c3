//! Admission control: a budget of request bytes that all calls together may hold
//! (`GRAPH_MAILER_MAX_INFLIGHT_BYTES`). A call's size is read from its first gRPC frame header,
//! before its body is buffered; a call that does not fit gets RESOURCE_EXHAUSTED with a
//! RetryInfo at once, and its body is never read. So three callers sending the 150 MB maximum
//! at once cannot push the service past its memory limit: the third is told to come back.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, future::BoxFuture, stream};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::{Layer, Service};

/// How long a refused caller is asked to wait: about the time a large call takes.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The byte budget, shared by every connection.
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    budget: Arc<Semaphore>,
    total: u32,
}

impl AdmissionLayer {
    /// A budget of `total` bytes.
    pub fn new(total: u64) -> Self {
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        Self {
            budget: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            budget: self.budget.clone(),
            total: self.total,
        }
    }
}

/// A service behind the byte budget.
#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    budget: Arc<Semaphore>,
    total: u32,
}

impl<S> Service<Request<Body>> for Admission<S>
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

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (budget, total) = (self.budget.clone(), self.total);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let (read, rest) = read_frame_header(body).await;
            let size = frame_length(&read).unwrap_or(0).min(total);
            let permit = match admit(&budget, size) {
                Some(permit) => permit,
                None => {
                    tracing::warn!(
                        bytes = size,
                        "call refused: the in-flight byte budget is spent"
                    );
                    return Ok(crate::grpc::status::over_budget(size, RETRY_AFTER).into_http());
                }
            };
            let body = Body::new(StreamBody::new(
                stream::iter(read.into_iter().map(|b| Ok(Frame::data(b)))).chain(rest),
            ));
            let response = inner.call(Request::from_parts(parts, body)).await;
            drop(permit);
            response
        })
    }
}

/// Takes `size` bytes of the budget, now or never.
fn admit(budget: &Arc<Semaphore>, size: u32) -> Option<OwnedSemaphorePermit> {
    budget.clone().try_acquire_many_owned(size).ok()
}

type RestOfBody = futures::stream::BoxStream<'static, Result<Frame<Bytes>, tonic::Status>>;

/// Reads the body until the first frame header (5 bytes) has arrived; returns what was read
/// and the rest of the body.
async fn read_frame_header(mut body: Body) -> (Vec<Bytes>, RestOfBody) {
    let mut read = Vec::new();
    let mut have = 0;
    let mut trailers = None;
    while have < 5 {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    have += data.len();
                    read.push(data);
                }
                Err(frame) => {
                    trailers = Some(frame);
                    break;
                }
            },
            Some(Err(error)) => {
                let rest: RestOfBody = Box::pin(stream::once(async move { Err(error) }));
                return (read, rest);
            }
            None => break,
        }
    }
    let rest: RestOfBody = match trailers {
        Some(frame) => Box::pin(stream::once(async move { Ok(frame) })),
        None => Box::pin(http_body_util::BodyStream::new(body)),
    };
    (read, rest)
}

/// The length in the gRPC frame header (flag byte, then a big-endian u32).
fn frame_length(read: &[Bytes]) -> Option<u32> {
    let mut header = BytesMut::with_capacity(5);
    for chunk in read {
        header.extend_from_slice(chunk);
        if header.len() >= 5 {
            break;
        }
    }
    let bytes: [u8; 4] = header.get(1..5)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_is_read_across_chunks() {
        let read = vec![
            Bytes::from_static(&[0, 0]),
            Bytes::from_static(&[0, 1, 0, 9]),
        ];
        assert_eq!(frame_length(&read), Some(256));
        assert_eq!(frame_length(&[Bytes::from_static(&[0, 0])]), None);
    }

    #[test]
    fn the_budget_admits_what_fits_and_refuses_the_rest() {
        let layer = AdmissionLayer::new(100);
        let first = admit(&layer.budget, 60).unwrap();
        assert!(admit(&layer.budget, 60).is_none());
        drop(first);
        assert!(admit(&layer.budget, 60).is_some());
    }
}
