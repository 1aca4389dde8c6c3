//! Generates the gRPC server, client and file descriptor set from `proto/`.
//!
//! protoc comes from the `protoc-bin-vendored` crate unless `PROTOC` is set, so a fresh machine
//! (or a Docker builder stage) builds without installing anything.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded at this point; nothing reads the
        // environment concurrently.
        unsafe { env::set_var("PROTOC", protoc) };
    }
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    tonic_prost_build::configure()
        // The RPC named `Connect` clashes with the generated client's `connect` constructor;
        // clients are built with `MailerClient::new(channel)` instead.
        .build_transport(false)
        // Prost's codec with a count of each request's lists before decoding (grpc/codec.rs).
        .codec_path("crate::grpc::codec::CheckedCodec")
        // Attachment bytes are sliced into upload chunks without copying.
        .bytes(".graphmailer.v1.Attachment.content")
        // Deterministic encoding, so a request's hash (idempotency) does not depend on map order.
        .btree_map(".graphmailer.v1.SendMailRequest.headers")
        .btree_map(".graphmailer.v1.BulkRecipient.variables")
        .file_descriptor_set_path(out_dir.join("graphmailer_descriptor.bin"))
        .compile_protos(
            &[PathBuf::from("proto/graphmailer/v1/mailer.proto")],
            &[PathBuf::from("proto"), well_known],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
