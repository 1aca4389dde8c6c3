//! Black-box tests: the real service on port 0, called through a generated gRPC client, with
//! Microsoft replaced by faithful fakes over real HTTP on loopback.

mod support;

mod admin_http;
mod admin_page;
mod api;
mod architecture;
mod callers;
mod clients;
mod connect;
mod deploy;
mod hardening;
mod idempotency;
mod operations;
mod outbox;
mod outbox_crash;
mod postgres_tls;
mod process;
mod properties;
mod real_graph;
mod real_identity;
mod refresh;
mod send;
mod tls;
