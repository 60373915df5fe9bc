//! Zones of an event with their capacities.

use sqlx::FromRow;
use sync_protocol::zones::ZoneRule;
use uuid::Uuid;

use super::{Db, Tx, db_run, tx_run};

#[derive(Debug, Clone, FromRow)]
pub struct ZoneRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub bit: i64,
    pub name: String,
    pub capacity: Option<i64>,
    pub soft_capacity: Option<i64>,
    pub transfer: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ZoneRow {
    /// The zone as gates and the merge read it.
    pub fn rule(&self) -> anyhow::Result<ZoneRule> {
        Ok(ZoneRule {
            bit: u8::try_from(self.bit)?,
            name: self.name.clone(),
            capacity: self.capacity.map(u32::try_from).transpose()?,
            soft_capacity: self.soft_capacity.map(u32::try_from).transpose()?,
            transfer: self.transfer,
        })
    }
}

macro_rules! select_zone {
    () => {
        "SELECT id, event_id, bit, name, capacity, soft_capacity, transfer, created_at, updated_at
         FROM zones "
    };
}

pub async fn list(db: &Db, event_id: Uuid) -> sqlx::Result<Vec<ZoneRow>> {
    db_run!(db, p => {
        sqlx::query_as(concat!(select_zone!(), "WHERE event_id = $1 ORDER BY bit"))
            .bind(event_id)
            .fetch_all(p)
            .await
    })
}

pub async fn list_tx(tx: &mut Tx, event_id: Uuid) -> sqlx::Result<Vec<ZoneRow>> {
    tx_run!(tx, c => {
        sqlx::query_as(concat!(select_zone!(), "WHERE event_id = $1 ORDER BY bit"))
            .bind(event_id)
            .fetch_all(&mut *c)
            .await
    })
}

/// The event's zones as rules, in bit order.
pub async fn rules_tx(tx: &mut Tx, event_id: Uuid) -> anyhow::Result<Vec<ZoneRule>> {
    list_tx(tx, event_id)
        .await?
        .iter()
        .map(ZoneRow::rule)
        .collect()
}

/// The event's zones as rules, in bit order.
pub async fn rules(db: &Db, event_id: Uuid) -> anyhow::Result<Vec<ZoneRule>> {
    list(db, event_id)
        .await?
        .iter()
        .map(ZoneRow::rule)
        .collect()
}

pub async fn get(db: &Db, event_id: Uuid, id: Uuid) -> sqlx::Result<Option<ZoneRow>> {
    db_run!(db, p => {
        sqlx::query_as(concat!(select_zone!(), "WHERE event_id = $1 AND id = $2"))
            .bind(event_id)
            .bind(id)
            .fetch_optional(p)
            .await
    })
}

/// Inserts or updates a zone; a unique violation (bit or name taken) is the caller's 409.
pub async fn upsert(tx: &mut Tx, z: &ZoneRow) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO zones (id, event_id, bit, name, capacity, soft_capacity, transfer,
                    created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET bit = excluded.bit, name = excluded.name,
                capacity = excluded.capacity, soft_capacity = excluded.soft_capacity,
                transfer = excluded.transfer, updated_at = excluded.updated_at",
        )
        .bind(z.id)
        .bind(z.event_id)
        .bind(z.bit)
        .bind(&z.name)
        .bind(z.capacity)
        .bind(z.soft_capacity)
        .bind(z.transfer)
        .bind(z.created_at)
        .bind(z.updated_at)
        .execute(&mut *c)
        .await
        .map(|_| ())
    })
}

pub async fn delete(tx: &mut Tx, event_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    tx_run!(tx, c => {
        sqlx::query("DELETE FROM zones WHERE event_id = $1 AND id = $2")
            .bind(event_id)
            .bind(id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected() > 0)
    })
}
