//! Creating organizer accounts: shared by `POST /api/v1/users`, `server admin create` and the
//! first-start bootstrap.

use crate::domain::Error;
use crate::domain::auth::{Actor, Role, random_password};
use crate::domain::crypto::MasterKey;
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
    crate::domain::text::single_line("email", &email)?;
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(Error::validation(
            "password",
            format!("the password needs at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    let hash = super::login::hash_password(password.to_owned()).await?;
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

/// Refuses to start with a master key other than the one the data was sealed with: the key's
/// check value is stored on first start and compared on every later one.
pub async fn check_master_key(db: &Db, master: &MasterKey) -> anyhow::Result<()> {
    let ours = master.check_value();
    let stored = store::meta::insert_if_absent(db, "master_key_check", &ours).await?;
    if stored != ours {
        anyhow::bail!(
            "the master key does not match the one this database was sealed with: start with \
             the original key (USHER_MASTER_KEY or master.key in the data directory), or the \
             sealed event secrets cannot be read"
        );
    }
    Ok(())
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
