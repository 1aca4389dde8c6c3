//! The Graph client as the identity side's [`Directory`]: `GET /me` for the signed-in user.

use secrecy::SecretString;

use super::{GraphCallError, GraphClient};
use crate::oauth::{Directory, DirectoryError, DirectoryUser};

#[async_trait::async_trait]
impl Directory for GraphClient {
    async fn signed_in_user(
        &self,
        access_token: &SecretString,
    ) -> Result<DirectoryUser, DirectoryError> {
        match self.me(access_token).await {
            Ok(user) => Ok(DirectoryUser {
                object_id: user.id,
                user_principal_name: user.user_principal_name,
                mail: user.mail,
                proxy_addresses: user.proxy_addresses,
            }),
            Err(GraphCallError::Failed(failure)) if failure.status == 403 => {
                Err(DirectoryError::NotPermitted)
            }
            Err(GraphCallError::Failed(failure)) => Err(DirectoryError::Failed(format!(
                "{} {} ({})",
                failure.status,
                failure.error.code,
                failure.ids()
            ))),
            Err(GraphCallError::NotSent(reason) | GraphCallError::Ambiguous(reason)) => {
                Err(DirectoryError::Failed(reason))
            }
        }
    }
}
