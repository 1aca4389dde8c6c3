//! Black-box tests: the real service on port 0, called through a generated gRPC client, with
//! Microsoft replaced by faithful fakes over real HTTP on loopback.

mod support;

mod api;
mod architecture;
mod clients;
mod connect;
mod deploy;
mod idempotency;
mod operations;
mod process;
mod refresh;
mod send;
