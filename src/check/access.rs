//! The access checkpoints: the callers file parses (and who is in it), and the TLS files make
//! a working server configuration.

use std::sync::Arc;

use super::Checks;
use crate::{
    audit::AuditLog, callers::CallerRegistry, settings::Settings, tls::ReloadingTls, variables,
};

pub(super) fn access_checks(settings: &Settings, checks: &mut Checks) {
    match &settings.access.callers_file {
        Some(path) => match CallerRegistry::load(path.clone(), Arc::new(AuditLog::off())) {
            Ok(registry) => {
                let callers = registry.callers();
                checks.pass(
                    "callers",
                    format!("{} callers in {}", callers.len(), path.display()),
                );
            }
            Err(problem) => checks.fail(
                "callers",
                problem,
                "correct the entries as the message says (graph-mailer new-key prints valid ones)",
            ),
        },
        None if settings.azure.is_none() => checks.skip(
            "callers",
            format!(
                "no {}: the sandbox is open to anyone who reaches it",
                variables::CALLERS_FILE
            ),
        ),
        // Open graph mode is reported as a settings warning.
        None => {}
    }
    match &settings.tls {
        Some(tls) => match ReloadingTls::load(tls) {
            Ok(_) => checks.pass(
                "TLS",
                format!(
                    "{} and its key load{}",
                    tls.cert_file.display(),
                    if tls.client_ca_file.is_some() {
                        "; gRPC callers need a client certificate"
                    } else {
                        ""
                    }
                ),
            ),
            Err(problem) => checks.fail("TLS", problem, "fix the TLS files"),
        },
        None => checks.skip(
            "TLS",
            format!(
                "plaintext: set {} and {} to serve TLS",
                variables::TLS_CERT_FILE,
                variables::TLS_KEY_FILE
            ),
        ),
    }
}
