//! Creating organizer accounts: shared by `POST /api/v1/users`, `server admin create` and the
//! first-start bootstrap.

use crate::domain::Error;
use crate::domain::auth::{Actor, Auth, Role, random_password};
use crate::domain::crypto::MasterKey;
use crate::store::{self, Db, is_unique_violation};

/// Minimum password length.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Creates a user with an argon2id-hashed password and records it in the audit log. `role` is
/// the role on all events; `None` makes a user who only has the roles granted per event.
pub async fn create(
    db: &Db,
    actor: &Actor,
    email: &str,
    password: &str,
    role: impl Into<Option<Role>>,
) -> Result<store::users::UserRow, Error> {
    let role: Option<Role> = role.into();
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
    match store::users::insert(&mut tx, id, &email, &hash, role.map(Role::as_str)).await {
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
        serde_json::json!({"email": email, "role": role_name(role)}),
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
    let user = create(db, &Actor::system(), email, &password, Role::Admin)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the first admin {email}: {e}"))?;
    // The generated password was printed; its owner chooses their own at first sign-in.
    store::users::set_must_change_password(db, user.id, true).await?;
    Ok(Some(password))
}

/// A role on all events as stored and shown: `none` for a user with roles per event only.
pub fn role_name(role: Option<Role>) -> &'static str {
    role.map_or("none", Role::as_str)
}

/// A change to an existing account (the CLI's `server users …`). Every change ends the user's
/// bearer tokens and console sessions (their session epoch moves).
#[derive(Debug, Clone)]
pub enum Change {
    /// The role on all events (`None`: roles per event only).
    Role(Option<Role>),
    Disabled(bool),
    /// A new random password, returned once.
    ResetPassword,
}

/// Applies `change` to the user with `email`, with an audit row; returns the new password for
/// [`Change::ResetPassword`].
pub async fn change(
    db: &Db,
    actor: &Actor,
    email: &str,
    change: Change,
) -> Result<Option<String>, Error> {
    let email = email.trim().to_lowercase();
    let user = store::users::by_email(db, &email)
        .await?
        .ok_or(Error::NotFound("user"))?;
    let password = match change {
        Change::ResetPassword => Some(random_password()?),
        _ => None,
    };
    let hash = match &password {
        // Under the login's hashing limit, like every password hash.
        Some(p) => Some(super::login::hash_password(p.clone()).await?),
        None => None,
    };
    let mut tx = db.begin().await?;
    let (action, detail) = match (&change, &hash) {
        (Change::Role(role), _) => {
            store::users::set_role(&mut tx, user.id, role.map(Role::as_str)).await?;
            ("user.role", serde_json::json!({"role": role_name(*role)}))
        }
        (&Change::Disabled(d), _) => {
            store::users::set_disabled(&mut tx, user.id, d).await?;
            ("user.disable", serde_json::json!({"disabled": d}))
        }
        (Change::ResetPassword, Some(hash)) => {
            // A generated password is changed by its owner at the next sign-in.
            store::users::set_password(&mut tx, user.id, hash, true).await?;
            ("user.reset_password", serde_json::json!({}))
        }
        (Change::ResetPassword, None) => {
            return Err(Error::Internal(anyhow::anyhow!("no password hash")));
        }
    };
    store::audit::record(
        &mut tx,
        actor,
        action,
        None,
        Some(format!("user:{}", user.id)),
        detail,
    )
    .await?;
    tx.commit().await?;
    Ok(password)
}

