//! The durable store: SQLite (embedded default) or PostgreSQL, one schema
//! through the migrations in `migrations/`, one SQL dialect (`$n`
//! parameters, BIGINT, TEXT, DOUBLE PRECISION) that both understand.
//!
//! The SQL lives here: each aggregate's module ([`jobs`], [`tenancy`],
//! [`allocs`], [`audit`], [`fleet`]) turns a typed write into its
//! statement; [`commit`] folds a batch of them into one transaction.

pub mod access;
pub mod allocs;
pub mod audit;
pub mod catalog;
pub mod commit;
pub mod endpoints;
pub mod fleet;
pub mod idempotency;
pub mod jobs;
pub mod outbox;
pub mod sessions;
pub mod tenancy;

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
    /// Writes `ops` in one transaction of their own, on a connection of
    /// the pool (the handlers outside the controller's group commit).
    pub async fn write(&self, ops: Vec<commit::Op>) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        commit::write_ops(&mut conn, ops).await
    }

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
            if let Some(path) = sqlite_path(url) {
                let mut wal = path.into_os_string();
                wal.push("-wal");
                if let Ok(bytes) = std::fs::read(&wal) {
                    match wal_check(&bytes) {
                        WalCheck::Damaged {
                            frame,
                            frames,
                            commits_after,
                        } => {
                            return Err(damaged(format!(
                                "its write-ahead log {} is damaged at frame {frame} of {frames}; \
                                 {commits_after} later commits would be silently dropped. To start \
                                 from what precedes the damage instead, move the -wal file aside \
                                 (what it held from frame {frame} on is lost)",
                                std::path::Path::new(&wal).display()
                            )));
                        }
                        WalCheck::TornTail { frame, frames } => tracing::warn!(
                            "the write-ahead log {} ends in a torn commit at frame {frame}: its \
                             {frames} frames (pages) are dropped. After a crash during a write \
                             that commit was never acknowledged; without a crash, the last \
                             commit before the stop is lost",
                            std::path::Path::new(&wal).display()
                        ),
                        WalCheck::Ok => {}
                    }
                }
            }
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

    /// A store that never connects (nothing is opened until it is used):
    /// for the controller's unit tests, whose commits are kept in memory.
    #[cfg(test)]
    pub(crate) fn detached() -> Store {
        sqlx::any::install_default_drivers();
        let opts: AnyConnectOptions = "sqlite::memory:".parse().expect("a SQLite URL");
        Store {
            pool: sqlx::pool::PoolOptions::new().connect_lazy_with(opts.clone()),
            kind: StoreKind::Sqlite,
            _lock: None,
            opts,
        }
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

/// The file of a `sqlite:` URL, if it names one.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.into())
}

/// What a look at a SQLite write-ahead log found.
#[derive(Debug, PartialEq, Eq)]
pub enum WalCheck {
    /// Every frame of the current generation checks out (or there is no log).
    Ok,
    /// Frame `frame` (1-based) of the current generation fails its
    /// checksum or is cut short, and no commit follows: the last,
    /// unacknowledged commit was torn by a crash; its `frames` frames
    /// (pages) are dropped.
    TornTail { frame: usize, frames: usize },
    /// A frame fails its checksum and later commits of the same generation
    /// follow it: SQLite would stop at the damage and silently drop them.
    Damaged {
        frame: usize,
        frames: usize,
        commits_after: usize,
    },
}

