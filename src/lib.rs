//! graph-mailer: send email as Microsoft 365 mailboxes through Microsoft Graph, over gRPC.
//!
//! A mailbox owner authorizes the service once through an OAuth 2.0 authorization-code flow
//! (`Connect`); the service keeps the delegated tokens encrypted in its store, refreshes them
//! before they expire, and every internal platform sends mail with `SendMail` instead of SMTP
//! basic auth. Without a tenant the service runs the `sandbox` transport and writes `.eml`
//! files, so callers can develop against it on a laptop.
//!
//! # Layout
//!
//! - [`settings`]: typed, layered configuration (defaults, TOML file, environment) and its
//!   validation.
//! - [`domain`]: parse-don't-validate types for everything a caller sends: addresses, headers,
//!   attachments, whole messages, idempotency keys.
//! - [`mime`]: the one RFC 5322 builder, shared by the sandbox and Graph's MIME form.
//! - [`store`]: SQLite or PostgreSQL persistence of connections, pending sign-ins and
//!   idempotency keys, with tokens encrypted at rest.
//! - [`oauth`]: the Microsoft identity platform: authorization URLs, code redemption, the
//!   verified sign-in, the refresh engine and the client secret's life.
//! - [`transport`]: the [`transport::Transport`] trait every delivery route implements, its
//!   error type, and the sandbox.
//! - [`graph`]: Microsoft Graph: the HTTP client, payloads, error table, and the Graph
//!   transport (retries, concurrency limit, upload sessions).
//! - [`retry`]: the one backoff policy, shared by Graph calls and token refreshes.
//! - [`requests`]: wire requests parsed into domain types (by the RPC layer and the outbox).
//! - [`postoffice`]: the application core behind every RPC: Connect, SendMail (idempotency,
//!   counters), Status, Disconnect.
//! - [`outbox`]: QueueMail and SendBulk: durable acceptance (group commit), paced delivery
//!   workers shared by replicas, retries, reconciliation, events, retention.
//! - [`upkeep`]: background chores: purging, state gauges, secret-expiry warnings.
//! - [`grpc`]: the tonic service, health, reflection and the one mapping of errors to statuses.
//! - [`health`]: readiness, told alike to gRPC health checks and `/readyz`.
//! - [`http`]: the HTTP side: OAuth callback, liveness, readiness, metrics.
//! - [`admin`]: the admin page on the HTTP listener: sign-in, overview, mailboxes, outbox.
//! - [`periodic`]: the timer loop every background task runs on.
//! - [`wiring`]: the parts a service (and `check`) is wired from: store, Microsoft side, callers.
//! - [`startup`]: [`startup::Application`], which binds listeners and serves until shutdown.
//! - [`check`]: the `graph-mailer check` command.

pub(crate) mod admin;
pub mod audit;
pub mod callers;
pub mod check;
pub mod cli;
pub mod clock;
pub mod domain;
pub mod graph;
pub mod grpc;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod metrics;
pub mod mime;
pub mod oauth;
pub(crate) mod outbox;
pub(crate) mod periodic;
pub(crate) mod postoffice;
pub mod proto;
pub mod requests;
pub mod retry;
pub mod settings;
pub(crate) mod shutdown;
pub mod startup;
pub mod store;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod upkeep;
pub mod variables;
pub(crate) mod wiring;

/// The service's version, reported by Status and the build-info metric.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
