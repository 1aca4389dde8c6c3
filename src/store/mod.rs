//! Persistence: connections (with encrypted tokens), pending sign-ins and idempotency keys.
//!
//! One [`Store`] over sqlx's Any driver serves both backends with the same SQL: SQLite (the
//! embedded default, one file in the data directory) and PostgreSQL (several replicas sharing
//! one database). Migrations live in `migrations/sqlite` and `migrations/postgres` and run at
//! start-up. Times are stored as Unix milliseconds.

pub mod crypto;
mod records;
mod tokens;

use std::{str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    AnyPool, Row,
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
    migrate::Migrator,
};

pub use crypto::{KeyOrigin, TokenCipher};
pub use records::*;
pub use tokens::TokenLock;

use crate::{clock::from_millis, domain::Mailbox, settings::DatabaseUrl};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("GRAPH_MAILER_DATABASE_URL must start with sqlite:// or postgres://, not {0}")]
    UnsupportedUrl(String),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot bring the database schema up to date: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the store was written with a different encryption key: set GRAPH_MAILER_ENCRYPTION_KEY \
         (or _FILE) to the key it was created with (every replica needs the same key), or start \
         with an empty database and connect the mailboxes again"
    )]
    WrongKey,
    #[error("{0}")]
    Key(#[from] crypto::KeyError),
    #[error("the stored tokens of {0} cannot be decrypted; call Connect again for this mailbox")]
    Undecryptable(String),
}

/// The store. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    cipher: Arc<TokenCipher>,
}

const KEY_CHECK_NAME: &str = "encryption_key_check";
const KEY_CHECK_TEXT: &[u8] = b"graph-mailer encryption key check";

impl Store {
    /// Connects, runs the migrations and verifies that `cipher` is the key the store was
    /// written with.
    pub async fn open(url: &DatabaseUrl, cipher: TokenCipher) -> Result<Self, StoreError> {
        let store = Self::connect(url, cipher).await?;
        store.migrator().run(&store.pool).await?;
        store.verify_key().await?;
        Ok(store)
    }

    /// Connects without changing the schema (for `check`): returns the store and how many
    /// migrations it lacks. The key is verified only when the schema is current.
    pub async fn open_without_migrating(
        url: &DatabaseUrl,
        cipher: TokenCipher,
    ) -> Result<(Self, usize), StoreError> {
        let store = Self::connect(url, cipher).await?;
        let pending = match store.pending_migrations().await {
            Ok(pending) => pending,
            // No migrations table: a database graph-mailer never started on.
            Err(_) => store.migrator().iter().count(),
        };
        if pending == 0 {
            store.verify_key().await?;
        }
        Ok((store, pending))
    }

