//! `graph-mailer check`: the set-up checklist, automated.
//!
//! Walks the checkpoints an administrator would otherwise tick by hand (app registration IDs,
//! client secret and its expiry, redirect URI, tenant, store, each mailbox's consent and refresh
//! token, a test mail) and prints a pass/fail line for each with the fix. Exit code 0 only when
//! every check passes.

use std::{process::ExitCode, sync::Arc};

use secrecy::ExposeSecret;
use serde::Serialize;

use crate::{
    clock::{SharedClock, SystemClock},
    domain::{Mailbox, MessageParts, OutgoingMessage, Recipient},
    mailer::{Mailer, SecretExpiry, SendRequest},
    oauth::{ClientSecretProvider, IdentityClient, RefreshRetry},
    settings::{
        AzureSettings, ClientSecretSource, KeySource, Settings, TransportKind, azure::is_guid,
    },
    startup::{Microsoft, wire_microsoft},
    store::{ConnectionState, Store, TokenCipher},
};

/// What `check` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub json: bool,
    /// Send the set-up test mail to this address.
    pub send_test: Option<String>,
    /// Send it as this mailbox (default: the only connected one).
    pub from: Option<String>,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
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
    let azure = match (&settings.azure, settings.transport) {
        (Some(azure), TransportKind::Graph) => {
            checks.pass(
                "transport",
                "graph: mail is delivered through Microsoft Graph",
            );
            Some(azure)
        }
        _ => {
            checks.pass(
                "transport",
                "sandbox: messages are written as .eml files, nothing is delivered",
            );
            None
        }
    };
    match azure {
        Some(azure) => {
            registration_checks(settings, azure, clock.as_ref(), checks);
            authority_check(settings, azure, checks).await;
        }
        None => checks.skip("app registration", "no tenant configured (sandbox)"),
    }
    let Some(store) = store_checks(settings, checks).await else {
        return;
    };
    let Some(azure) = azure else {
        if options.send_test.is_some() {
            send_test(settings, &store, None, options, clock, checks).await;
        }
        return;
    };
    let microsoft = match wire_microsoft(settings, azure, &store, &clock, RefreshRetry::default()) {
        Ok(microsoft) => microsoft,
        Err(error) => {
            checks.fail(
                "client secret",
                format!("{error:#}"),
                "fix GRAPH_MAILER_CLIENT_SECRET(_FILE)",
            );
            return;
        }
    };
    mailbox_checks(azure, &store, &microsoft, clock.as_ref(), checks).await;
    if options.send_test.is_some() {
        send_test(settings, &store, Some(microsoft), options, clock, checks).await;
    }
}

fn registration_checks(
    settings: &Settings,
    azure: &AzureSettings,
    clock: &dyn crate::clock::Clock,
    checks: &mut Checks,
) {
    if azure.tenant.is_guid() {
        checks.pass("tenant ID", format!("{} is a GUID", azure.tenant));
    } else {
        checks.pass(
            "tenant ID",
            format!(
                "{} is a domain (the tenant's GUID is preferred)",
                azure.tenant
            ),
        );
    }
    checks.pass("client ID", format!("{} is a GUID", azure.client_id));
    match ClientSecretProvider::load(&azure.client_secret) {
        Ok(secret) if is_guid(secret.current().expose_secret().trim()) => checks.fail(
            "client secret",
            "present, but it looks like a GUID: probably the secret's ID, not its Value",
            "copy the Value column of \"Certificates & secrets\" (shown once, right after creation)",
        ),
        Ok(_) => checks.pass(
            "client secret",
            match &azure.client_secret {
                ClientSecretSource::Value(_) => "present (GRAPH_MAILER_CLIENT_SECRET)".to_owned(),
                ClientSecretSource::File(path) => format!("present in {}", path.display()),
            },
        ),
        Err(error) => checks.fail("client secret", error, "put the secret's Value in GRAPH_MAILER_CLIENT_SECRET or its file"),
    }
    let expiry = SecretExpiry {
        expires_at: azure.client_secret_expires_at,
        warning: azure.client_secret_warning,
    };
    match (azure.client_secret_expires_at, expiry.warning(clock.now())) {
        (None, _) => checks.fail(
            "client secret expiry",
            "unknown",
            "set GRAPH_MAILER_CLIENT_SECRET_EXPIRES_AT to the expiry shown under \"Certificates & secrets\", so the service warns before it passes",
        ),
        (Some(_), Some(warning)) => checks.fail("client secret expiry", warning, "create a new client secret and rotate it"),
        (Some(at), None) => checks.pass("client secret expiry", format!("expires {}", at.format("%Y-%m-%d"))),
    }
    let redirect = settings.public_url.redirect_uri();
    if settings.public_url.accepted_by_microsoft() {
        checks.pass(
            "redirect URI",
            format!("register exactly {redirect} as a Web redirect URI"),
        );
    } else {
        checks.fail(
            "redirect URI",
            format!("{redirect} is plain http outside localhost; Microsoft refuses it"),
            "set GRAPH_MAILER_PUBLIC_URL to the https address the service is reached at",
        );
    }
}

