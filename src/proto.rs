//! The generated gRPC types of `proto/graphmailer/v1/mailer.proto`, and the file descriptor set
//! that reflection serves.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("graphmailer.v1");

/// The encoded file descriptor set of the public API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("graphmailer_descriptor");

/// The fully qualified service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "graphmailer.v1.Mailer";
