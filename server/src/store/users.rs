//! Organizer accounts.

use sqlx::FromRow;
use uuid::Uuid;

use super::{Db, Tx, db_run, now_ms, tx_run};

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: i64,
    /// `role` does not apply: the user has roles on single events only.
    pub events_only: bool,
    pub session_epoch: i64,
}

/// `SELECT` of a [`UserRow`]'s columns followed by `$rest` (a literal, so the SQL stays static).
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, email, password_hash, role, disabled, created_at, events_only, ",
            "session_epoch FROM users ",
            $rest
        )
    };
}

pub async fn count(db: &Db) -> sqlx::Result<i64> {
    db_run!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(p).await)
}

pub async fn by_email(db: &Db, email: &str) -> sqlx::Result<Option<UserRow>> {
    db_run!(db, p => {
        sqlx::query_as(select_users!("WHERE email = $1"))
        .bind(email)
        .fetch_optional(p)
        .await
    })
}

pub async fn list(db: &Db) -> sqlx::Result<Vec<UserRow>> {
    db_run!(db, p => {
        sqlx::query_as(select_users!("ORDER BY email"))
        .fetch_all(p)
        .await
    })
}

pub async fn insert(
    tx: &mut Tx,
    id: Uuid,
    email: &str,
    password_hash: &str,
    role: Option<&str>,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, disabled, created_at, events_only)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(email)
        .bind(password_hash)
        // The column is NOT NULL; an events-only user keeps the lowest role there, unused.
        .bind(role.unwrap_or("viewer"))
        .bind(false)
        .bind(now_ms())
        .bind(role.is_none())
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Sets the role on all events (`None`: no role beyond the user's grants on single events).
pub async fn set_role(tx: &mut Tx, id: Uuid, role: Option<&str>) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "UPDATE users SET role = $2, events_only = $3, session_epoch = session_epoch + 1
             WHERE id = $1",
        )
            .bind(id)
            .bind(role.unwrap_or("viewer"))
            .bind(role.is_none())
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

pub async fn set_disabled(tx: &mut Tx, id: Uuid, disabled: bool) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE users SET disabled = $2, session_epoch = session_epoch + 1 WHERE id = $1")
            .bind(id)
            .bind(disabled)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

pub async fn set_password_hash(tx: &mut Tx, id: Uuid, hash: &str) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1 WHERE id = $1")
            .bind(id)
            .bind(hash)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// What a console session is checked against on every request.
#[derive(Debug, Clone, FromRow)]
pub struct SessionUser {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
    pub must_change_password: bool,
    pub events_only: bool,
    pub session_epoch: i64,
}

pub async fn session_user(db: &Db, id: Uuid) -> sqlx::Result<Option<SessionUser>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, email, password_hash, role, disabled, must_change_password, events_only,
                    session_epoch
             FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await
    })
}

pub async fn by_id(db: &Db, id: Uuid) -> sqlx::Result<Option<UserRow>> {
    db_run!(db, p => {
        sqlx::query_as(select_users!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(p)
        .await
    })
}

/// Sets the password hash and whether it must be changed at the next sign-in.
pub async fn set_password(
    tx: &mut Tx,
    id: Uuid,
    hash: &str,
    must_change: bool,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE users SET password_hash = $2, must_change_password = $3,
                    session_epoch = session_epoch + 1
             WHERE id = $1",)
            .bind(id)
            .bind(hash)
            .bind(must_change)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

pub async fn set_must_change_password(db: &Db, id: Uuid, must_change: bool) -> sqlx::Result<()> {
    db_run!(db, p => {
        sqlx::query("UPDATE users SET must_change_password = $2 WHERE id = $1")
            .bind(id)
            .bind(must_change)
            .execute(p)
            .await
            .map(|_| ())
    })
}

/// A user's role on one event (besides their role on all events).
#[derive(Debug, Clone, FromRow)]
pub struct GrantRow {
    pub event_id: Uuid,
    pub role: String,
}

/// The user's roles on single events, by event id.
pub async fn grants(db: &Db, user_id: Uuid) -> sqlx::Result<Vec<GrantRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT event_id, role FROM user_event_roles WHERE user_id = $1 ORDER BY event_id",
        )
        .bind(user_id)
        .fetch_all(p)
        .await
    })
}

/// Every user's grants (for the users list), as (user id, grant).
pub async fn all_grants(db: &Db) -> sqlx::Result<Vec<(Uuid, GrantRow)>> {
    #[derive(FromRow)]
    struct Row {
        user_id: Uuid,
        event_id: Uuid,
        role: String,
    }
    let rows: Vec<Row> = db_run!(db, p => {
        sqlx::query_as(
            "SELECT user_id, event_id, role FROM user_event_roles ORDER BY user_id, event_id",
        )
        .fetch_all(p)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.user_id,
                GrantRow {
                    event_id: r.event_id,
                    role: r.role,
                },
            )
        })
        .collect())
}

/// Grants `role` on `event_id` (replacing an earlier grant there) and ends the user's sessions.
pub async fn put_grant(tx: &mut Tx, user_id: Uuid, event_id: Uuid, role: &str) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO user_event_roles (user_id, event_id, role, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, event_id) DO UPDATE SET role = excluded.role",
        )
        .bind(user_id)
        .bind(event_id)
        .bind(role)
        .bind(now_ms())
        .execute(&mut *c)
        .await?;
    });
    bump_epoch(tx, user_id).await
}

/// Removes the user's grant on `event_id` (false: there was none) and ends their sessions.
pub async fn delete_grant(tx: &mut Tx, user_id: Uuid, event_id: Uuid) -> sqlx::Result<bool> {
    let n = tx_run!(tx, c => {
        sqlx::query("DELETE FROM user_event_roles WHERE user_id = $1 AND event_id = $2")
            .bind(user_id)
            .bind(event_id)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    bump_epoch(tx, user_id).await?;
    Ok(n > 0)
}

/// Ends every bearer token and console session of the user.
pub async fn bump_epoch(tx: &mut Tx, id: Uuid) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Removes the user (their grants go with them); false: no such user.
pub async fn delete(tx: &mut Tx, id: Uuid) -> sqlx::Result<bool> {
    let n = tx_run!(tx, c => {
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(n > 0)
}