/// The tenant's discovery document: the authority answers and the tenant exists.
async fn authority_check(settings: &Settings, azure: &AzureSettings, checks: &mut Checks) {
    let identity = match (
        ClientSecretProvider::load(&azure.client_secret),
        IdentityClient::http_client(),
    ) {
        (Ok(secret), Ok(http)) => IdentityClient::new(
            http,
            settings.authority_url.clone(),
            azure,
            settings.public_url.redirect_uri(),
            Arc::new(secret),
        ),
        _ => return checks.skip("authority", "needs a readable client secret"),
    };
    match identity.discover().await {
        Ok(issuer) => checks.pass("authority", format!("tenant {} exists (issuer {issuer})", azure.tenant)),
        Err(error) => checks.fail(
            "authority",
            error,
            "check GRAPH_MAILER_TENANT_ID (the Directory (tenant) ID) and that GRAPH_MAILER_AUTHORITY_URL is reachable",
        ),
    }
}

async fn store_checks(settings: &Settings, checks: &mut Checks) -> Option<Store> {
    if let KeySource::Generated(path) = &settings.encryption_key
        && !path.exists()
    {
        checks.pass(
            "store",
            "not created yet: the service creates its database and encryption key on first start",
        );
        return None;
    }
    let cipher = match TokenCipher::load(&settings.encryption_key) {
        Ok((cipher, _)) => cipher,
        Err(error) => {
            checks.fail(
                "encryption key",
                error.to_string(),
                "set GRAPH_MAILER_ENCRYPTION_KEY(_FILE) to the store's key",
            );
            return None;
        }
    };
    match Store::open_without_migrating(&settings.database_url, cipher).await {
        Ok((store, 0)) => {
            checks.pass(
                "store",
                format!(
                    "{} opens, migrations current, encryption key matches",
                    settings.database_url.redacted()
                ),
            );
            Some(store)
        }
        Ok((_, pending)) => {
            checks.fail(
                "store",
                format!("{pending} migration(s) not applied"),
                "start the service once (it migrates at start-up)",
            );
            None
        }
        Err(error) => {
            checks.fail(
                "store",
                error.to_string(),
                "check GRAPH_MAILER_DATABASE_URL and that the database is running",
            );
            None
        }
    }
}

