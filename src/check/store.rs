//! The store checkpoint: the database opens, its schema is current, and the encryption key is
//! the one it was written with.

use super::Checks;
use crate::{
    settings::{KeySource, Settings},
    store::{Store, TokenCipher},
    variables,
};

pub(super) async fn store_checks(settings: &Settings, checks: &mut Checks) -> Option<Store> {
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
                format!(
                    "set {}(_FILE) to the store's key",
                    variables::ENCRYPTION_KEY
                ),
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
                format!(
                    "check {} and that the database is running",
                    variables::DATABASE_URL
                ),
            );
            None
        }
    }
}
