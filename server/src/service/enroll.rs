//! Enrollment: a one-time code becomes the gate's bearer credential. The code works once and
//! expires; the credential is stored hashed. A new enrollment of a gate revokes the credentials
//! of any device enrolled before for that gate (one device per gate), and tells the new device
//! where the gate's check-in sequence continues.
//!
//! Enrollment is retry-safe: when a device's answer is lost on a flaky network, the same code
//! from the same device (same `device_name`) works once more within [`RETRY_WINDOW_MS`], as long
//! as nothing enrolled on the gate since; the credential of the first use is revoked then.

use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::Actor;
use crate::domain::crypto::sha256;
use crate::domain::gate::{new_credential, normalize_enrollment_code};
use crate::store::{self, Db, now_ms};

/// How long after using a code the same device may use it once more (its first answer lost).
pub const RETRY_WINDOW_MS: i64 = 10 * 60 * 1_000;

/// A device enrolled on a gate.
#[derive(Debug)]
pub struct Enrolled {
    pub gate_id: Uuid,
    pub event_id: Uuid,
    /// The bearer credential, shown this once.
    pub credential: String,
    pub next_seq: u64,
}

/// Exchanges `code` for a credential of its gate.
pub async fn enroll(db: &Db, code: &str, device_name: &str) -> Result<Enrolled, Error> {
    let code = normalize_enrollment_code(code);
    if code.is_empty() {
        return Err(Error::validation("code", "code is empty"));
    }
    let device_name = crate::domain::text::required_text("device_name", device_name, 120)?;
    let device_name = device_name.as_str();
    let now = now_ms();
    let hash = sha256(code.as_bytes());
    let (credential, token_hash) = new_credential()?;
    let mut tx = db.begin().await?;
    let mut claimed =
        store::gates::claim_code(&mut tx, &hash, device_name, &token_hash, now).await?;
    if claimed.is_none() {
        claimed = store::gates::reclaim_code(
            &mut tx,
            &hash,
            device_name,
            &token_hash,
            now,
            RETRY_WINDOW_MS,
        )
        .await?;
    }
    let Some((event_id, gate_id)) = claimed else {
        return Err(Error::Unauthorized(
            "enrollment code refused: unknown, already used or expired; ask the organizer for a new one",
        ));
    };
    let gate = store::gates::get_tx(&mut tx, event_id, gate_id)
        .await?
        .ok_or(Error::NotFound("gate"))?;
    if !gate.is_active {
        return Err(Error::Conflict(
            "the gate is deactivated; the organizer must reactivate it first".into(),
        ));
    }
    let next_seq =
        store::gates::replace_credential(&mut tx, &gate, &token_hash, device_name, now).await?;
    store::audit::record(
        &mut tx,
        &Actor {
            id: None,
            name: format!("device:{device_name}"),
        },
        "gate.enroll",
        Some(gate.event_id),
        Some(format!("gate:{}", gate.id)),
        serde_json::json!({"device_name": device_name}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(gate.id = %gate.id, event.id = %gate.event_id, device = device_name, "gate enrolled");
    Ok(Enrolled {
        gate_id: gate.id,
        event_id: gate.event_id,
        credential,
        next_seq: u64::try_from(next_seq).map_err(anyhow::Error::from)?,
    })
}
