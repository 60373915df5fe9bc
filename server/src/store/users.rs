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
}

pub async fn count(db: &Db) -> sqlx::Result<i64> {
    db_run!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(p).await)
}

pub async fn by_email(db: &Db, email: &str) -> sqlx::Result<Option<UserRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, email, password_hash, role, disabled, created_at FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(p)
        .await
    })
}

pub async fn list(db: &Db) -> sqlx::Result<Vec<UserRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, email, password_hash, role, disabled, created_at FROM users ORDER BY email",
        )
        .fetch_all(p)
        .await
    })
}

pub async fn insert(
    tx: &mut Tx,
    id: Uuid,
    email: &str,
    password_hash: &str,
    role: &str,
) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, disabled, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(email)
        .bind(password_hash)
        .bind(role)
        .bind(false)
        .bind(now_ms())
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

pub async fn set_role(tx: &mut Tx, id: Uuid, role: &str) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
            .bind(id)
            .bind(role)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

pub async fn set_disabled(tx: &mut Tx, id: Uuid, disabled: bool) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE users SET disabled = $2 WHERE id = $1")
            .bind(id)
            .bind(disabled)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

pub async fn set_password_hash(tx: &mut Tx, id: Uuid, hash: &str) -> sqlx::Result<()> {
    tx_run!(tx, c => {
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
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
}

pub async fn session_user(db: &Db, id: Uuid) -> sqlx::Result<Option<SessionUser>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, email, password_hash, role, disabled, must_change_password
             FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await
    })
}

pub async fn by_id(db: &Db, id: Uuid) -> sqlx::Result<Option<UserRow>> {
    db_run!(db, p => {
        sqlx::query_as(
            "SELECT id, email, password_hash, role, disabled, created_at FROM users WHERE id = $1",
        )
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
        sqlx::query("UPDATE users SET password_hash = $2, must_change_password = $3 WHERE id = $1")
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