    async fn connect(url: &DatabaseUrl, cipher: TokenCipher) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url.expose())?;
        if backend == Backend::Sqlite {
            create_sqlite_parent_dir(url.expose())?;
        }
        let options = AnyConnectOptions::from_str(url.expose())?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            backend,
            cipher: Arc::new(cipher),
        })
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The migrations this build knows that the database has not applied (0 = current).
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let applied: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        Ok(self
            .migrator()
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    async fn verify_key(&self) -> Result<(), StoreError> {
        let sealed = self.cipher.encrypt(KEY_CHECK_NAME, KEY_CHECK_TEXT);
        // Two replicas starting at once both try; the first one's value wins.
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(KEY_CHECK_NAME)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        let stored: Vec<u8> = sqlx::query("SELECT value FROM meta WHERE name = $1")
            .bind(KEY_CHECK_NAME)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        match self.cipher.decrypt(KEY_CHECK_NAME, &stored) {
            Ok(plain) if plain == KEY_CHECK_TEXT => Ok(()),
            _ => Err(StoreError::WrongKey),
        }
    }

    pub(crate) fn cipher(&self) -> &TokenCipher {
        &self.cipher
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ----- mailboxes -------------------------------------------------------------------------

    /// One mailbox's status, `None` when the store has never seen it.
    pub async fn mailbox(
        &self,
        mailbox: &Mailbox,
        now: DateTime<Utc>,
    ) -> Result<Option<MailboxRecord>, StoreError> {
        let sql = format!("{STATUS_SELECT} WHERE m.mailbox = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now.timestamp_millis())
            .bind(mailbox.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| status_from_row(&r)).transpose()
    }

    /// Every mailbox the store knows, by address.
    pub async fn mailboxes(&self, now: DateTime<Utc>) -> Result<Vec<MailboxRecord>, StoreError> {
        let sql = format!("{STATUS_SELECT} ORDER BY m.mailbox");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now.timestamp_millis())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(status_from_row).collect()
    }

    /// The mailboxes that hold tokens and can send.
    pub async fn connected_mailboxes(&self) -> Result<Vec<Mailbox>, StoreError> {
        let rows =
            sqlx::query("SELECT mailbox FROM mailboxes WHERE state = 'connected' ORDER BY mailbox")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok(Mailbox::from_stored(r.try_get(0)?)))
            .collect()
    }

    /// Makes sure the mailbox has a row (for counters and Status).
    pub async fn ensure_mailbox(
        &self,
        mailbox: &Mailbox,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mailboxes (mailbox, created_at, updated_at) VALUES ($1, $2, $2) \
             ON CONFLICT (mailbox) DO NOTHING",
        )
        .bind(mailbox.as_str())
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a completed sign-in: the mailbox is connected from now on.
    pub async fn save_connection(
        &self,
        connection: &NewConnection,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mailbox = connection.mailbox.as_str();
        sqlx::query(
            "INSERT INTO mailboxes (mailbox, state, account, object_id, tenant_id, scopes, \
               access_token, access_token_expires_at, refresh_token, connected_at, \
               last_refreshed_at, last_error, last_error_source, token_generation, created_at, \
               updated_at) \
             VALUES ($1, 'connected', $2, $3, $4, $5, $6, $7, $8, $9, $9, NULL, NULL, 1, $9, $9) \
             ON CONFLICT (mailbox) DO UPDATE SET state = 'connected', account = $2, \
               object_id = $3, tenant_id = $4, scopes = $5, access_token = $6, \
               access_token_expires_at = $7, refresh_token = $8, connected_at = $9, \
               last_refreshed_at = $9, last_error = NULL, last_error_source = NULL, \
               token_generation = mailboxes.token_generation + 1, updated_at = $9",
        )
        .bind(mailbox)
        .bind(&connection.account)
        .bind(connection.object_id.as_deref())
        .bind(connection.tenant_id.as_deref())
        .bind(connection.scopes.join(" "))
        .bind(self.cipher.seal(
            &token_context(mailbox, "access_token"),
            &connection.access_token,
        ))
        .bind(connection.access_token_expires_at.timestamp_millis())
        .bind(self.cipher.seal(
            &token_context(mailbox, "refresh_token"),
            &connection.refresh_token,
        ))
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records what failed and what to do, creating the mailbox's row if needed.
    pub async fn set_last_error(
        &self,
        mailbox: &Mailbox,
        source: ErrorSource,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mailboxes (mailbox, last_error, last_error_source, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (mailbox) DO UPDATE SET last_error = $2, last_error_source = $3, \
               updated_at = $4",
        )
        .bind(mailbox.as_str())
        .bind(message)
        .bind(source.stored())
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Microsoft no longer accepts the mailbox's refresh token: the owner must sign in again.
    pub async fn mark_reauthorization_required(
        &self,
        mailbox: &Mailbox,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE mailboxes SET state = 'reauthorization_required', last_error = $2, \
               last_error_source = 'token', updated_at = $3 \
             WHERE mailbox = $1 AND state = 'connected'",
        )
        .bind(mailbox.as_str())
        .bind(message)
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds a batch of send outcomes to a mailbox's counters. The last outcome decides
    /// `last_error`: a failure sets it, a success clears an earlier send error.
    pub async fn record_sends(
        &self,
        mailbox: &Mailbox,
        sends: &SendTally,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (last, error) = match &sends.last_outcome {
            Some(Ok(())) => ("ok", None),
            Some(Err(message)) => ("error", Some(message.as_str())),
            None => ("none", None),
        };
        sqlx::query(
            "INSERT INTO mailboxes (mailbox, sent_total, failed_total, last_sent_at, last_error, \
               last_error_source, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 IS NULL THEN NULL ELSE 'send' END, $6, $6) \
             ON CONFLICT (mailbox) DO UPDATE SET \
               sent_total = mailboxes.sent_total + $2, \
               failed_total = mailboxes.failed_total + $3, \
               last_sent_at = COALESCE($4, mailboxes.last_sent_at), \
               last_error = CASE WHEN $7 = 'error' THEN $5 \
                                 WHEN $7 = 'ok' AND mailboxes.last_error_source = 'send' THEN NULL \
                                 ELSE mailboxes.last_error END, \
               last_error_source = CASE WHEN $7 = 'error' THEN 'send' \
                                        WHEN $7 = 'ok' AND mailboxes.last_error_source = 'send' THEN NULL \
                                        ELSE mailboxes.last_error_source END, \
               updated_at = $6",
        )
        .bind(mailbox.as_str())
        .bind(i64::try_from(sends.sent).unwrap_or(i64::MAX))
        .bind(i64::try_from(sends.failed).unwrap_or(i64::MAX))
        .bind(sends.last_sent_at.map(|t| t.timestamp_millis()))
        .bind(error)
        .bind(now.timestamp_millis())
        .bind(last)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the mailbox's tokens and pending sign-ins; counters stay. Returns whether the
    /// mailbox was known.
    pub async fn disconnect(
        &self,
        mailbox: &Mailbox,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE mailboxes SET state = 'not_connected', access_token = NULL, \
               access_token_expires_at = NULL, refresh_token = NULL, scopes = '', \
               last_error = NULL, last_error_source = NULL, \
               token_generation = token_generation + 1, updated_at = $2 \
             WHERE mailbox = $1",
        )
        .bind(mailbox.as_str())
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM pending_authorizations WHERE mailbox = $1")
            .bind(mailbox.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(updated > 0)
    }

    // ----- pending sign-ins ------------------------------------------------------------------

    /// Stores a sign-in link's state and PKCE verifier until the callback.
    pub async fn insert_pending(&self, pending: &PendingAuthorization) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO mailboxes (mailbox, created_at, updated_at) VALUES ($1, $2, $2) \
             ON CONFLICT (mailbox) DO NOTHING",
        )
        .bind(pending.mailbox.as_str())
        .bind(pending.created_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO pending_authorizations \
               (state_hash, mailbox, pkce_verifier, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&pending.state_hash)
        .bind(pending.mailbox.as_str())
        .bind(self.cipher.seal(
            &pending_context(&pending.state_hash),
            &pending.pkce_verifier,
        ))
        .bind(pending.created_at.timestamp_millis())
        .bind(pending.expires_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes and returns a pending sign-in: a state can be used once, on any replica.
    /// Expired ones are returned too, so the caller can say that the link expired.
    pub async fn take_pending(
        &self,
        state_hash: &str,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM pending_authorizations WHERE state_hash = $1 \
             RETURNING mailbox, pkce_verifier, created_at, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let verifier: Vec<u8> = row.try_get("pkce_verifier")?;
        let mailbox: String = row.try_get("mailbox")?;
        let pkce_verifier = self
            .cipher
            .open(&pending_context(state_hash), &verifier)
            .map_err(|_| StoreError::Undecryptable(mailbox.clone()))?;
        Ok(Some(PendingAuthorization {
            state_hash: state_hash.to_owned(),
            mailbox: Mailbox::from_stored(mailbox),
            pkce_verifier,
            created_at: from_millis(row.try_get("created_at")?),
            expires_at: from_millis(row.try_get("expires_at")?),
        }))
    }

    // ----- idempotency -----------------------------------------------------------------------

    /// Claims `key` for a send, unless a live record of it exists.
    pub async fn claim_idempotency(
        &self,
        mailbox: &Mailbox,
        key: &str,
        request_hash: &str,
        message_id: &str,
        now: DateTime<Utc>,
        lifetime: chrono::Duration,
    ) -> Result<Claim, StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE mailbox = $1 AND idem_key = $2 AND expires_at <= $3",
        )
        .bind(mailbox.as_str())
        .bind(key)
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys \
               (mailbox, idem_key, request_hash, status, message_id, created_at, expires_at) \
             VALUES ($1, $2, $3, 'in_progress', $4, $5, $6) \
             ON CONFLICT (mailbox, idem_key) DO NOTHING",
        )
        .bind(mailbox.as_str())
        .bind(key)
        .bind(request_hash)
        .bind(message_id)
        .bind(now.timestamp_millis())
        .bind((now + lifetime).timestamp_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Claim::Claimed);
        }
        match self.idempotency_record(mailbox, key).await? {
            Some(record) => Ok(Claim::Existing(record)),
            // Deleted between our insert and read (expired and purged): try once more.
            None => {
                Box::pin(self.claim_idempotency(
                    mailbox,
                    key,
                    request_hash,
                    message_id,
                    now,
                    lifetime,
                ))
                .await
            }
        }
    }

    /// The record of `key`, if any.
    pub async fn idempotency_record(
        &self,
        mailbox: &Mailbox,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, status, message_id, accepted_at, created_at \
             FROM idempotency_keys WHERE mailbox = $1 AND idem_key = $2",
        )
        .bind(mailbox.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(IdempotencyRecord {
                request_hash: row.try_get("request_hash")?,
                status: IdempotencyStatus::from_stored(&row.try_get::<String, _>("status")?),
                message_id: row.try_get("message_id")?,
                accepted_at: row
                    .try_get::<Option<i64>, _>("accepted_at")?
                    .map(from_millis),
                created_at: from_millis(row.try_get("created_at")?),
            })
        })
        .transpose()
    }

    /// Records how the send under `key` ended.
    pub async fn finish_idempotency(
        &self,
        mailbox: &Mailbox,
        key: &str,
        status: IdempotencyStatus,
        accepted_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, accepted_at = $4 \
             WHERE mailbox = $1 AND idem_key = $2",
        )
        .bind(mailbox.as_str())
        .bind(key)
        .bind(status.stored())
        .bind(accepted_at.map(|t| t.timestamp_millis()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Frees `key` after a send that certainly did not happen, so the caller may retry with it.
    pub async fn release_idempotency(
        &self,
        mailbox: &Mailbox,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE mailbox = $1 AND idem_key = $2")
            .bind(mailbox.as_str())
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes expired idempotency keys and sign-in links. Returns how many rows went.
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now = now.timestamp_millis();
        let keys = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let pending = sqlx::query("DELETE FROM pending_authorizations WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(keys + pending)
    }
}

const STATUS_SELECT: &str = "SELECT m.mailbox, m.state, m.account, m.scopes, m.connected_at, \
       m.access_token_expires_at, m.last_refreshed_at, m.last_sent_at, m.last_error, \
       m.sent_total, m.failed_total, \
       (SELECT COUNT(*) FROM pending_authorizations p \
         WHERE p.mailbox = m.mailbox AND p.expires_at > $1) AS pending \
     FROM mailboxes m";

fn status_from_row(row: &AnyRow) -> Result<MailboxRecord, StoreError> {
    let stored = ConnectionState::from_stored(&row.try_get::<String, _>("state")?);
    let pending: i64 = row.try_get("pending")?;
    let state = if stored == ConnectionState::NotConnected && pending > 0 {
        ConnectionState::Pending
    } else {
        stored
    };
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(from_millis))
    };
    Ok(MailboxRecord {
        mailbox: Mailbox::from_stored(row.try_get("mailbox")?),
        state,
        account: row.try_get("account")?,
        scopes: split_scopes(&row.try_get::<String, _>("scopes")?),
        connected_at: time("connected_at")?,
        access_token_expires_at: time("access_token_expires_at")?,
        last_refreshed_at: time("last_refreshed_at")?,
        last_sent_at: time("last_sent_at")?,
        last_error: row.try_get("last_error")?,
        sent_total: u64::try_from(row.try_get::<i64, _>("sent_total")?).unwrap_or(0),
        failed_total: u64::try_from(row.try_get::<i64, _>("failed_total")?).unwrap_or(0),
    })
}

pub(crate) fn split_scopes(scopes: &str) -> Vec<String> {
    scopes.split_whitespace().map(str::to_owned).collect()
}

pub(crate) fn token_context(mailbox: &str, column: &str) -> String {
    format!("{mailbox}|{column}")
}

fn pending_context(state_hash: &str) -> String {
    format!("pending|{state_hash}")
}

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::UnsupportedUrl(format!("{scheme}:")))
    }
}

fn create_sqlite_parent_dir(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::DataDir {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(())
}
