//! Creating organizer accounts: shared by `POST /api/v1/users`, `server admin create` and the
//! first-start bootstrap.

use crate::domain::Error;
use crate::domain::auth::{Actor, Role, hash_password, random_password};
use crate::store::{self, Db, is_unique_violation};

/// Minimum password length.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Creates a user with an argon2id-hashed password and records it in the audit log.
pub async fn create(
    db: &Db,
    actor: &Actor,
    email: &str,
    password: &str,
    role: Role,
) -> Result<store::users::UserRow, Error> {
    let email = email.trim().to_lowercase();
    if email.is_empty() || !email.contains('@') || email.chars().any(char::is_whitespace) {
        return Err(Error::validation("email", "not an e-mail address"));
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(Error::validation(
            "password",
            format!("the password needs at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| Error::Internal(e.into()))??;
    let id = uuid::Uuid::now_v7();
    let mut tx = db.begin().await?;
    match store::users::insert(&mut tx, id, &email, &hash, role.as_str()).await {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::Conflict(format!(
                "a user with e-mail {email} already exists"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    store::audit::record(
        &mut tx,
        actor,
        "user.create",
        None,
        Some(format!("user:{id}")),
        serde_json::json!({"email": email, "role": role.as_str()}),
    )
    .await?;
    tx.commit().await?;
    store::users::by_email(db, &email)
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("user vanished after insert")))
}

/// On first start (no users at all) creates the admin and returns its one-time password.
pub async fn bootstrap_admin(db: &Db, email: &str) -> anyhow::Result<Option<String>> {
    if store::users::count(db).await? > 0 {
        return Ok(None);
    }
    let password = random_password()?;
    create(db, &Actor::system(), email, &password, Role::Admin)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the first admin {email}: {e}"))?;
    Ok(Some(password))
}
