//! The Python and Node client examples, run against this build's binary, so `cargo test` is the
//! one command that runs every test. Each script installs its pinned packages itself.

use std::process::Command;

fn run_client_tests(script: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(format!("{root}/{script}"))
        .env("GRAPH_MAILER_BIN", env!("CARGO_BIN_EXE_graph-mailer"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e} (it needs bash; see the README)"));
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_python_client_works_against_the_service() {
    run_client_tests("clients/python/test.sh");
}

#[test]
fn the_node_client_works_against_the_service() {
    run_client_tests("clients/node/test.sh");
}
