//! The one client of Microsoft Graph. Nothing else builds Graph URLs.
//!
//! Every request carries `client-request-id` = the service's message id, so a support case
//! can be traced from a log line to Microsoft's logs. Upload URLs are pre-authenticated and
//! get no Authorization header.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::{
    error::{GraphErrorBody, GraphFailure},
    payload::Payload,
};
use crate::metrics;

/// Why a Graph call did not succeed.
#[derive(Debug, Clone)]
pub enum GraphCallError {
    /// Graph answered with an error status.
    Failed(GraphFailure),
    /// The request never left (connection refused, DNS): safe to retry.
    NotSent(String),
    /// The request may have reached Graph but no answer came (timeout, connection reset).
    Ambiguous(String),
}

impl GraphCallError {
    fn from_reqwest(error: reqwest::Error) -> Self {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            message = format!("{message}: {inner}");
            source = inner.source();
        }
        if error.is_connect() || error.is_builder() {
            Self::NotSent(message)
        } else {
            Self::Ambiguous(message)
        }
    }
}

/// A draft created by `POST /me/messages`.
#[derive(Debug, Deserialize)]
struct Draft {
    id: String,
}

/// The answer to `createUploadSession`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadSession {
    upload_url: String,
}

/// Calls `{graph}/v1.0/me/…` as the signed-in user.
#[derive(Debug, Clone)]
pub struct GraphClient {
    pub(super) http: reqwest::Client,
    pub(super) base: Url,
    /// Parsed once: `POST /me/sendMail` is on every message's path.
    send_mail_url: Url,
}

impl GraphClient {
    /// A client on `base` (such as `https://graph.microsoft.com`); fails when no Graph URL
    /// can be built on it.
    pub fn new(http: reqwest::Client, base: Url) -> Result<Self, url::ParseError> {
        let send_mail = format!("{}/v1.0/me/sendMail", base.as_str().trim_end_matches('/'));
        let send_mail_url = Url::parse(&send_mail)?;
        Ok(Self {
            http,
            base,
            send_mail_url,
        })
    }

