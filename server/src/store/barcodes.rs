//! The ticket shop's barcodes of an event's tickets, by their keyed lookup key
//! ([`sync_protocol::barcode`]); the barcode text is never stored.

use std::collections::HashMap;

use uuid::Uuid;

use super::Tx;

/// The serial each of `keys` belongs to, for those the event has.
pub async fn serials_of(
    tx: &mut Tx,
    event_id: Uuid,
    keys: &[String],
) -> anyhow::Result<HashMap<String, i64>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64)> = match tx {
        Tx::Postgres(t) => {
            sqlx::query_as(
                "SELECT barcode_key, serial FROM ticket_barcodes
                 WHERE event_id = $1 AND barcode_key = ANY($2)",
            )
            .bind(event_id)
            .bind(keys)
            .fetch_all(&mut **t)
            .await?
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(
                "SELECT barcode_key, serial FROM ticket_barcodes
                 WHERE event_id = $1 AND barcode_key IN (SELECT value FROM json_each($2))",
            )
            .bind(event_id)
            .bind(serde_json::to_string(keys)?)
            .fetch_all(&mut **t)
            .await?
        }
    };
    Ok(rows.into_iter().collect())
}

/// Stores (or moves) barcodes: `(lookup key, serial)`.
pub async fn upsert(tx: &mut Tx, event_id: Uuid, rows: &[(String, i64)]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Postgres(t) => {
            let (keys, serials): (Vec<&str>, Vec<i64>) =
                rows.iter().map(|(k, s)| (k.as_str(), *s)).unzip();
            sqlx::query(
                "INSERT INTO ticket_barcodes (event_id, barcode_key, serial)
                 SELECT $1, u.k, u.s FROM UNNEST($2::text[], $3::int8[]) AS u(k, s)
                 ON CONFLICT (event_id, barcode_key) DO UPDATE SET serial = EXCLUDED.serial",
            )
            .bind(event_id)
            .bind(&keys)
            .bind(&serials)
            .execute(&mut **t)
            .await?;
        }
        Tx::Sqlite(t) => {
            for (key, serial) in rows {
                sqlx::query(
                    "INSERT INTO ticket_barcodes (event_id, barcode_key, serial)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (event_id, barcode_key) DO UPDATE SET serial = excluded.serial",
                )
                .bind(event_id)
                .bind(key.as_str())
                .bind(*serial)
                .execute(&mut **t)
                .await?;
            }
        }
    }
    Ok(())
}
