//! The Entra ID app registration as configured: tenant, client ID, client secret, scopes; and
//! whether it is configured at all (which chooses Graph over the sandbox).

use std::{fmt, path::PathBuf, time::Duration};

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    GraphResource, GraphScopes, RawSettings,
    validate::{Problems, secs},
};
use crate::variables::{
    CLIENT_ID, CLIENT_SECRET, CLIENT_SECRET_EXPIRES_AT, CLIENT_SECRET_FILE, TENANT_ID, TRANSPORT,
};

/// The Microsoft Entra tenant: a directory GUID or one of its verified domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantId(String);

impl TenantId {
    /// Parses a tenant as `GRAPH_MAILER_TENANT_ID` gives it.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let lower = value.to_ascii_lowercase();
        if ["common", "organizations", "consumers"].contains(&lower.as_str()) {
            return Err(format!(
                "{TENANT_ID} is \"{value}\": a single-tenant app registration needs its \
                 own tenant (Microsoft answers AADSTS50194 otherwise); use the \"Directory (tenant) \
                 ID\" GUID from the app registration's overview page"
            ));
        }
        if is_guid(value) || is_domain(value) {
            Ok(Self(lower))
        } else {
            Err(format!(
                "{TENANT_ID} is \"{value}\", neither a GUID nor a domain; copy the \
                 \"Directory (tenant) ID\" from the app registration's overview page"
            ))
        }
    }

    /// The tenant as it appears in URLs.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the tenant was given as its GUID (and so can be compared with a token's `tid`).
    pub fn is_guid(&self) -> bool {
        is_guid(&self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The app registration's "Application (client) ID".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    /// Parses `GRAPH_MAILER_CLIENT_ID`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if is_guid(value) {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{CLIENT_ID} is \"{value}\", not a GUID; copy the \"Application \
                 (client) ID\" from the app registration's overview page"
            ))
        }
    }

    /// The client ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the client secret comes from.
#[derive(Debug, Clone)]
pub enum ClientSecretSource {
    /// `GRAPH_MAILER_CLIENT_SECRET`: fixed for the life of the process.
    Value(SecretString),
    /// `GRAPH_MAILER_CLIENT_SECRET_FILE`: re-read when it changes, so it can be rotated
    /// without a restart.
    File(PathBuf),
}

/// Everything needed to talk to Microsoft on behalf of the app registration.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    pub tenant: TenantId,
    pub client_id: ClientId,
    pub client_secret: ClientSecretSource,
    /// When the client secret expires, if the operator told us.
    pub client_secret_expires_at: Option<DateTime<Utc>>,
    /// How long before the secret's expiry warnings start.
    pub client_secret_warning: chrono::Duration,
    /// How often a secret file is checked for changes.
    pub secret_reload_interval: std::time::Duration,
    pub scopes: GraphScopes,
}