    /// The HTTP client Graph needs: TLS (rustls), connect and request timeouts, no redirects.
    pub fn http_client(
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .user_agent(concat!("graph-mailer/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!(
            "{}/v1.0/me/{path}",
            self.base.as_str().trim_end_matches('/')
        )
    }

    /// `POST /me/sendMail`: 202 when accepted.
    pub async fn send_mail(
        &self,
        token: &SecretString,
        payload: &Payload,
        request_id: &str,
    ) -> Result<(), GraphCallError> {
        let request = self
            .http
            .post(self.send_mail_url.clone())
            .header(header::CONTENT_TYPE, payload.content_type())
            .body(payload.bytes().clone());
        self.execute("sendMail", authorized(request, token, request_id))
            .await?;
        Ok(())
    }

    /// `POST /me/messages`: creates a draft, returns its id.
    pub async fn create_draft(
        &self,
        token: &SecretString,
        payload: &Payload,
        request_id: &str,
    ) -> Result<String, GraphCallError> {
        let request = self
            .http
            .post(self.url("messages"))
            .header(header::CONTENT_TYPE, payload.content_type())
            .body(payload.bytes().clone());
        let response = self
            .execute("createDraft", authorized(request, token, request_id))
            .await?;
        let draft: Draft = parse(response).await?;
        Ok(draft.id)
    }

    /// `POST /me/messages/{id}/attachments`: adds one small `fileAttachment` to a draft.
    pub async fn add_attachment(
        &self,
        token: &SecretString,
        draft_id: &str,
        body: Bytes,
        request_id: &str,
    ) -> Result<(), GraphCallError> {
        let path = format!("messages/{}/attachments", encode_segment(draft_id));
        let request = self
            .http
            .post(self.url(&path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        self.execute("addAttachment", authorized(request, token, request_id))
            .await?;
        Ok(())
    }

    /// `POST /me/messages/{id}/attachments/createUploadSession`: returns the upload URL.
    pub async fn create_upload_session(
        &self,
        token: &SecretString,
        draft_id: &str,
        body: Bytes,
        request_id: &str,
    ) -> Result<Url, GraphCallError> {
        let path = format!(
            "messages/{}/attachments/createUploadSession",
            encode_segment(draft_id)
        );
        let request = self
            .http
            .post(self.url(&path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = self
            .execute(
                "createUploadSession",
                authorized(request, token, request_id),
            )
            .await?;
        let session: UploadSession = parse(response).await?;
        Url::parse(&session.upload_url).map_err(|e| {
            GraphCallError::Ambiguous(format!("Graph returned an unusable uploadUrl: {e}"))
        })
    }

    /// `PUT {uploadUrl}` one chunk; the URL carries its own authorization.
    pub async fn upload_chunk(
        &self,
        upload_url: &Url,
        chunk: Bytes,
        start: u64,
        total: u64,
        request_id: &str,
    ) -> Result<(), GraphCallError> {
        let end = start + chunk.len() as u64 - 1;
        let request = self
            .http
            .put(upload_url.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{total}"),
            )
            .header("client-request-id", request_id)
            .body(chunk);
        self.execute("uploadChunk", request).await?;
        Ok(())
    }

    /// `POST /me/messages/{id}/send`: 202 when accepted.
    pub async fn send_draft(
        &self,
        token: &SecretString,
        draft_id: &str,
        request_id: &str,
    ) -> Result<(), GraphCallError> {
        let path = format!("messages/{}/send", encode_segment(draft_id));
        let request = self
            .http
            .post(self.url(&path))
            .header(header::CONTENT_LENGTH, 0);
        self.execute("sendDraft", authorized(request, token, request_id))
            .await?;
        Ok(())
    }

    /// `DELETE /me/messages/{id}`: removes a draft whose upload failed.
    pub async fn delete_draft(
        &self,
        token: &SecretString,
        draft_id: &str,
        request_id: &str,
    ) -> Result<(), GraphCallError> {
        let path = format!("messages/{}", encode_segment(draft_id));
        let request = self.http.delete(self.url(&path));
        self.execute("deleteDraft", authorized(request, token, request_id))
            .await?;
        Ok(())
    }

    pub(super) async fn execute(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GraphCallError> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                metrics::graph_request(endpoint, 0);
                return Err(GraphCallError::from_reqwest(error));
            }
        };
        let status = response.status();
        metrics::graph_request(endpoint, status.as_u16());
        if status.is_success() {
            return Ok(response);
        }
        Err(GraphCallError::Failed(failure_from(response).await))
    }
}

pub(super) fn authorized(
    request: reqwest::RequestBuilder,
    token: &SecretString,
    request_id: &str,
) -> reqwest::RequestBuilder {
    request
        .bearer_auth(token.expose_secret())
        .header("client-request-id", request_id)
        .header("return-client-request-id", "true")
}

pub(super) async fn parse<T: for<'de> Deserialize<'de>>(
    response: reqwest::Response,
) -> Result<T, GraphCallError> {
    let bytes = response
        .bytes()
        .await
        .map_err(GraphCallError::from_reqwest)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| GraphCallError::Ambiguous(format!("unexpected answer from Graph: {e}")))
}

async fn failure_from(response: reqwest::Response) -> GraphFailure {
    let status = response.status();
    let headers = response.headers().clone();
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header_text("retry-after").and_then(|value| parse_retry_after(&value));
    let body: GraphErrorBody = response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let inner = body.error.inner_error.clone().unwrap_or_default();
    GraphFailure {
        status: status.as_u16(),
        retry_after,
        request_id: header_text("request-id").or(inner.request_id),
        client_request_id: header_text("client-request-id").or(inner.client_request_id),
        error: body.error,
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Graph ids may contain `/`, `+` and `=`: encode them as one path segment.
fn encode_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Whether a status is one Graph asks to retry.
pub fn is_retryable(status: u16) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS.as_u16()
        || status == StatusCode::SERVICE_UNAVAILABLE.as_u16()
        || status == StatusCode::GATEWAY_TIMEOUT.as_u16()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let in_ten = std::time::SystemTime::now() + Duration::from_secs(10);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(in_ten)).unwrap();
        assert!(
            parsed <= Duration::from_secs(10) && parsed >= Duration::from_secs(8),
            "{parsed:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn ids_are_encoded_as_one_segment() {
        assert_eq!(encode_segment("AAMk/AG+x="), "AAMk%2FAG%2Bx%3D");
    }
}