/// Checks a write-ahead log (the format of sqlite.org/fileformat.html,
/// "WAL file format"): SQLite replays frames up to the first one whose
/// cumulative checksum fails and ignores the rest, so damage in the middle
/// of the log would lose acknowledged commits without a word.
pub fn wal_check(bytes: &[u8]) -> WalCheck {
    const HEADER: usize = 32;
    const FRAME_HEADER: usize = 24;
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if bytes.len() < HEADER {
        return WalCheck::Ok;
    }
    let magic = be(&bytes[0..4]);
    let little = match magic {
        0x377f_0682 => true,
        0x377f_0683 => false,
        _ => return WalCheck::Ok, // not a log SQLite would replay either
    };
    let page = be(&bytes[8..12]) as usize;
    if !(512..=65_536).contains(&page) || !page.is_power_of_two() {
        return WalCheck::Ok;
    }
    let word = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let sum = |mut s: (u32, u32), data: &[u8]| {
        for c in data.chunks_exact(8) {
            s.0 = s.0.wrapping_add(word(&c[0..4])).wrapping_add(s.1);
            s.1 = s.1.wrapping_add(word(&c[4..8])).wrapping_add(s.0);
        }
        s
    };
    let mut s = sum((0, 0), &bytes[0..24]);
    if s != (be(&bytes[24..28]), be(&bytes[28..32])) {
        return WalCheck::Ok; // a header SQLite ignores: the log is not replayed
    }
    let salts = &bytes[16..24];
    let frame_len = FRAME_HEADER + page;
    let frames: Vec<&[u8]> = bytes[HEADER..].chunks_exact(frame_len).collect();
    let mut bad = None;
    let mut generation_ended = false;
    // frames since the last commit frame (a commit's frame says the
    // database's size after it)
    let mut open = 0usize;
    for (i, f) in frames.iter().enumerate() {
        if &f[8..16] != salts {
            generation_ended = true;
            break; // an older generation's leftovers: the log ends here
        }
        s = sum(s, &f[0..8]);
        s = sum(s, &f[FRAME_HEADER..]);
        if s != (be(&f[16..20]), be(&f[20..24])) {
            bad = Some(i);
            break;
        }
        open = if be(&f[4..8]) != 0 { 0 } else { open + 1 };
    }
    let Some(bad) = bad else {
        // a frame cut short at the end: a crash in the middle of writing it
        let cut = (bytes.len() - HEADER) % frame_len;
        if cut > 0 && !generation_ended {
            return WalCheck::TornTail {
                frame: frames.len() + 1,
                frames: open + 1,
            };
        }
        return WalCheck::Ok;
    };
    let commits_after = frames[bad + 1..]
        .iter()
        .filter(|f| &f[8..16] == salts && be(&f[4..8]) != 0)
        .count();
    if commits_after == 0 {
        WalCheck::TornTail {
            frame: bad + 1,
            frames: frames.len() - bad + open,
        }
    } else {
        WalCheck::Damaged {
            frame: bad + 1,
            frames: frames.len(),
            commits_after,
        }
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

#[cfg(test)]
mod wal_tests {
    use super::*;

    /// A real log: 40 commits through SQLite, copied while still open.
    async fn a_log() -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("gigafab-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = sqlite_url(&dir);
        let s = Store::open(&url).await.unwrap();
        for i in 0..40 {
            sqlx::query(
                "INSERT INTO orgs (id, name, category, created_ms) VALUES ($1, $2, 'sme', 0)",
            )
            .bind(i as i64 + 1)
            .bind(format!("org-{i}"))
            .execute(&s.pool)
            .await
            .unwrap();
        }
        let wal = std::fs::read(dir.join("gigafab.db-wal")).unwrap();
        s.pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        wal
    }

    #[tokio::test]
    async fn damage_in_the_middle_of_the_log_is_found() {
        let wal = a_log().await;
        assert_eq!(wal_check(&wal), WalCheck::Ok);
        let page = u32::from_be_bytes([wal[8], wal[9], wal[10], wal[11]]) as usize;
        let frame = 24 + page;
        let n = (wal.len() - 32) / frame;
        assert!(n >= 40, "{n} frames");
        // garbage in the page of a frame in the middle
        let mut bad = wal.clone();
        let at = 32 + (n / 2) * frame + 24 + 100;
        bad[at..at + 64].fill(0xA5);
        match wal_check(&bad) {
            WalCheck::Damaged {
                frame,
                frames,
                commits_after,
            } => {
                assert_eq!((frame, frames), (n / 2 + 1, n));
                assert!(commits_after >= 10, "{commits_after}");
            }
            other => panic!("{other:?}"),
        }
        // the last frame torn: a crash mid-commit, nothing after it
        let mut torn = wal.clone();
        let at = 32 + (n - 1) * frame + 24 + 10;
        torn[at] ^= 0xFF;
        match wal_check(&torn) {
            WalCheck::TornTail { frame: f, frames } => {
                assert_eq!(f, n);
                assert!(frames >= 1, "{frames}");
            }
            other => panic!("{other:?}"),
        }
        // a log cut inside a frame (a crash mid-write): SQLite replays what
        // precedes it, and the server says what was dropped
        match wal_check(&wal[..wal.len() - 100]) {
            WalCheck::TornTail { frame: f, frames } => {
                assert_eq!(f, n);
                assert!(frames >= 1, "{frames}");
            }
            other => panic!("{other:?}"),
        }
        // what SQLite would not replay is not judged
        assert_eq!(wal_check(&[0u8; 10]), WalCheck::Ok);
        assert_eq!(wal_check(&vec![0x5Au8; 5000]), WalCheck::Ok);
    }
}