/// A user changes their own password: the current one must verify, the new one must be long
/// enough and differ from it. Clears "must change password"; every console session of the
/// user ends (the session is bound to the password hash).
pub async fn change_own_password(
    db: &Db,
    user_id: uuid::Uuid,
    current: &str,
    new: &str,
) -> Result<(), Error> {
    let user = store::users::session_user(db, user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or(Error::Unauthorized("the account is disabled or gone"))?;
    if !super::login::verify_password(current.to_owned(), Some(user.password_hash.clone())).await? {
        return Err(Error::validation(
            "current_password",
            "the current password is wrong",
        ));
    }
    if new.chars().count() < MIN_PASSWORD_LEN {
        return Err(Error::validation(
            "new_password",
            format!("the password needs at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if new == current {
        return Err(Error::validation(
            "new_password",
            "the new password must differ from the current one",
        ));
    }
    let hash = super::login::hash_password(new.to_owned()).await?;
    let mut tx = db.begin().await?;
    store::users::set_password(&mut tx, user.id, &hash, false).await?;
    let actor = Actor {
        id: Some(user.id),
        name: user.email.clone(),
    };
    store::audit::record(
        &mut tx,
        &actor,
        "user.change_password",
        None,
        Some(format!("user:{}", user.id)),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// [`change`] for the user with this id (the API's `PATCH /users/{id}`); an admin cannot
/// disable or demote themselves (so there is always someone who can undo it).
pub async fn change_by_id(
    db: &Db,
    actor: &Actor,
    id: uuid::Uuid,
    what: Change,
) -> Result<store::users::UserRow, Error> {
    let user = store::users::by_id(db, id)
        .await?
        .ok_or(Error::NotFound("user"))?;
    if actor.id == Some(id) {
        match &what {
            Change::Disabled(true) => {
                return Err(Error::validation("disabled", "you cannot disable yourself"));
            }
            Change::Role(r) if *r != Some(Role::Admin) => {
                return Err(Error::validation("role", "you cannot demote yourself"));
            }
            _ => {}
        }
    }
    change(db, actor, &user.email, what).await?;
    store::users::by_id(db, id)
        .await?
        .ok_or(Error::NotFound("user"))
}

/// Grants `role` on one event to the user `id` (replacing an earlier grant there), with an
/// audit row; the user's sessions end, so their next request carries the new roles.
pub async fn grant(
    db: &Db,
    actor: &Actor,
    id: uuid::Uuid,
    event_id: uuid::Uuid,
    role: Role,
) -> Result<(), Error> {
    store::users::by_id(db, id)
        .await?
        .ok_or(Error::NotFound("user"))?;
    store::events::require(db, event_id).await?;
    let mut tx = db.begin().await?;
    store::users::put_grant(&mut tx, id, event_id, role.as_str()).await?;
    store::audit::record(
        &mut tx,
        actor,
        "user.grant",
        Some(event_id),
        Some(format!("user:{id}")),
        serde_json::json!({"role": role.as_str()}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Takes the user's role on one event away (404 when they had none there).
pub async fn revoke_grant(
    db: &Db,
    actor: &Actor,
    id: uuid::Uuid,
    event_id: uuid::Uuid,
) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    if !store::users::delete_grant(&mut tx, id, event_id).await? {
        return Err(Error::NotFound("grant"));
    }
    store::audit::record(
        &mut tx,
        actor,
        "user.revoke_grant",
        Some(event_id),
        Some(format!("user:{id}")),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a user (not oneself): their tokens and sessions end with the row.
pub async fn delete(db: &Db, actor: &Actor, id: uuid::Uuid) -> Result<(), Error> {
    if actor.id == Some(id) {
        return Err(Error::Conflict("you cannot remove yourself".into()));
    }
    let mut tx = db.begin().await?;
    if !store::users::delete(&mut tx, id).await? {
        return Err(Error::NotFound("user"));
    }
    store::audit::record(
        &mut tx,
        actor,
        "user.delete",
        None,
        Some(format!("user:{id}")),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A stored user's roles as a request's [`Auth`]: their role on all events and their grants
/// (one indexed lookup), read on every request so a change counts at once.
pub async fn auth_of(db: &Db, user: &store::users::SessionUser) -> Result<Auth, Error> {
    let role = if user.events_only {
        None
    } else {
        Some(
            Role::parse(&user.role)
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("bad role in database")))?,
        )
    };
    let grants = store::users::grants(db, user.id)
        .await?
        .into_iter()
        .map(|g| {
            Role::parse(&g.role)
                .map(|r| (g.event_id, r))
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("bad grant role in database")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Auth {
        user_id: user.id,
        email: user.email.clone(),
        role,
        grants,
    })
}
