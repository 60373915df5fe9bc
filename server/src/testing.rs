//! Fresh PostgreSQL databases for the tests and benchmarks of every crate that runs this server
//! against a real PostgreSQL (this crate's API and two-process tests, the gate agent's end-to-end
//! tests, the benchmarks). Not used by the server itself.

use anyhow::Context;
use sqlx::Connection;
use uuid::Uuid;

/// The PostgreSQL superuser connection tests create their databases with:
/// `USHER_TEST_DATABASE_URL`, else the local server's `postgres` user over TCP.
pub fn admin_url() -> String {
    std::env::var("USHER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    match query {
        Some(q) => format!("{}/{name}?{q}", &base[..host_end]),
        None => format!("{}/{name}", &base[..host_end]),
    }
}

/// A fresh database on the [`admin_url`] server, dropped (`WITH (FORCE)`) when this is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
    /// The connection URL of this database.
    pub url: String,
}

impl PgDatabase {
    /// Creates `{prefix}_{random}`. Tests that need PostgreSQL are never skipped: the error
    /// says how to start it.
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        let admin = admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.with_context(|| {
            format!(
                "PostgreSQL is not reachable at {admin}. Tests that need it are never skipped: \
                 start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start`, or point \
                 USHER_TEST_DATABASE_URL at a PostgreSQL superuser connection"
            )
        })?;
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .context("CREATE DATABASE")?;
        conn.close().await.ok();
        let url = with_database(&admin, &name);
        Ok(Self { name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime it must not block: use a private one on its own thread.
        let (admin, name) = (admin_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?host=/run/pg", "x"),
            "postgres://u@h/x?host=/run/pg"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
    }
}
