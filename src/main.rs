//! The `graph-mailer` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

/// mimalloc: a request allocates and frees many small buffers across threads, where it is
/// markedly cheaper than the system allocator (see the README's benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    graph_mailer::cli::main()
}
