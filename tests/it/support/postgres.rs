//! A database of its own for each test on the local PostgreSQL, dropped afterwards.
//!
//! The server is `GRAPH_MAILER_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test` (trust auth). Without a server the PostgreSQL tests
//! fail with an explanation, unless `GRAPH_MAILER_TEST_SKIP_POSTGRES=1` says to skip them.

use sqlx::{Connection, PgConnection};

/// A fresh, empty database.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// The server the PostgreSQL tests use unless `GRAPH_MAILER_TEST_POSTGRES_URL` names another.
pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The admin URL, or None when PostgreSQL tests are explicitly skipped.
pub fn server_url() -> Option<String> {
    if std::env::var("GRAPH_MAILER_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("GRAPH_MAILER_TEST_SKIP_POSTGRES=1: skipping a PostgreSQL test");
        return None;
    }
    match std::env::var("GRAPH_MAILER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => Some(DEFAULT_SERVER.to_owned()),
    }
}

impl TestDatabase {
    /// Creates `gm_test_<random>` on the server; None when PostgreSQL tests are skipped.
    pub async fn create() -> Option<Self> {
        let admin_url = server_url()?;
        let name = format!("gm_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "this test needs PostgreSQL at {admin_url} ({e}): start one (see the README), \
                 point GRAPH_MAILER_TEST_POSTGRES_URL at yours, or set \
                 GRAPH_MAILER_TEST_SKIP_POSTGRES=1 to skip PostgreSQL tests"
            )
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("cannot create a test database");
        let mut url =
            url::Url::parse(&admin_url).expect("GRAPH_MAILER_TEST_POSTGRES_URL is not a URL");
        url.set_path(&name);
        Some(Self {
            url: url.to_string(),
            admin_url,
            name,
        })
    }

    /// A connection to the test database, for inspecting what the service stored.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        })
        .join();
    }
}
