//! The durable store: SQLite (embedded default) or PostgreSQL, one schema
//! through the migrations in `migrations/`, one SQL dialect (`$n`
//! parameters, BIGINT, TEXT, DOUBLE PRECISION) that both understand.

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}` (use sqlite://PATH or postgres://...)")]
    Url(String),
    #[error("cannot open the database {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("another gigafab server is using the database {0}; one server per store")]
    InUse(String),
    #[error(
        "the database {url} is damaged (SQLite's quick_check: {detail}); refusing to start on it: restore it from a backup"
    )]
    Damaged { url: String, detail: String },
}

/// A connection pool and what it talks to.
#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub kind: StoreKind,
    /// PostgreSQL: the connection holding the server's advisory lock.
    _lock: Option<std::sync::Arc<tokio::sync::Mutex<sqlx::AnyConnection>>>,
    /// How to open a connection of its own (the controller's writer).
    opts: AnyConnectOptions,
}

/// The SQLite settings of every connection: durable commits (the WAL is
/// synced at every commit), a wait for a busy database, foreign keys.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                              PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;";

/// Advisory-lock key of a gigafab server on a PostgreSQL database.
const PG_LOCK_KEY: i64 = 0x0067_6967_6166_6162;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// URL of the embedded database in `data_dir`.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("gigafab.db").display()
    )
}

/// Hides a password in a URL for messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((cred, host)) = rest.rsplit_once('@')
        && let Some((user, _)) = cred.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            StoreKind::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            StoreKind::Postgres
        } else {
            return Err(StoreError::Url(redact(url)));
        };
        if kind == StoreKind::Postgres {
            use sqlx::migrate::MigrateDatabase;
            let exists =
                sqlx::Any::database_exists(url)
                    .await
                    .map_err(|e| StoreError::Connect {
                        url: redact(url),
                        source: e,
                    })?;
            if !exists {
                sqlx::Any::create_database(url)
                    .await
                    .map_err(|e| StoreError::Connect {
                        url: redact(url),
                        source: e,
                    })?;
            }
        }
        let opts = AnyConnectOptions::from_str(url).map_err(|e| StoreError::Connect {
            url: redact(url),
            source: e,
        })?;
        if kind == StoreKind::Sqlite {
            // a damaged file is refused at once, never served (nor retried)
            use sqlx::{Connection, Row};
            let damaged = |detail: String| StoreError::Damaged {
                url: redact(url),
                detail: gigafab_core::time::excerpt(&detail, 300),
            };
            let mut conn = sqlx::AnyConnection::connect_with(&opts)
                .await
                .map_err(|e| {
                    let t = e.to_string();
                    if ["malformed", "not a database", "corrupt"]
                        .iter()
                        .any(|w| t.contains(w))
                    {
                        damaged(t)
                    } else {
                        StoreError::Connect {
                            url: redact(url),
                            source: e,
                        }
                    }
                })?;
            let rows = sqlx::query("PRAGMA quick_check")
                .fetch_all(&mut conn)
                .await
                .map_err(|e| damaged(e.to_string()))?;
            let first: String = rows
                .first()
                .and_then(|r| r.try_get::<String, _>(0).ok())
                .unwrap_or_default();
            let _ = conn.close().await;
            if first != "ok" {
                return Err(damaged(first));
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if kind == StoreKind::Sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == StoreKind::Sqlite {
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts.clone())
            .await
            .map_err(|e| StoreError::Connect {
                url: redact(url),
                source: e,
            })?;
        let lock = if kind == StoreKind::Postgres {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::AnyConnection::connect(url).await?;
            let got: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
                .bind(PG_LOCK_KEY)
                .fetch_one(&mut conn)
                .await?
                .try_get(0)?;
            if !got {
                return Err(StoreError::InUse(redact(url)));
            }
            Some(std::sync::Arc::new(tokio::sync::Mutex::new(conn)))
        } else {
            None
        };
        MIGRATOR.run(&pool).await?;
        Ok(Store {
            pool,
            kind,
            _lock: lock,
            opts,
        })
    }

    /// A connection outside the pool, for the one writer. After a failed
    /// write its owner closes it: whatever state the failure left (an open
    /// transaction, a lock held after SQLITE_FULL) goes with it, where a
    /// pooled connection would carry it on to the next writer.
    pub async fn writer(&self) -> Result<sqlx::AnyConnection, sqlx::Error> {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect_with(&self.opts).await?;
        if self.kind == StoreKind::Sqlite {
            conn.execute(SQLITE_PRAGMAS).await?;
        }
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;
    use sqlx::Row;

    /// A store written before user names were private to organisations
    /// keeps its users: members get their `ORG/NAME` login, others keep
    /// their name, and the migration is idempotent.
    #[tokio::test]
    async fn members_names_become_logins() {
        let dir = std::env::temp_dir().join(format!("gigafab-mig-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = sqlite_url(&dir);
        {
            let s = Store::open(&url).await.unwrap();
            for q in [
                "INSERT INTO orgs (id, name, category, created_ms) VALUES (1, 'acme', 'sme', 0)",
                "INSERT INTO users (id, name, org_id, role, created_ms) VALUES (1, 'admin', NULL, 'admin', 0)",
                "INSERT INTO users (id, name, org_id, role, created_ms) VALUES (2, 'alice', 1, 'member', 0)",
                // as the schema stood before 0004
                "DELETE FROM _sqlx_migrations WHERE version = 4",
            ] {
                sqlx::query(q).execute(&s.pool).await.unwrap();
            }
            s.pool.close().await;
        }
        for _ in 0..2 {
            let s = Store::open(&url).await.unwrap();
            let names: Vec<String> = sqlx::query("SELECT name FROM users ORDER BY id")
                .fetch_all(&s.pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect();
            assert_eq!(names, ["admin", "acme/alice"]);
            sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 4")
                .execute(&s.pool)
                .await
                .unwrap();
            s.pool.close().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
