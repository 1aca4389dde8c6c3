//! The checkpoints of the Microsoft side: the app registration, the client secret and its
//! expiry, the redirect URI, the tenant, and each mailbox's connection, consent and refresh
//! token.

use std::sync::Arc;

use secrecy::ExposeSecret;

use super::Checks;
use crate::{
    clock::Clock,
    domain::Mailbox,
    oauth::{ClientSecretProvider, IdentityClient, SecretExpiry},
    settings::{AzureSettings, ClientSecretSource, PacingLimits, Settings, azure::is_guid},
    store::{ConnectionState, MailboxRecord, Store},
    variables,
    wiring::Microsoft,
};

pub(super) fn registration_checks(
    settings: &Settings,
    azure: &AzureSettings,
    clock: &dyn Clock,
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
                ClientSecretSource::Value(_) => format!("present ({})", variables::CLIENT_SECRET),
                ClientSecretSource::File(path) => format!("present in {}", path.display()),
            },
        ),
        Err(error) => checks.fail("client secret", error, format!("put the secret's Value in {} or its file", variables::CLIENT_SECRET)),
    }
    let expiry = SecretExpiry {
        expires_at: azure.client_secret_expires_at,
        warning: azure.client_secret_warning,
    };
    match (azure.client_secret_expires_at, expiry.warning(clock.now())) {
        (None, _) => checks.fail(
            "client secret expiry",
            "unknown",
            format!("set {} to the expiry shown under \"Certificates & secrets\", so the service warns before it passes", variables::CLIENT_SECRET_EXPIRES_AT),
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
            format!(
                "set {} to the https address the service is reached at",
                variables::PUBLIC_URL
            ),
        );
    }
}

/// The tenant's discovery document: the authority answers and the tenant exists.
pub(super) async fn authority_check(
    settings: &Settings,
    azure: &AzureSettings,
    checks: &mut Checks,
) {
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
        Ok(issuer) => checks.pass(
            "authority",
            format!("tenant {} exists (issuer {issuer})", azure.tenant),
        ),
        Err(error) => checks.fail(
            "authority",
            error,
            format!(
                "check {} (the Directory (tenant) ID) and that {} is reachable",
                variables::TENANT_ID,
                variables::AUTHORITY_URL
            ),
        ),
    }
}

pub(super) async fn mailbox_checks(
    azure: &AzureSettings,
    limits: &PacingLimits,
    store: &Store,
    microsoft: &Microsoft,
    clock: &dyn Clock,
    skip_token_refresh: bool,
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
                    record.state.as_str(),
                    format!(
                        "call Connect for {} and have its owner sign in",
                        record.mailbox
                    ),
                );
                continue;
            }
        }
        permission_check(azure, &record, checks);
        queue_check(store, limits, &record.mailbox, clock.now(), checks).await;
        match &record.sending_address {
            Some(address) => checks.pass(
                name("sending address"),
                format!("mail goes out from {address}"),
            ),
            None => checks.warn(
                name("sending address"),
                format!(
                    "unknown (connected before graph-mailer read it); mail goes out as {}",
                    record.mailbox
                ),
                format!(
                    "call Connect again for {} so graph-mailer reads the account's primary address",
                    record.mailbox
                ),
            ),
        }
        if skip_token_refresh {
            let last = record.last_refreshed_at.map(|at| at.to_rfc3339());
            checks.pass(
                name("refresh token"),
                format!("last refreshed {}", last.as_deref().unwrap_or("at Connect")),
            );
            continue;
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

/// Granted against configured permissions: without Mail.Send nothing is sent (a failure); a
/// configured permission not granted is a warning, since everything else still works.
fn permission_check(azure: &AzureSettings, record: &MailboxRecord, checks: &mut Checks) {
    let name = format!("{}: permissions", record.mailbox);
    let granted = record.scopes.join(" ");
    let lacks = |scope: &str| !record.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope));
    let fix = format!(
        "add the delegated permission(s) to the app registration, then call Connect with \
         force_consent for {}",
        record.mailbox
    );
    let essential: Vec<&str> = ["Mail.Send", "offline_access"]
        .into_iter()
        .filter(|scope| lacks(scope))
        .collect();
    if !essential.is_empty() {
        checks.fail(name, format!("missing {}", essential.join(", ")), fix);
        return;
    }
    let missing = azure.scopes.missing_from(&record.scopes);
    if missing.is_empty() {
        checks.pass(name, format!("granted {granted}"));
    } else {
        let what = missing
            .iter()
            .map(|scope| format!("configured {scope} is not granted"))
            .collect::<Vec<_>>()
            .join("; ");
        checks.warn(name, format!("{what} (granted {granted})"), fix);
    }
}

/// The mailbox's outbox queue and how much of its limits it used.
async fn queue_check(
    store: &Store,
    limits: &PacingLimits,
    mailbox: &Mailbox,
    now: chrono::DateTime<chrono::Utc>,
    checks: &mut Checks,
) {
    let name = format!("{mailbox}: queue");
    let usage = match store.queue_usage(mailbox, now).await {
        Ok(usage) => usage,
        Err(error) => {
            checks.fail(name, error.to_string(), "check the store");
            return;
        }
    };
    let mut detail = format!(
        "{} queued; {} of {} messages in the last minute; {} of {} recipients in 24 h",
        usage.queued,
        usage.sent_last_minute,
        limits.messages_per_minute,
        usage.recipients_last_24h,
        limits.recipients_per_day
    );
    if let Some(oldest) = usage.oldest_queued_at {
        detail.push_str(&format!(
            "; the oldest waits since {}",
            oldest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    match (usage.paused_until, usage.pause_reason) {
        (Some(until), reason) => checks.warn(
            name,
            format!(
                "{detail}; paused until {} ({})",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                reason.unwrap_or_default()
            ),
            "the pause ends on its own; if Exchange stopped the mailbox, check its sending \
             limits or restriction in the Microsoft 365 admin center",
        ),
        (None, _) => checks.pass(name, detail),
    }
}
