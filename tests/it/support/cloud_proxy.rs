//! An HTTP proxy that plays the Internet for a national-cloud test: requests for a cloud's
//! hostnames (`login.microsoftonline.us`, `graph.microsoft.us`) go to the fakes; anything else
//! goes where it is addressed. The service finds it through `HTTP_PROXY`, as it would find a
//! company proxy, so it runs with the cloud's real URLs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

/// The running proxy.
#[derive(Clone)]
pub struct CloudProxy {
    /// `http://127.0.0.1:port`, for `HTTP_PROXY`.
    pub url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct Routes {
    hosts: Arc<HashMap<String, String>>,
    seen: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl CloudProxy {
    /// Starts a proxy sending each `(host, base URL)` host's requests to its base URL.
    pub async fn start(routes: &[(&str, String)]) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Routes {
            hosts: Arc::new(
                routes
                    .iter()
                    .map(|(host, base)| ((*host).to_owned(), base.clone()))
                    .collect(),
            ),
            seen: seen.clone(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        let app = Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen }
    }

    /// Every host a request was addressed to, in order.
    pub fn hosts_seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn forward(State(routes): State<Routes>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(authority) = parts.uri.authority().map(|a| a.to_string()) else {
        return (StatusCode::BAD_REQUEST, "not a proxy request").into_response();
    };
    let host = parts.uri.host().unwrap_or_default().to_owned();
    routes.seen.lock().unwrap().push(host.clone());
    let base = routes
        .hosts
        .get(&host)
        .cloned()
        .unwrap_or_else(|| format!("http://{authority}"));
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let Ok(body) = to_bytes(body, 200 * 1024 * 1024).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        let name_text = name.as_str();
        if name_text != "host" && !name_text.starts_with("proxy-") {
            headers.append(name.clone(), value.clone());
        }
    }
    let answer = routes
        .client
        .request(parts.method, format!("{base}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(answer) = answer else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name.as_str() != "transfer-encoding" && name.as_str() != "content-length" {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}
