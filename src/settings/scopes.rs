//! Which delegated Microsoft Graph permissions the service asks for, and for which Graph: the
//! scopes of sign-ins and refreshes, and the short names Status and `check` show.

use std::fmt;

use url::Url;

use crate::variables::GRAPH_SCOPES;

/// The resource Graph tokens are issued for: the origin of `GRAPH_MAILER_GRAPH_URL`.
///
/// Each Microsoft cloud has its own Graph and issues tokens only for it ("National cloud
/// deployments": `https://graph.microsoft.us`, `https://dod-graph.microsoft.us`,
/// `https://microsoftgraph.chinacloudapi.cn`); a scope for the global resource fails there with
/// AADSTS500011.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphResource(String);

impl GraphResource {
    /// The global cloud's resource.
    pub fn global() -> Self {
        Self("https://graph.microsoft.com".to_owned())
    }

    /// The resource of the Graph at `graph_url`.
    pub fn of(graph_url: &Url) -> Self {
        Self(graph_url.origin().ascii_serialization())
    }

    /// The full scope URI of a permission: `https://graph.microsoft.us/Mail.Send`.
    pub fn scope(&self, permission: &str) -> String {
        format!("{}/{permission}", self.0)
    }

    /// A granted scope as a short name: the resource's prefix (or the global one, which
    /// Microsoft sometimes returns) is dropped.
    pub fn short<'a>(&self, scope: &'a str) -> &'a str {
        let strip = |prefix: &str| {
            scope
                .get(..prefix.len() + 1)
                .filter(|head| {
                    head.len() == prefix.len() + 1
                        && head[..prefix.len()].eq_ignore_ascii_case(prefix)
                        && head.ends_with('/')
                })
                .map(|_| &scope[prefix.len() + 1..])
        };
        strip(&self.0)
            .or_else(|| strip(&Self::global().0))
            .unwrap_or(scope)
    }
}

impl fmt::Display for GraphResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The delegated Microsoft Graph permissions the service asks for, as short names
/// (`Mail.Send`, `Mail.ReadWrite`), and the resource they are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphScopes {
    names: Vec<String>,
    resource: GraphResource,
}

/// The OpenID Connect scopes that make Microsoft return an id_token naming the account, and
/// `offline_access`, which makes it return a refresh token.
pub const IDENTITY_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Always asked for: `GET /me` tells who signed in and which addresses the mailbox has.
pub const PROFILE_PERMISSION: &str = "User.Read";

impl GraphScopes {
    /// Parses a space- or comma-separated list for `resource`; `Mail.Send` is required and
    /// `User.Read` always added.
    pub fn parse(value: &str, resource: GraphResource) -> Result<Self, String> {
        let mut names: Vec<String> = Vec::new();
        for scope in value.split([' ', ',']).filter(|s| !s.is_empty()) {
            let short = resource.short(scope);
            if !short
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            {
                return Err(format!(
                    "{GRAPH_SCOPES}: \"{scope}\" is not a Microsoft Graph permission name \
                     such as Mail.Send"
                ));
            }
            if !names.iter().any(|s| s.eq_ignore_ascii_case(short)) {
                names.push(short.to_owned());
            }
        }
        if !names.iter().any(|s| s.eq_ignore_ascii_case("Mail.Send")) {
            return Err(format!(
                "{GRAPH_SCOPES} must include Mail.Send: without it no mail can be sent"
            ));
        }
        if !names
            .iter()
            .any(|s| s.eq_ignore_ascii_case(PROFILE_PERMISSION))
        {
            names.push(PROFILE_PERMISSION.to_owned());
        }
        Ok(Self { names, resource })
    }

    /// The short names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The resource the permissions are for.
    pub fn resource(&self) -> &GraphResource {
        &self.resource
    }

    /// Whether a permission is among them (case-insensitive).
    pub fn includes(&self, name: &str) -> bool {
        self.names.iter().any(|s| s.eq_ignore_ascii_case(name))
    }

