//! Persistence: connections (with encrypted tokens), pending sign-ins, idempotency keys and
//! the outbox.
//!
//! One [`Store`] over sqlx's Any driver serves both backends with the same SQL: SQLite (the
//! embedded default, one file in the data directory) and PostgreSQL (several replicas sharing
//! one database). Migrations live in `migrations/sqlite` and `migrations/postgres` and run at
//! start-up. Times are stored as Unix milliseconds.
//!
//! This file opens the store, migrates it and checks the encryption key. Each table family
//! has a file of its own, an `impl Store` with its SQL: [`mailboxes`] (connections, counters),
//! [`status`] (what Status reads),
//! [`sign_ins`] (pending sign-in links), [`idempotency`] (idempotency keys), [`tokens`]
//! (a mailbox's tokens, written with a compare-and-set) and [`leases`] (the token lease and
//! the mailbox request slots replicas share). [`states`] holds the states kept as text.
//! The outbox: [`outbox`] (queueing and events), [`outbox_flow`] (attempts, cancels,
//! recovery), [`outbox_reads`], [`pacing`] (slots and rolling limits), [`queue_end`]
//! (estimates), [`queue_stats`]. [`admin`]: the admin page's sign-ins and sessions.
//! `nodelay` works around a sqlx 0.9.0 regression on PostgreSQL sockets.

pub(crate) mod admin;
pub(crate) mod crypto;
pub(crate) mod idempotency;
pub(crate) mod leases;
pub(crate) mod mailboxes;
mod nodelay;
pub(crate) mod outbox;
pub(crate) mod outbox_flow;
pub(crate) mod outbox_reads;
pub(crate) mod pacing;
pub(crate) mod queue_end;
pub(crate) mod queue_stats;
pub(crate) mod sign_ins;
pub(crate) mod states;
pub(crate) mod status;
pub(crate) mod tokens;

use std::{str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    AnyPool, Row,
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
    migrate::Migrator,
};

pub use admin::{AdminSession, AdminSignIn};
pub use crypto::{KeyOrigin, TokenCipher};
pub use idempotency::{Claim, IdempotencyRecord};
pub use leases::{MailboxSlot, TOKEN_LEASE, TokenLease};
pub use mailboxes::{NewConnection, PinnedAccount, SendTally};
pub use outbox::{
    BatchQueued, BatchRecord, MessageFilter, MessageRecord, NewBatch, NewQueued, QUEUE_CHANNEL,
    Queued,
};
pub use outbox_flow::{ClaimedMessage, Finish, Outcome};
pub use pacing::{Reservation, spacing};
pub use queue_stats::QueueUsage;
pub use sign_ins::{LinkLimits, PendingAuthorization, Stored};
pub use states::{ConnectionState, ErrorSource, IdempotencyStatus, MessageState, UnknownState};
pub use status::MailboxRecord;
pub use tokens::{RefreshedTokens, Saved, StoredTokens};

use crate::{settings::DatabaseUrl, variables};

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
    #[error(
        "{} must start with sqlite:// or postgres://, not {scheme}",
        variables::DATABASE_URL
    )]
    UnsupportedUrl { scheme: String },
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
        "the store was written with a different encryption key: set {} (or _FILE) to the key \
         it was created with (every replica needs the same key), or start \
         with an empty database and connect the mailboxes again",
        variables::ENCRYPTION_KEY
    )]
    WrongKey,
    #[error("{0}")]
    Key(#[from] crypto::KeyError),
    #[error(
        "another replica has held {mailbox}'s tokens for longer than a refresh may take; try \
         again in a minute"
    )]
    LeaseBusy { mailbox: String },
    #[error("the outbox could not store the message: {0}")]
    Group(String),
    #[error("the stored tokens of {0} cannot be decrypted; call Connect again for this mailbox")]
    Undecryptable(String),
    #[error("the {table} row of {key} is unreadable: its {column} column holds {source}")]
    UnknownValue {
        table: &'static str,
        key: String,
        column: &'static str,
        #[source]
        source: UnknownState,
    },
}

impl StoreError {
    /// Whether stored secrets cannot be decrypted (the mailbox must be connected again), as
    /// opposed to the store being unavailable.
    pub fn is_undecryptable(&self) -> bool {
        matches!(self, Self::Undecryptable(_))
    }
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
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Postgres {
            pool_options = pool_options.after_connect(|connection, _| {
                Box::pin(async move { nodelay::disable_nagle(connection).await })
            });
        }
        let pool = pool_options.connect_with(options).await?;
        if backend == Backend::Sqlite {
            // Write-ahead logging: readers never wait for the writer, and a commit is one
            // append and one fsync (synchronous = FULL, SQLite's default: a committed message
            // survives a power cut). The mode is kept in the file, so every connection uses it.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
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

    /// Deletes expired idempotency keys, sign-in links and admin sessions. Returns how many rows went.
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(self.purge_expired_keys(now).await?
            + self.purge_expired_sign_ins(now).await?
            + self.purge_expired_admin(now).await?)
    }
}

/// Reads a state column strictly: an unknown value names its table, row and column.
fn state_column<T: FromStr<Err = UnknownState>>(
    row: &AnyRow,
    column: &'static str,
    table: &'static str,
    key: &str,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|source| StoreError::UnknownValue {
        table,
        key: key.to_owned(),
        column,
        source,
    })
}

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::UnsupportedUrl {
            scheme: format!("{scheme}:"),
        })
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