impl AzureSettings {
    /// Whether the settings choose Microsoft Graph: a tenant is configured and
    /// `GRAPH_MAILER_TRANSPORT` does not force the sandbox.
    pub(super) fn chosen(raw: &RawSettings) -> Result<bool, String> {
        match raw
            .transport
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => Ok(raw.tenant_id.is_some()),
            Some("sandbox") => Ok(false),
            Some("graph") if raw.tenant_id.is_some() => Ok(true),
            Some("graph") => Err(format!(
                "{TRANSPORT} is graph but {TENANT_ID} is not set: configure the app registration \
                 (tenant ID, client ID, client secret) or use the sandbox"
            )),
            Some(other) => Err(format!("{TRANSPORT} is \"{other}\": use graph or sandbox")),
        }
    }

    /// The app registration's section, every problem of it recorded.
    pub(super) fn from_raw(
        raw: &RawSettings,
        graph_url: Option<&Url>,
        problems: &mut Problems,
    ) -> Option<Self> {
        let tenant = problems.take(
            raw.tenant_id
                .as_deref()
                .ok_or_else(|| format!("{TENANT_ID} is not set"))
                .and_then(TenantId::parse),
        );
        let client_id = problems.take(
            raw.client_id
                .as_deref()
                .ok_or_else(|| {
                    format!(
                        "{CLIENT_ID} is not set: copy the \"Application (client) ID\" from the \
                         app registration's overview page"
                    )
                })
                .and_then(ClientId::parse),
        );
        let client_secret = Self::client_secret(raw, problems);
        let expires_at = problems.take(
            raw.client_secret_expires_at
                .as_deref()
                .map(parse_expiry)
                .transpose(),
        );
        let resource = graph_url.map_or_else(GraphResource::global, GraphResource::of);
        let scopes = problems.take(GraphScopes::parse(&raw.graph_scopes, resource));
        Some(Self {
            tenant: tenant?,
            client_id: client_id?,
            client_secret: client_secret?,
            client_secret_expires_at: expires_at?,
            client_secret_warning: chrono::Duration::days(secs(raw.client_secret_warning_days)),
            secret_reload_interval: Duration::from_secs(raw.secret_reload_seconds.max(1)),
            scopes: scopes?,
        })
    }

    fn client_secret(raw: &RawSettings, problems: &mut Problems) -> Option<ClientSecretSource> {
        match (&raw.client_secret, &raw.client_secret_file) {
            (Some(secret), None) => {
                if is_guid(secret.expose_secret().trim()) {
                    problems.warn(secret_id_warning(CLIENT_SECRET));
                }
                Some(ClientSecretSource::Value(secret.clone()))
            }
            (None, Some(file)) => Some(ClientSecretSource::File(file.into())),
            (Some(_), Some(_)) => {
                problems.error(format!(
                    "set {CLIENT_SECRET} or {CLIENT_SECRET_FILE}, not both"
                ));
                None
            }
            (None, None) => {
                problems.error(format!(
                    "no client secret: set {CLIENT_SECRET} (or _FILE) to the secret's Value from \
                     the app registration's \"Certificates & secrets\" page"
                ));
                None
            }
        }
    }
}

/// The warning for a client secret that looks like the secret's ID.
pub fn secret_id_warning(variable: &str) -> String {
    format!(
        "{variable} looks like a GUID: that is probably the secret's ID, not its Value; copy the \
         Value column of \"Certificates & secrets\" (it is shown only once, right after creation)"
    )
}

/// Parses an RFC 3339 date-time or a plain date (taken as midnight UTC).
pub fn parse_expiry(value: &str) -> Result<DateTime<Utc>, String> {
    let value = value.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    Err(format!(
        "{CLIENT_SECRET_EXPIRES_AT} is \"{value}\": give the date shown in the app \
         registration's \"Certificates & secrets\" page as 2027-05-31 or 2027-05-31T12:00:00Z"
    ))
}

/// Whether `value` is a GUID in its 8-4-4-4-12 hexadecimal form.
pub fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_domain(value: &str) -> bool {
    value.contains('.')
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_a_guid_or_a_verified_domain() {
        assert!(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47")
                .unwrap()
                .is_guid()
        );
        assert!(
            !TenantId::parse("contoso.onmicrosoft.com")
                .unwrap()
                .is_guid()
        );
        assert!(TenantId::parse("contoso").is_err());
        let common = TenantId::parse("common").unwrap_err();
        assert!(common.contains("AADSTS50194"), "{common}");
    }

    #[test]
    fn a_client_id_must_be_a_guid() {
        assert!(ClientId::parse("00000000-0000-0000-0000-00000000000a").is_ok());
        let error = ClientId::parse("my-app").unwrap_err();
        assert!(error.contains("Application (client) ID"), "{error}");
        assert!(ClientId::parse("0000000000000000000000000000000a").is_err());
    }

    #[test]
    fn secret_expiry_accepts_a_date_or_a_date_time() {
        assert_eq!(
            parse_expiry("2027-05-31").unwrap().to_rfc3339(),
            "2027-05-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_expiry("2027-05-31T12:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2027-05-31T10:00:00+00:00"
        );
        assert!(parse_expiry("31/05/2027").is_err());
    }
}