    /// The `scope` parameter sent to Microsoft: identity scopes plus the Graph ones as URIs.
    pub fn request_scopes(&self) -> Vec<String> {
        self.request_scopes_for(&self.names)
    }

    /// The `scope` parameter for these short names (a refresh asks for what was granted).
    pub fn request_scopes_for(&self, names: &[String]) -> Vec<String> {
        let mut scopes: Vec<String> = IDENTITY_SCOPES.iter().map(|s| (*s).to_owned()).collect();
        for name in names {
            let known = scopes.iter().any(|s| s.eq_ignore_ascii_case(name));
            if !known {
                scopes.push(self.resource.scope(name));
            }
        }
        scopes
    }

    /// Granted scopes as short names, once each: `https://graph.microsoft.com/Mail.Send`
    /// becomes `Mail.Send`.
    pub fn short_names(&self, granted: &[String]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for scope in granted.iter().flat_map(|s| s.split_whitespace()) {
            let short = self.resource.short(scope);
            if !names.iter().any(|s| s.eq_ignore_ascii_case(short)) {
                names.push(short.to_owned());
            }
        }
        names
    }

    /// The configured permissions `granted` (short names) lacks.
    pub fn missing_from(&self, granted: &[String]) -> Vec<String> {
        self.names
            .iter()
            .filter(|name| !granted.iter().any(|g| g.eq_ignore_ascii_case(name)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_scopes_accept_short_names_and_uris_and_require_mail_send() {
        let scopes = GraphScopes::parse(
            "Mail.Send https://graph.microsoft.com/Mail.ReadWrite,mail.send",
            GraphResource::global(),
        )
        .unwrap();
        assert_eq!(scopes.names(), ["Mail.Send", "Mail.ReadWrite", "User.Read"]);
        assert!(scopes.includes("mail.readwrite"));
        assert_eq!(
            scopes.request_scopes(),
            [
                "openid",
                "profile",
                "email",
                "offline_access",
                "https://graph.microsoft.com/Mail.Send",
                "https://graph.microsoft.com/Mail.ReadWrite",
                "https://graph.microsoft.com/User.Read"
            ]
        );
        assert!(GraphScopes::parse("User.Read", GraphResource::global()).is_err());
        assert!(GraphScopes::parse("Mail.Send Mail/Evil", GraphResource::global()).is_err());
    }

    #[test]
    fn national_clouds_get_scopes_for_their_own_graph() {
        for (graph_url, resource) in [
            ("https://graph.microsoft.us/", "https://graph.microsoft.us"),
            (
                "https://dod-graph.microsoft.us",
                "https://dod-graph.microsoft.us",
            ),
            (
                "https://microsoftgraph.chinacloudapi.cn/v1.0",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
        ] {
            let resource_of = GraphResource::of(&Url::parse(graph_url).unwrap());
            assert_eq!(resource_of.to_string(), resource);
            let scopes = GraphScopes::parse("Mail.Send", resource_of).unwrap();
            assert!(
                scopes
                    .request_scopes()
                    .contains(&format!("{resource}/Mail.Send")),
                "{graph_url}"
            );
            assert!(
                !scopes
                    .request_scopes()
                    .iter()
                    .any(|s| s.contains("graph.microsoft.com")),
                "{graph_url}"
            );
            let granted = scopes.short_names(&[format!("{resource}/Mail.Send offline_access")]);
            assert_eq!(granted, ["Mail.Send", "offline_access"]);
        }
    }

    #[test]
    fn a_refresh_asks_for_the_granted_names_only() {
        let scopes =
            GraphScopes::parse("Mail.Send Mail.ReadWrite", GraphResource::global()).unwrap();
        let granted = vec!["Mail.Send".to_owned(), "offline_access".to_owned()];
        assert_eq!(
            scopes.request_scopes_for(&granted),
            [
                "openid",
                "profile",
                "email",
                "offline_access",
                "https://graph.microsoft.com/Mail.Send"
            ]
        );
        assert_eq!(
            scopes.missing_from(&granted),
            ["Mail.ReadWrite", "User.Read"]
        );
    }
}