async fn mailbox_checks(
    azure: &AzureSettings,
    store: &Store,
    microsoft: &Microsoft,
    clock: &dyn crate::clock::Clock,
    checks: &mut Checks,
) {
    let records = match store.mailboxes(clock.now()).await {
        Ok(records) => records,
        Err(error) => {
            checks.fail("mailboxes", error.to_string(), "check the store");
            return;
        }
    };
    if records.is_empty() {
        checks.fail(
            "mailboxes",
            "no mailbox is connected",
            "call Connect for the mailbox to send as and have its owner sign in",
        );
        return;
    }
    let mut required = vec!["Mail.Send", "offline_access"];
    if azure.scopes.includes("Mail.ReadWrite") {
        required.push("Mail.ReadWrite");
    }
    for record in records {
        let name = |what: &str| format!("{}: {what}", record.mailbox);
        match record.state {
            ConnectionState::Connected => checks.pass(
                name("connected"),
                format!("as {}", record.account.as_deref().unwrap_or("?")),
            ),
            ConnectionState::ReauthorizationRequired => {
                checks.fail(
                    name("connected"),
                    record.last_error.clone().unwrap_or_default(),
                    format!("call Connect again for {}", record.mailbox),
                );
                continue;
            }
            ConnectionState::Pending | ConnectionState::NotConnected => {
                checks.fail(
                    name("connected"),
                    record.state.label(),
                    format!(
                        "call Connect for {} and have its owner sign in",
                        record.mailbox
                    ),
                );
                continue;
            }
        }
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|scope| !record.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope)))
            .collect();
        if missing.is_empty() {
            checks.pass(
                name("permissions"),
                format!("granted {}", record.scopes.join(" ")),
            );
        } else {
            checks.fail(
                name("permissions"),
                format!("missing {}", missing.join(", ")),
                format!("add the delegated permission(s) to the app registration, then call Connect with force_consent for {}", record.mailbox),
            );
        }
        match microsoft.tokens.refresh_now(&record.mailbox).await {
            Ok(_) => checks.pass(name("refresh token"), "Microsoft issued a new token"),
            Err(error) => checks.fail(
                name("refresh token"),
                error.to_string(),
                "see the message; most need Connect again or a new client secret",
            ),
        }
    }
}

async fn send_test(
    settings: &Settings,
    store: &Store,
    microsoft: Option<Microsoft>,
    options: &Options,
    clock: SharedClock,
    checks: &mut Checks,
) {
    let Some(to) = &options.send_test else { return };
    let recipient = match Recipient::parse("--send-test", to, "") {
        Ok(recipient) => recipient,
        Err(error) => return checks.fail("test mail", error.to_string(), "give an email address"),
    };
    let from = match options
        .from
        .as_deref()
        .map(|f| Mailbox::parse("--from", f))
        .transpose()
    {
        Ok(from) => from,
        Err(error) => {
            return checks.fail(
                "test mail",
                error.to_string(),
                "give the mailbox to send as",
            );
        }
    };
    let now = clock.now();
    let subject = format!("graph-mailer test – {}", now.format("%Y-%m-%d %H:%M UTC"));
    let message = OutgoingMessage::new(
        MessageParts {
            to: vec![recipient],
            subject: subject.clone(),
            text_body: format!(
                "This is a test message from graph-mailer {} sent by `graph-mailer check --send-test`.\nIf you can read it, the set-up works.",
                crate::VERSION
            ),
            save_to_sent_items: true,
            ..Default::default()
        },
        settings.max_message_bytes,
    );
    let message = match message {
        Ok(message) => message,
        Err(error) => return checks.fail("test mail", error.to_string(), "check --send-test"),
    };
    let (transport, connect) = match microsoft {
        Some(m) => (m.transport, Some(m.connect)),
        None => (
            crate::transport::Transport::Sandbox(crate::transport::SandboxTransport::new(
                &settings.data_dir,
                clock.clone(),
            )),
            None,
        ),
    };
    let from = match (from, settings.transport) {
        (Some(from), _) => Some(from),
        (None, TransportKind::Sandbox) => {
            Mailbox::parse("--from", "graph-mailer-check@localhost").ok()
        }
        (None, TransportKind::Graph) => None,
    };
    let mailer = Mailer::new(
        store.clone(),
        clock,
        transport,
        connect,
        SecretExpiry {
            expires_at: None,
            warning: chrono::Duration::days(30),
        },
    );
    let request = SendRequest {
        mailbox: from,
        message,
        idempotency_key: None,
        request_hash: String::new(),
    };
    match mailer.send(request).await {
        Ok(receipt) => checks.pass(
            "test mail",
            format!(
                "\"{subject}\" accepted for {to} (message_id {})",
                receipt.message_id
            ),
        ),
        Err(error) => checks.fail("test mail", error.to_string(), "see the message"),
    }
}
