//! Who signed in: the checks between Microsoft's answer to a sign-in and storing it.
//!
//! - The id_token must be issued to this app (`aud`), by this tenant's issuer (`iss` =
//!   `{authority}/{tid}/v2.0`) for the configured tenant (`tid`).
//! - The grant must include Mail.Send, User.Read and a refresh token.
//! - Who signed in is read from Graph (`/me`), not from the id_token's mutable names: the
//!   mailbox must be the user's UPN, primary SMTP address or one of its aliases, and the
//!   directory's object id must be the id_token's `oid`.

use chrono::{DateTime, Utc};

use super::{
    CallbackOutcome, Directory, DirectoryError, DirectoryUser, IdTokenClaims, IdentityClient,
    TokenGrant,
    id_token::{OriginProblem, verify_origin},
};
use crate::{
    domain::Mailbox,
    settings::scopes::PROFILE_PERMISSION,
    store::{NewConnection, Store},
    variables,
};

/// The checks between Microsoft's answer and storing it.
pub(super) async fn verify(
    identity: &IdentityClient,
    directory: &dyn Directory,
    now: DateTime<Utc>,
    mailbox: &Mailbox,
    grant: &TokenGrant,
) -> Result<NewConnection, CallbackOutcome> {
    let claims = issued_here(identity, mailbox, grant)?;
    let granted = match &grant.scopes {
        Some(scopes) => identity.scopes().short_names(scopes),
        // RFC 6749 5.1: no scope in the response means the requested scope was granted.
        None => identity
            .scopes()
            .short_names(&identity.scopes().request_scopes()),
    };
    let has = |name: &str| granted.iter().any(|s| s.eq_ignore_ascii_case(name));
    if !has("Mail.Send") {
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
    let user = signed_in_user(directory, mailbox, grant).await?;
    if claims
        .oid
        .as_deref()
        .is_some_and(|oid| oid != user.object_id)
    {
        tracing::error!("id_token oid and Graph's user id differ; refused");
        return Err(CallbackOutcome::failed(
            502,
            "Microsoft's answers disagree about who signed in.",
            format!("Call Connect again for {mailbox}."),
        ));
    }
    if !user.answers_to(mailbox.as_str()) {
        let signed_in = &user.user_principal_name;
        tracing::warn!(
            mailbox_domain = mailbox.domain(),
            "sign-in by an account that does not own the mailbox refused"
        );
        return Err(CallbackOutcome::failed(
            403,
            format!("You signed in as {signed_in}, but this link connects {mailbox}."),
            format!(
                "You signed in as {signed_in}, which is neither {mailbox} nor one of its \
                 addresses. Sign out of Microsoft (or use a private window), open the link again \
                 and sign in as the owner of {mailbox}."
            ),
        ));
    }
    let mut scopes = granted;
    if !scopes.iter().any(|s| s == "offline_access") {
        scopes.push("offline_access".into());
    }
    Ok(NewConnection {
        mailbox: mailbox.clone(),
        account: user.user_principal_name.clone(),
        object_id: Some(user.object_id.clone()),
        tenant_id: claims.tid.clone(),
        sending_address: Some(user.sending_address()),
        scopes,
        access_token: grant.access_token.clone(),
        access_token_expires_at: now + grant.expires_in,
        refresh_token,
    })
}

/// A connected mailbox stays with the account (object id) that connected it: another
/// account, even one that now has the address, is refused until Disconnect.
pub(super) async fn pinned_elsewhere(
    store: &Store,
    connection: &NewConnection,
) -> Option<CallbackOutcome> {
    let mailbox = &connection.mailbox;
    let pinned = match store.pinned_account(mailbox).await {
        Ok(pinned) => pinned?,
        Err(error) => {
            tracing::error!(
                error = crate::telemetry::redact_addresses(&error.to_string()),
                "cannot read the mailbox's account"
            );
            return Some(CallbackOutcome::failed(
                503,
                "graph-mailer cannot reach its database right now.",
                "Try the link again in a minute.",
            ));
        }
    };
    if Some(&pinned.object_id) == connection.object_id.as_ref() {
        return None;
    }
    tracing::warn!(
        mailbox_domain = mailbox.domain(),
        "sign-in by a different account than the one the mailbox is connected to refused"
    );
    Some(CallbackOutcome::failed(
        403,
        format!(
            "{mailbox} is connected to another Microsoft account ({}).",
            pinned.account.as_deref().unwrap_or("unnamed")
        ),
        format!(
            "A mailbox stays with the account that connected it. If {mailbox} now belongs to                  {}, an administrator must first call Disconnect for {mailbox}, then Connect again.",
            connection.account
        ),
    ))
}

/// The id_token's claims, once they prove it was issued to this app by this tenant.
fn issued_here(
    identity: &IdentityClient,
    mailbox: &Mailbox,
    grant: &TokenGrant,
) -> Result<IdTokenClaims, CallbackOutcome> {
    verify_origin(identity, grant).map_err(|problem| match problem {
        OriginProblem::Unreadable(reason) => CallbackOutcome::failed(
            502,
            "Microsoft's answer did not say who signed in.",
            format!(
                "{reason}; the openid scope must be granted. Call Connect again for {mailbox}."
            ),
        ),
        OriginProblem::Audience => CallbackOutcome::failed(
            400,
            "The sign-in was issued to a different application.",
            format!("Check {}, then call Connect again.", variables::CLIENT_ID),
        ),
        OriginProblem::Tenant => CallbackOutcome::failed(
            400,
            "The account signed in belongs to a different Microsoft 365 tenant.",
            format!("Sign in with an account of the tenant that owns {mailbox}."),
        ),
        OriginProblem::Issuer { found, expected } => CallbackOutcome::failed(
            400,
            "The sign-in's token comes from an unexpected issuer.",
            format!(
                "Its issuer is {found}, expected {expected}: check {} (the sign-in must happen \
                 at the configured Microsoft cloud), then call Connect again.",
                variables::AUTHORITY_URL
            ),
        ),
    })
}

/// The user the new access token belongs to, from Graph.
async fn signed_in_user(
    directory: &dyn Directory,
    mailbox: &Mailbox,
    grant: &TokenGrant,
) -> Result<DirectoryUser, CallbackOutcome> {
    directory
        .signed_in_user(&grant.access_token)
        .await
        .map_err(|error| match error {
            DirectoryError::NotPermitted => missing_permission(
                mailbox,
                PROFILE_PERMISSION,
                "graph-mailer reads the signed-in user's addresses with it to prove the account \
                 owns the mailbox and to send from its primary address",
            ),
            DirectoryError::Failed(reason) => {
                tracing::error!(
                    reason = crate::telemetry::redact_addresses(&reason),
                    "cannot read the signed-in user"
                );
                CallbackOutcome::failed(
                    502,
                    "graph-mailer could not ask Microsoft Graph who signed in.",
                    format!("{reason}. Call Connect again for {mailbox} in a minute."),
                )
            }
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
