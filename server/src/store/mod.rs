//! Storage: PostgreSQL or an embedded SQLite file, behind one [`Db`] handle.
//!
//! Most queries are written once: [`db_run!`] and [`tx_run!`] expand the same block once per
//! backend (vaultwarden's `db_run!` idea), so one SQL text with `$1` placeholders, runtime
//! `query_as` and `#[derive(FromRow)]` rows serve both. That works because the two schemas keep
//! identical column names and compatible types (see the migration headers): times are `i64`
//! milliseconds, ids `Uuid` (PostgreSQL `UUID` / SQLite `BLOB`), JSON is text, and every integer
//! is bound as `i64`. Where the SQL must differ (PostgreSQL `UNNEST` bulk inserts, `ILIKE`) the
//! caller matches on the variant.
//!
//! Writing transactions on SQLite start with `BEGIN IMMEDIATE`: a deferred transaction that
//! later wants to write can fail with `SQLITE_BUSY` instead of waiting.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::settings::Settings;

pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod backup;
pub mod barcodes;
pub mod capacity;
pub mod changes;
pub mod checkins;
pub mod events;
pub mod exports;
pub mod gates;
pub mod live;
pub mod mail;
pub mod meta;
pub mod nodelay;
pub mod participants;
pub mod personal;
pub mod pgcopy;
pub mod redeem;
pub mod reports;
pub mod retention;
pub mod scratch;
pub mod subject;
pub mod tickets;
pub mod users;
pub mod webhooks;
pub mod zones;

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/server-postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/server-sqlite");

/// A pooled PostgreSQL connection idle this long is pinged before reuse.
const IDLE_PING_AFTER: Duration = Duration::from_secs(5);

