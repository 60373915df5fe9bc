//! The SQL of the live fan-out: `pg_notify` inside a writing transaction, and the LISTEN
//! connection that receives what every server process sent.

use sqlx::postgres::PgListener;

use super::{Db, Tx};
use crate::domain::live::CHANNEL;

/// Sends `payloads` on the live channel when (and only if) `tx` commits. PostgreSQL only; a
/// no-op on SQLite, where the one process publishes after its own commit.
pub async fn notify(tx: &mut Tx, payloads: Vec<String>) -> sqlx::Result<()> {
    if let Tx::Postgres(t) = tx {
        sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

/// A LISTEN connection on the live channel.
pub struct Listener(PgListener);

impl Listener {
    pub async fn connect(db: &Db) -> anyhow::Result<Self> {
        let Db::Postgres(pool) = db else {
            anyhow::bail!("LISTEN needs PostgreSQL");
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Self(listener))
    }

    /// The next payload.
    pub async fn recv(&mut self) -> sqlx::Result<String> {
        Ok(self.0.recv().await?.payload().to_owned())
    }
}
