//! Service API keys: long-lived bearer tokens (`usk_…`) for the systems that call the API — a
//! CRM, a badge station, a BI tool. Created by an admin with a role, for one event or for all;
//! shown once, stored as a SHA-256, revocable, their last use recorded. Unlike session tokens
//! they do not expire every 15 minutes; revoking one ends it at once (every request looks it up).

use base64::Engine;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::{Actor, Auth, Role};
use crate::domain::crypto::{random_bytes, sha256};
use crate::domain::text::required_text;
use crate::store::api_keys::ApiKeyRow;
use crate::store::{self, Db, now_ms};

/// Every service key starts with this.
pub const PREFIX: &str = "usk_";

/// A new key: its row and the secret, shown once.
#[derive(Debug)]
pub struct Created {
    pub row: ApiKeyRow,
    pub key: String,
}

pub async fn create(
    db: &Db,
    actor: &Actor,
    name: &str,
    role: Role,
    event_id: Option<Uuid>,
) -> Result<Created, Error> {
    let name = required_text("name", name, 120)?;
    if let Some(e) = event_id {
        store::events::require(db, e).await?;
    }
    let key = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
    );
    let row = ApiKeyRow {
        id: Uuid::now_v7(),
        name,
        prefix: key.chars().take(PREFIX.len() + 6).collect(),
        role: role.as_str().to_owned(),
        event_id,
        created_by: actor.id,
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    let mut tx = db.begin().await?;
    store::api_keys::insert(&mut tx, &row, &sha256(key.as_bytes())).await?;
    store::audit::record(
        &mut tx,
        actor,
        "api_key.create",
        event_id,
        Some(format!("api_key:{}", row.id)),
        serde_json::json!({"name": row.name, "role": row.role}),
    )
    .await?;
    tx.commit().await?;
    Ok(Created { row, key })
}

pub async fn revoke(db: &Db, actor: &Actor, id: Uuid) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    if !store::api_keys::revoke(&mut tx, id, now_ms()).await? {
        return Err(Error::NotFound("api key"));
    }
    store::audit::record(
        &mut tx,
        actor,
        "api_key.revoke",
        None,
        Some(format!("api_key:{id}")),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The caller a service key names; `path` is the request path, which an event-scoped key must
/// stay inside (`/api/v1/events/{its event}…`).
pub async fn authenticate(db: &Db, key: &str, path: &str) -> Result<Auth, Error> {
    let row = store::api_keys::by_hash(db, &sha256(key.as_bytes()))
        .await?
        .ok_or(Error::Unauthorized(
            "this API key is unknown or revoked; ask an admin for a new one",
        ))?;
    if let Some(event) = row.event_id {
        let inside = path
            .strip_prefix("/api/v1/events/")
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|e| e == event.to_string());
        if !inside {
            return Err(Error::Forbidden);
        }
    }
    let role = Role::parse(&row.role)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("bad api key role in database")))?;
    if let Err(e) = store::api_keys::touch(db, row.id, now_ms()).await {
        tracing::warn!(error = %e, "recording an API key's use");
    }
    // An event's key holds its role on that event only, exactly as a user's grant does.
    let (role, grants) = match row.event_id {
        Some(event) => (None, vec![(event, role)]),
        None => (Some(role), Vec::new()),
    };
    Ok(Auth {
        user_id: row.id,
        email: format!("api-key:{}", row.name),
        role,
        grants,
    })
}
