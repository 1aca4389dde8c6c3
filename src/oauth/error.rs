//! Microsoft identity platform errors: the full error body, and what each code means for the
//! service and its operator.
//!
//! Classification follows `error_codes` and `suberror` first and `error` last: Microsoft sends
//! MFA and consent problems on a refresh as a plain `invalid_grant`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::secret::rotate_expired_secret;
use crate::variables::{CLIENT_ID, CLIENT_SECRET, TENANT_ID};

/// An error body of the token endpoint, every field kept (the `oauth2` crate's standard type
/// drops `error_codes` and `suberror`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct MicrosoftError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suberror: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
}

impl oauth2::ErrorResponse for MicrosoftError {}

impl fmt::Display for MicrosoftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())?;
        if let Some(ids) = self.support_ids() {
            write!(f, " ({ids})")?;
        }
        Ok(())
    }
}

/// What an error means for the mailbox and the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The grant is gone (expired, revoked, MFA or consent required): the owner must sign in
    /// again through Connect.
    ReauthorizationRequired,
    /// The app registration or the service's settings are wrong; retrying cannot help until
    /// the operator fixes them.
    Configuration,
    /// The client secret in particular is wrong or expired (a re-read of a secret file may help).
    ClientSecret,
    /// Microsoft is throttling or briefly unavailable: retry with backoff.
    Transient,
    /// The person signing in declined consent.
    Declined,
    /// The sign-in's code cannot be used (already redeemed, expired): start again.
    CodeRejected,
    /// Microsoft says graph-mailer itself misbehaved (AADSTS50196: a request loop): a bug to
    /// report, not an outage to retry.
    ClientBug,
    /// Anything else.
    Unknown,
}

const REAUTHORIZATION_CODES: [u64; 8] = [70008, 700082, 50173, 70043, 50076, 50078, 50079, 65001];
const CONFIGURATION_CODES: [u64; 7] = [50011, 700016, 50194, 90002, 7000218, 900971, 500011];
/// Tenant policy refusing the token (Conditional Access, a device or app not approved, a user
/// not assigned to the app). They recur on the service's own refresh whoever signs in again,
/// so only an administrator can help: configuration errors, not "call Connect again".
const POLICY_CODES: [u64; 6] = [53000, 53001, 53002, 53003, 530032, 50105];
const TRANSIENT_CODES: [u64; 1] = [90055];