/// A pool for one of the two backends.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// An open writing transaction. Dropping it without [`Tx::commit`] rolls back.
#[derive(Debug)]
pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// Runs `$body` with `$pool` bound to the backend's pool (`&PgPool` or `&SqlitePool`).
macro_rules! db_run {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Postgres($pool) => $body,
            $crate::store::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use db_run;

/// Runs `$body` with `$conn` bound to the transaction's connection (`&mut PgConnection` or
/// `&mut SqliteConnection`); reborrow it as `&mut *$conn` for each query.
macro_rules! tx_run {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::store::Tx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use tx_run;

/// Refreshes PostgreSQL's planner statistics of the tables a bulk import fills (a sample: a
/// fraction of a second at 100,000 rows, without blocking reads or writes). SQLite plans by
/// its indexes alone here and needs none.
pub async fn refresh_statistics(db: &Db) -> sqlx::Result<()> {
    match db {
        Db::Postgres(p) => sqlx::query("ANALYZE participants, tickets, changes")
            .execute(p)
            .await
            .map(|_| ()),
        Db::Sqlite(_) => Ok(()),
    }
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        match scheme {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            _ => bail!(
                "DATABASE_URL scheme {scheme:?} is not supported: use postgres://user:password@host/db \
                 for PostgreSQL, or unset DATABASE_URL to use the embedded SQLite file in the data \
                 directory"
            ),
        }
    }
}

impl Db {
    /// Connects (creating the SQLite file and data directory if missing) and runs migrations.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let url = settings.database_url.as_ref().map(|u| u.expose().clone());
        let db = match url {
            Some(url) if Backend::from_url(&url)? == Backend::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(settings.db_max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    // sqlx pings every idle connection before handing it out: one more round
                    // trip per query or transaction, a fifth of a busy online redeem. A
                    // connection that was in use a moment ago is alive; only one that sat idle
                    // (where a database restart or a dropped link would show) is checked.
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= IDLE_PING_AFTER {
                                sqlx::Connection::ping(conn).await?;
                            }
                            Ok(true)
                        })
                    })
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            // NULL over a Unix socket, which needs nothing.
                            let port: Option<i32> = sqlx::query_scalar("SELECT inet_client_port()")
                                .fetch_one(&mut *conn)
                                .await?;
                            if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
                                match nodelay::set(port) {
                                    Ok(true) => {}
                                    Ok(false) => tracing::debug!(
                                        port,
                                        "no local socket for the PostgreSQL connection; \
                                         TCP_NODELAY not set"
                                    ),
                                    Err(e) => tracing::debug!(
                                        error = %e,
                                        "cannot set TCP_NODELAY on the PostgreSQL connection"
                                    ),
                                }
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .context(
                        "cannot connect to PostgreSQL (is it running, and does DATABASE_URL name \
                         an existing database?)",
                    )?;
                Db::Postgres(pool)
            }
            Some(url) => {
                let options = SqliteConnectOptions::from_str(&url)?;
                Self::open_sqlite(options, settings).await?
            }
            None => {
                std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                    format!(
                        "cannot create data directory {}",
                        settings.data_dir.display()
                    )
                })?;
                let path = settings.data_dir.join("usher.db");
                Self::open_sqlite(SqliteConnectOptions::new().filename(path), settings).await?
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Opens an SQLite file as it is (no migrations): backups and their checks.
    pub async fn open_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::new().filename(path))
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Db::Sqlite(pool))
    }

    async fn open_sqlite(
        options: SqliteConnectOptions,
        settings: &Settings,
    ) -> anyhow::Result<Self> {
        let path = options.get_filename().to_owned();
        if path.as_os_str() != ":memory:" && !path.as_os_str().is_empty() {
            private_file(&path)?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Deleted content (an erased participant, a replaced ciphertext) is overwritten
            // with zeros in the file and the WAL instead of lingering in free pages.
            .pragma("secure_delete", "ON")
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Temporary tables (an import's scratch and staged changes, see `scratch`) and large
            // sorts go to a temporary file, deleted when closed, rather than the heap: the
            // bundled SQLite defaults to memory.
            .pragma("temp_store", "file");
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.db_max_connections.clamp(1, 8))
            .connect_with(options)
            .await
            .context("cannot open the SQLite database")?;
        Ok(Db::Sqlite(pool))
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Postgres(p) => PG_MIGRATOR.run(p).await,
            Db::Sqlite(p) => SQLITE_MIGRATOR.run(p).await,
        }
        .context("database migration failed")
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Postgres(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Starts a writing transaction.
    pub async fn begin(&self) -> sqlx::Result<Tx> {
        Ok(match self {
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
            Db::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// After an erasure: on SQLite, copies the WAL into the database file and truncates it, so
    /// the older versions of erased rows that the WAL still holds are gone from disk too
    /// (`secure_delete` has zeroed them in the database file). Best effort: a checkpoint that
    /// long readers keep from finishing is completed by the next one. PostgreSQL reclaims dead
    /// row versions with (auto)vacuum.
    pub async fn scrub_erased(&self) {
        if let Db::Sqlite(p) = self
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(p)
                .await
        {
            tracing::warn!(error = %e, "could not checkpoint the WAL after an erasure");
        }
    }

    /// `SELECT 1`, for `/readyz`.
    pub async fn ping(&self) -> sqlx::Result<()> {
        db_run!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
    }

    /// Whether [`Db::close`] was called.
    pub fn is_closed(&self) -> bool {
        db_run!(self, p => p.is_closed())
    }

    /// (connections open, of which idle), for the metrics.
    pub fn pool_stats(&self) -> (u32, usize) {
        db_run!(self, p => (p.size(), p.num_idle()))
    }

    pub async fn close(&self) {
        db_run!(self, p => p.close().await)
    }
}

/// Creates the SQLite file readable by its owner only (0600), or narrows an existing one (and
/// its `-wal`/`-shm`, which SQLite creates with the database file's mode).
fn private_file(path: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(false).mode(0o600);
        open.open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut names = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            names.push(name.into());
        }
        for name in names {
            match std::fs::metadata(&name) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("cannot make {} private", name.display()))?;
                }
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Tx {
    pub async fn commit(self) -> sqlx::Result<()> {
        match self {
            Tx::Postgres(t) => t.commit().await,
            Tx::Sqlite(t) => t.commit().await,
        }
    }

    pub async fn rollback(self) -> sqlx::Result<()> {
        match self {
            Tx::Postgres(t) => t.rollback().await,
            Tx::Sqlite(t) => t.rollback().await,
        }
    }
}

pub use crate::domain::{ms_to_time, now_ms, time_to_ms};

impl From<sqlx::Error> for crate::domain::Error {
    fn from(e: sqlx::Error) -> Self {
        crate::domain::Error::Internal(anyhow::Error::new(e).context("database error"))
    }
}

/// Is this error a unique-constraint violation (on either backend)?
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_rejected_with_advice() {
        assert_eq!(
            Backend::from_url("postgres://x/y").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://x/y").unwrap(),
            Backend::Postgres
        );
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        let err = Backend::from_url("mysql://x/y").unwrap_err().to_string();
        assert!(err.contains("\"mysql\""), "{err}");
        assert!(err.contains("unset DATABASE_URL"), "{err}");
    }

    #[test]
    fn times_round_trip_through_milliseconds() {
        let ms = 1_796_083_200_123;
        assert_eq!(time_to_ms(ms_to_time(ms)), ms);
    }
}
