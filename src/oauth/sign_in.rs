//! Who signed in: the checks between Microsoft's answer to a sign-in and storing it. The
//! id_token must be issued to this app, for this tenant, to the mailbox's owner; the grant must
//! include Mail.Send and a refresh token.

use chrono::{DateTime, Utc};

use super::{CallbackOutcome, IdTokenClaims, IdentityClient, TokenGrant, normalize_scopes};
use crate::{domain::Mailbox, store::NewConnection, variables};

/// The checks between Microsoft's answer and storing it.
pub(super) fn verify(
    identity: &IdentityClient,
    now: DateTime<Utc>,
    mailbox: &Mailbox,
    grant: &TokenGrant,
) -> Result<NewConnection, CallbackOutcome> {
    let claims = grant
        .id_token
        .as_deref()
        .ok_or_else(|| "Microsoft returned no id_token".to_owned())
        .and_then(IdTokenClaims::decode)
        .map_err(|reason| {
            tracing::error!(reason, "id_token unusable");
            CallbackOutcome::failed(
                502,
                "Microsoft's answer did not say who signed in.",
                format!(
                    "{reason}; the openid scope must be granted. Call Connect again for {mailbox}."
                ),
            )
        })?;
    if claims.aud != identity.client_id().as_str() {
        tracing::error!("id_token audience is not this app; refused");
        return Err(CallbackOutcome::failed(
            400,
            "The sign-in was issued to a different application.",
            format!("Check {}, then call Connect again.", variables::CLIENT_ID),
        ));
    }
    let tenant = identity.tenant();
    if tenant.is_guid()
        && !claims
            .tid
            .as_deref()
            .is_some_and(|tid| tid.eq_ignore_ascii_case(tenant.as_str()))
    {
        tracing::error!("id_token tenant is not the configured tenant; refused");
        return Err(CallbackOutcome::failed(
            400,
            "The account signed in belongs to a different Microsoft 365 tenant.",
            format!("Sign in with an account of the tenant that owns {mailbox}."),
        ));
    }
    let owned = [
        claims.preferred_username.as_deref(),
        claims.email.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|account| mailbox.is_owned_by(account));
    if !owned {
        let signed_in = claims.account().unwrap_or("an unnamed account");
        tracing::warn!(
            mailbox_domain = mailbox.domain(),
            "sign-in by an account that does not own the mailbox refused"
        );
        return Err(CallbackOutcome::failed(
            403,
            format!("You signed in as {signed_in}, but this link connects {mailbox}."),
            format!(
                "You signed in as {signed_in}, but this link connects {mailbox}. Sign out of \
                 Microsoft (or use a private window), open the link again and sign in as {mailbox}."
            ),
        ));
    }
    let granted = match &grant.scopes {
        Some(scopes) => normalize_scopes(scopes),
        // RFC 6749 5.1: no scope in the response means the requested scope was granted.
        None => normalize_scopes(&identity.scopes().request_scopes()),
    };
    if !granted.iter().any(|s| s.eq_ignore_ascii_case("Mail.Send")) {
        return Err(missing_permission(
            mailbox,
            "Mail.Send",
            "the app cannot send mail without it",
        ));
    }
    let Some(refresh_token) = grant.refresh_token.clone() else {
        return Err(missing_permission(
            mailbox,
            "offline_access",
            "without it Microsoft returns no refresh token and the connection would end within the hour",
        ));
    };
    let mut scopes = granted;
    if !scopes.iter().any(|s| s == "offline_access") {
        scopes.push("offline_access".into());
    }
    Ok(NewConnection {
        mailbox: mailbox.clone(),
        account: claims.account().unwrap_or(mailbox.as_str()).to_owned(),
        object_id: claims.oid.clone(),
        tenant_id: claims.tid.clone(),
        scopes,
        access_token: grant.access_token.clone(),
        access_token_expires_at: now + grant.expires_in,
        refresh_token,
    })
}

fn missing_permission(mailbox: &Mailbox, permission: &str, why: &str) -> CallbackOutcome {
    tracing::warn!(
        mailbox_domain = mailbox.domain(),
        permission,
        "granted scopes lack a permission"
    );
    CallbackOutcome::failed(
        400,
        format!("Microsoft did not grant the {permission} permission."),
        format!(
            "Add the delegated Microsoft Graph permission {permission} to the app registration \
             (API permissions → Add a permission → Microsoft Graph → Delegated), then call Connect \
             again for {mailbox} with force_consent: {why}."
        ),
    )
}