impl MicrosoftError {
    /// The main AADSTS code: the first of `error_codes`, else the one in the description.
    pub fn code(&self) -> Option<u64> {
        self.error_codes.first().copied().or_else(|| {
            let description = self.error_description.as_deref()?;
            let digits: String = description
                .strip_prefix("AADSTS")?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
    }

    /// `AADSTS70008` or the bare `error` when there is no code.
    pub fn code_label(&self) -> String {
        match self.code() {
            Some(code) => format!("AADSTS{code}"),
            None => self.error.clone(),
        }
    }

    /// Microsoft's own sentence, first line only (the rest repeats trace and correlation IDs).
    pub fn description(&self) -> &str {
        self.error_description
            .as_deref()
            .and_then(|d| d.lines().next())
            .unwrap_or(&self.error)
    }

    /// `error: description`.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.error, self.description())
    }

    /// `trace_id …, correlation_id …`: what Microsoft support asks for.
    pub fn support_ids(&self) -> Option<String> {
        match (&self.trace_id, &self.correlation_id) {
            (None, None) => None,
            (trace, correlation) => Some(format!(
                "trace_id {}, correlation_id {}",
                trace.as_deref().unwrap_or("-"),
                correlation.as_deref().unwrap_or("-")
            )),
        }
    }

    /// What the error means.
    pub fn class(&self) -> ErrorClass {
        let code = self.code();
        if let Some(code) = code {
            match code {
                c if REAUTHORIZATION_CODES.contains(&c) => {
                    return ErrorClass::ReauthorizationRequired;
                }
                7000215 | 7000222 => return ErrorClass::ClientSecret,
                c if CONFIGURATION_CODES.contains(&c) || POLICY_CODES.contains(&c) => {
                    return ErrorClass::Configuration;
                }
                50196 => return ErrorClass::ClientBug,
                c if TRANSIENT_CODES.contains(&c) => return ErrorClass::Transient,
                65004 => return ErrorClass::Declined,
                54005 | 70000 | 70002 => return ErrorClass::CodeRejected,
                _ => {}
            }
        }
        match self.suberror.as_deref() {
            Some("basic_action" | "consent_required" | "additional_action" | "message_only")
            | Some("bad_token" | "token_expired" | "user_password_expired") => {
                return ErrorClass::ReauthorizationRequired;
            }
            _ => {}
        }
        match self.error.as_str() {
            "temporarily_unavailable" | "server_error" => ErrorClass::Transient,
            "access_denied" => ErrorClass::Declined,
            "invalid_client" | "unauthorized_client" | "invalid_scope" | "invalid_request" => {
                ErrorClass::Configuration
            }
            "invalid_grant" | "interaction_required" | "consent_required" | "login_required" => {
                ErrorClass::ReauthorizationRequired
            }
            _ => ErrorClass::Unknown,
        }
    }

    /// The operator-facing sentence: what happened, with the code, and what to do.
    pub fn advice(&self, mailbox: &str, redirect_uri: &str) -> String {
        let label = self.code_label();
        let what = match self.code() {
            Some(70008) => {
                "the refresh token expired after 90 days without use — call Connect again for"
                    .to_owned()
            }
            Some(700082) => {
                "the refresh token expired because it was not used for 90 days — call Connect again for".to_owned()
            }
            Some(50173 | 70043) => {
                "the grant was revoked (password change, sign-in policy or an administrator) — call Connect again for".to_owned()
            }
            Some(50076 | 50078 | 50079) => {
                "Microsoft requires the owner to complete multi-factor authentication — call Connect again for".to_owned()
            }
            Some(65001) => {
                "consent for the app's permissions is missing — call Connect again with force_consent for".to_owned()
            }
            Some(7000215) => {
                return format!(
                    "{label}: the client secret is invalid — set {CLIENT_SECRET} (or the \
                     file) to the secret's Value, not its Secret ID, from the app \
                     registration's \"Certificates & secrets\" page"
                );
            }
            Some(7000222) => {
                return format!(
                    "{label}: the client secret has expired — {}",
                    rotate_expired_secret()
                );
            }
            Some(50011) => {
                return format!(
                    "{label}: the redirect URI is not registered — add {redirect_uri} as a Web \
                     redirect URI on the app registration's \"Authentication\" page"
                );
            }
            Some(700016 | 90002) => {
                return format!(
                    "{label}: the application was not found in the tenant — check \
                     {CLIENT_ID} and {TENANT_ID} against the app registration's overview page"
                );
            }
            Some(50194) => {
                return format!(
                    "{label}: the app registration is single-tenant — set {TENANT_ID} to the \
                     tenant's GUID, not common or organizations"
                );
            }
            Some(65004) => {
                "the person signing in declined the permissions — call Connect again and accept them for".to_owned()
            }
            Some(54005 | 70000 | 70002) => {
                "this sign-in link was already used or has expired — call Connect again for"
                    .to_owned()
            }
            Some(code) if POLICY_CODES.contains(&code) => {
                return format!(
                    "{label}: a policy of the tenant blocks the token for {mailbox} ({}) — Conditional \
                     Access or a similar rule refuses graph-mailer's app or where it runs; an \
                     administrator must change the policy (or exclude this app) in Microsoft Entra \
                     ID; signing in again does not help while the policy applies",
                    self.description()
                );
            }
            Some(500011) => {
                return format!(
                    "{label}: the identity platform does not know the Graph resource asked for ({}) \
                     — {} and {} must name the same Microsoft cloud",
                    self.description(),
                    crate::variables::AUTHORITY_URL,
                    crate::variables::GRAPH_URL
                );
            }
            Some(50196) => {
                return format!(
                    "{label}: Microsoft detected a request loop from graph-mailer (a bug in \
                     graph-mailer; please report it with the trace ID) — {}",
                    self.description()
                );
            }
            Some(501481) => {
                return format!(
                    "{label}: the PKCE code verifier did not match (a bug in graph-mailer; please \
                     report it) — call Connect again"
                );
            }
            _ => match self.class() {
                ErrorClass::Transient => {
                    return format!(
                        "{label}: Microsoft is throttling or temporarily unavailable ({}) — the \
                         service retries on its own",
                        self.description()
                    );
                }
                ErrorClass::ReauthorizationRequired => {
                    format!("{} — call Connect again for", self.description())
                }
                _ => {
                    return format!("{label}: {}", self.description());
                }
            },
        };
        format!("{label}: {what} {mailbox}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(error: &str, codes: &[u64], suberror: Option<&str>) -> MicrosoftError {
        MicrosoftError {
            error: error.into(),
            error_description: codes
                .first()
                .map(|c| format!("AADSTS{c}: Something.\r\nTrace ID: x")),
            error_codes: codes.to_vec(),
            suberror: suberror.map(Into::into),
            trace_id: Some("trace-1".into()),
            correlation_id: Some("corr-1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn codes_that_need_a_new_sign_in_are_reauthorization() {
        for code in [70008, 700082, 50173, 70043, 50076, 50078, 50079, 65001] {
            assert_eq!(
                error("invalid_grant", &[code], None).class(),
                ErrorClass::ReauthorizationRequired,
                "{code}"
            );
        }
        for suberror in ["basic_action", "consent_required"] {
            assert_eq!(
                error("invalid_grant", &[9999999], Some(suberror)).class(),
                ErrorClass::ReauthorizationRequired
            );
        }
    }

    #[test]
    fn secret_and_registration_problems_are_configuration_errors() {
        assert_eq!(
            error("invalid_client", &[7000215], None).class(),
            ErrorClass::ClientSecret
        );
        assert_eq!(
            error("invalid_client", &[7000222], None).class(),
            ErrorClass::ClientSecret
        );
        for code in [50011, 700016, 50194] {
            assert_eq!(
                error("invalid_request", &[code], None).class(),
                ErrorClass::Configuration
            );
        }
        assert_eq!(
            error("invalid_client", &[], None).class(),
            ErrorClass::Configuration
        );
    }

    #[test]
    fn tenant_policies_are_for_an_administrator_and_a_loop_is_a_bug() {
        let blocked = error("invalid_grant", &[53003], Some("message_only"));
        assert_eq!(blocked.class(), ErrorClass::Configuration);
        let advice = blocked.advice("m@x.y", "");
        assert!(advice.contains("administrator"), "{advice}");
        assert_eq!(
            error("invalid_request", &[50196], None).class(),
            ErrorClass::ClientBug
        );
    }

    #[test]
    fn throttling_and_outages_are_transient() {
        assert_eq!(
            error("invalid_request", &[90055], None).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            error("temporarily_unavailable", &[], None).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            error("server_error", &[], None).class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn callback_only_codes_have_their_own_classes() {
        assert_eq!(
            error("access_denied", &[65004], None).class(),
            ErrorClass::Declined
        );
        assert_eq!(
            error("invalid_grant", &[54005], None).class(),
            ErrorClass::CodeRejected
        );
    }

    #[test]
    fn the_code_is_read_from_the_description_when_codes_are_missing() {
        let e = MicrosoftError {
            error: "invalid_grant".into(),
            error_description: Some("AADSTS70008: The refresh token has expired.".into()),
            ..Default::default()
        };
        assert_eq!(e.code(), Some(70008));
    }

    #[test]
    fn advice_names_the_code_the_mailbox_and_what_to_do() {
        let advice = error("invalid_grant", &[70008], None).advice("noreply@contoso.com", "");
        assert_eq!(
            advice,
            "AADSTS70008: the refresh token expired after 90 days without use — call Connect \
             again for noreply@contoso.com"
        );
        let advice = error("invalid_client", &[7000215], None).advice("m@x.y", "");
        assert!(advice.contains("Value, not its Secret ID"), "{advice}");
        let advice = error("invalid_request", &[50011], None)
            .advice("m@x.y", "https://mail.example.com/oauth2/callback");
        assert!(advice.contains("https://mail.example.com/oauth2/callback"));
    }

    #[test]
    fn display_carries_the_support_ids() {
        let shown = error("invalid_grant", &[70008], None).to_string();
        assert!(
            shown.contains("trace_id trace-1, correlation_id corr-1"),
            "{shown}"
        );
        assert!(
            !shown.contains("Trace ID: x"),
            "only the first line of the description"
        );
    }

    #[test]
    fn the_full_microsoft_body_parses() {
        let body = r#"{"error":"invalid_grant","error_description":"AADSTS50076: Due to a configuration change...\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2026-11-30 10:00:00Z","error_codes":[50076],"timestamp":"2026-11-30 10:00:00Z","trace_id":"0000","correlation_id":"1111","error_uri":"https://login.microsoftonline.com/error?code=50076","suberror":"basic_action","claims":"{\"access_token\":{}}"}"#;
        let parsed: MicrosoftError = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.code(), Some(50076));
        assert_eq!(parsed.suberror.as_deref(), Some("basic_action"));
        assert_eq!(parsed.class(), ErrorClass::ReauthorizationRequired);
    }
}
