//! `graph-mailer check`: the set-up checklist, automated.
//!
//! Walks the checkpoints an administrator would otherwise tick by hand (app registration IDs,
//! client secret and its expiry, redirect URI, tenant, store, each mailbox's consent and refresh
//! token, a test mail) and prints a pass/fail line for each with the fix. Exit code 0 only when
//! every check passes.

mod access;
mod microsoft;
mod store;
pub(crate) mod test_mail;

use std::{process::ExitCode, sync::Arc};

use serde::Serialize;

use crate::{
    audit::AuditLog,
    clock::{SharedClock, SystemClock},
    oauth::REFRESH_BACKOFF,
    settings::Settings,
    variables,
    wiring::wire_microsoft,
};

/// What `check` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub json: bool,
    /// Send the set-up test mail to this address.
    pub send_test: Option<String>,
    /// Send it as this mailbox (default: the only connected one).
    pub from: Option<String>,
    /// Leave each mailbox's tokens alone (the admin page: the running service refreshes them,
    /// and a second refresher would race it).
    pub skip_token_refresh: bool,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Works, but not as configured (a permission the mailbox has not granted): shown, and
    /// not counted as a failure.
    Warn,
    /// Not applicable here (for example Microsoft checks in sandbox mode).
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<CheckResult>,
}

struct Checks(Vec<CheckResult>);

impl Checks {
    fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Outcome::Pass, detail, None::<String>);
    }
    fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Outcome::Fail, detail, Some(fix));
    }
    fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Outcome::Warn, detail, Some(fix));
    }
    fn skip(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Outcome::Skip, detail, None::<String>);
    }
    fn push(
        &mut self,
        name: impl Into<String>,
        outcome: Outcome,
        detail: impl Into<String>,
        fix: Option<impl Into<String>>,
    ) {
        self.0.push(CheckResult {
            name: name.into(),
            outcome,
            detail: detail.into(),
            fix: fix.map(Into::into),
        });
    }
}

/// Runs the checks and prints the report; exit 0 only when all pass.
pub async fn run(settings: Result<Settings, String>, options: Options) -> ExitCode {
    let report = checks(settings, &options, Arc::new(SystemClock)).await;
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_text(&report);
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_text(report: &Report) {
    for check in &report.checks {
        let label = match check.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Warn => "WARN",
            Outcome::Skip => "SKIP",
        };
        println!("{label}  {:<32} {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            println!("      {:<32} fix: {fix}", "");
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .count();
    if failed == 0 {
        println!("\nAll checks passed.");
    } else {
        println!("\n{failed} of {} checks failed.", report.checks.len());
    }
}

/// Runs every check.
pub async fn checks(
    settings: Result<Settings, String>,
    options: &Options,
    clock: SharedClock,
) -> Report {
    let mut checks = Checks(Vec::new());
    match settings {
        Ok(settings) => run_checks(&settings, options, clock, &mut checks).await,
        Err(errors) => {
            for error in errors.lines() {
                checks.fail(
                    "settings",
                    error,
                    "correct the variable as the message says",
                );
            }
        }
    }
    let ok = checks.0.iter().all(|c| c.outcome != Outcome::Fail);
    Report {
        ok,
        checks: checks.0,
    }
}

async fn run_checks(
    settings: &Settings,
    options: &Options,
    clock: SharedClock,
    checks: &mut Checks,
) {
    checks.pass("settings", "every setting parses");
    for warning in &settings.warnings {
        checks.fail("settings warning", warning.clone(), "see the warning");
    }
    let azure = match &settings.azure {
        Some(azure) => {
            checks.pass(
                "transport",
                "graph: mail is delivered through Microsoft Graph",
            );
            Some(azure)
        }
        None => {
            checks.pass(
                "transport",
                "sandbox: messages are written as .eml files, nothing is delivered",
            );
            None
        }
    };
    match azure {
        Some(azure) => {
            microsoft::registration_checks(settings, azure, clock.as_ref(), checks);
            microsoft::authority_check(settings, azure, checks).await;
        }
        None => checks.skip("app registration", "no tenant configured (sandbox)"),
    }
    access::access_checks(settings, checks);
    let Some(store) = store::store_checks(settings, checks).await else {
        return;
    };
    let Some(azure) = azure else {
        if options.send_test.is_some() {
            test_mail::send_test(settings, &store, None, options, clock, checks).await;
        }
        return;
    };
    let audit = Arc::new(AuditLog::off());
    let microsoft = match wire_microsoft(settings, azure, &store, &clock, REFRESH_BACKOFF, audit) {
        Ok(microsoft) => microsoft,
        Err(error) => {
            checks.fail(
                "client secret",
                format!("{error:#}"),
                format!("fix {}(_FILE)", variables::CLIENT_SECRET),
            );
            return;
        }
    };
    microsoft::mailbox_checks(
        azure,
        &settings.outbox.limits,
        &store,
        &microsoft,
        clock.as_ref(),
        options.skip_token_refresh,
        checks,
    )
    .await;
    if options.send_test.is_some() {
        test_mail::send_test(settings, &store, Some(microsoft), options, clock, checks).await;
    }
}
