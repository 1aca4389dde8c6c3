//! What the service reads from the mailbox: the signed-in user (`/me`) and whether Sent Items
//! holds a message.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::{
    GraphCallError, GraphClient,
    client::{authorized, parse},
};

/// A page of messages; only whether it is empty matters here.
#[derive(Debug, Deserialize)]
struct MessageList {
    #[serde(default)]
    value: Vec<serde_json::Value>,
}

/// The signed-in user as `GET /me` describes them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SignedInUser {
    /// The object id (the id_token's `oid`).
    pub id: String,
    /// The primary SMTP address; null for a user without a mailbox.
    #[serde(default)]
    pub mail: Option<String>,
    pub user_principal_name: String,
    /// `SMTP:` the primary address, `smtp:` the aliases (and other types such as `SIP:`).
    #[serde(default)]
    pub proxy_addresses: Vec<String>,
}

impl GraphClient {
    /// Whether Sent Items holds a message whose `internetMessageId` is `marker`
    /// (`GET /me/mailFolders/sentitems/messages?$filter=internetMessageId eq '…'`; needs
    /// `Mail.ReadBasic`, `Mail.Read` or `Mail.ReadWrite`).
    pub async fn is_in_sent_items(
        &self,
        token: &SecretString,
        marker: &str,
        request_id: &str,
    ) -> Result<bool, GraphCallError> {
        let mut url = Url::parse(&self.url("mailFolders/sentitems/messages"))
            .map_err(|e| GraphCallError::NotSent(e.to_string()))?;
        // OData string literals double their single quotes.
        let filter = format!("internetMessageId eq '{}'", marker.replace('\'', "''"));
        url.query_pairs_mut()
            .append_pair("$filter", &filter)
            .append_pair("$select", "id")
            .append_pair("$top", "1");
        let request = self.http.get(url);
        let response = self
            .execute("findSentItem", authorized(request, token, request_id))
            .await?;
        let found: MessageList = parse(response).await?;
        Ok(!found.value.is_empty())
    }

    /// `GET /me?$select=id,mail,userPrincipalName,proxyAddresses`: the signed-in user (needs
    /// `User.Read`).
    pub async fn me(&self, token: &SecretString) -> Result<SignedInUser, GraphCallError> {
        let request = self
            .http
            .get(format!(
                "{}/v1.0/me",
                self.base.as_str().trim_end_matches('/')
            ))
            .query(&[("$select", "id,mail,userPrincipalName,proxyAddresses")]);
        let response = self
            .execute("me", request.bearer_auth(token.expose_secret()))
            .await?;
        parse(response).await
    }
}
