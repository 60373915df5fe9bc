//! Enrollment: a one-time code becomes the gate's bearer credential. The code works once and
//! expires; the credential is stored hashed. A new enrollment of a gate revokes the credentials
//! of any device enrolled before for that gate (one device per gate), and tells the new device
//! where the gate's check-in sequence continues.
//!
//! Enrollment is retry-safe: when a device's answer is lost on a flaky network, the same code
//! from the same device (same `device_name`) works once more within [`RETRY_WINDOW_MS`], as long
//! as nothing enrolled on the gate since; the credential of the first use is revoked then.

//!
//! The device sends the public half of its own mesh key (DESIGN §8); it is stored on the gate
//! and the gate's configuration is replicated again in the same transaction, so the event's
//! other gates learn the new peer key with their next pull.

use sync_protocol::wire::ChangeData;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::auth::Actor;
use crate::domain::crypto::sha256;
use crate::domain::event::{EventSettings, EventStatus};
use crate::domain::gate::{new_credential, normalize_enrollment_code};
use crate::service::AppState;
use crate::service::tickets::EventKeys;
use crate::service::uow::UnitOfWork;
use crate::store::gates::GateRow;
use crate::store::{self, now_ms};

/// How a gate's replicated configuration is made (the HTTP layer's `gate_change`).
pub type ConfigChange =
    fn(&GateRow, &EventKeys, &EventSettings, EventStatus) -> Result<ChangeData, Error>;

/// A mesh public key as sent at enrollment: 64 hex digits of a valid ed25519 point; returned
/// in lowercase hex.
pub fn parse_mesh_public_key(hex_key: &str) -> Result<String, Error> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::validation(
                "mesh_public_key",
                "mesh_public_key must be 64 hex digits (an ed25519 public key)",
            )
        })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| {
        Error::validation("mesh_public_key", "mesh_public_key is not an ed25519 key")
    })?;
    Ok(hex::encode(bytes))
}

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

/// Exchanges `code` for a credential of its gate, recording the device's mesh public key (hex,
/// checked by [`parse_mesh_public_key`]) and replicating the gate's configuration (made by
/// `config_change`) to the event's gates.
pub async fn enroll(
    state: &AppState,
    code: &str,
    device_name: &str,
    mesh_public_key: Option<&str>,
    config_change: ConfigChange,
) -> Result<Enrolled, Error> {
    let db = &state.db;
    let code = normalize_enrollment_code(code);
    if code.is_empty() {
        return Err(Error::validation("code", "code is empty"));
    }
    let device_name = crate::domain::text::required_text("device_name", device_name, 120)?;
    let device_name = device_name.as_str();
    let now = now_ms();
    let hash = sha256(code.as_bytes());
    let (credential, token_hash) = new_credential()?;
    let mut uow = UnitOfWork::begin(db, state.master.personal()).await?;
    let tx = uow.tx();
    let mut claimed = store::gates::claim_code(tx, &hash, device_name, &token_hash, now).await?;
    if claimed.is_none() {
        claimed =
            store::gates::reclaim_code(tx, &hash, device_name, &token_hash, now, RETRY_WINDOW_MS)
                .await?;
    }
    let Some((event_id, gate_id)) = claimed else {
        return Err(Error::Unauthorized(
            "enrollment code refused: unknown, already used or expired; ask the organizer for a new one",
        ));
    };
    let mut gate = store::gates::get_tx(tx, event_id, gate_id)
        .await?
        .ok_or(Error::NotFound("gate"))?;
    if !gate.is_active {
        return Err(Error::Conflict(
            "the gate is deactivated; the organizer must reactivate it first".into(),
        ));
    }
    let next_seq =
        store::gates::replace_credential(tx, &gate, &token_hash, device_name, now).await?;
    store::gates::set_mesh_public_key(tx, gate.id, mesh_public_key).await?;
    gate.mesh_public_key = mesh_public_key.map(str::to_owned);
    store::audit::record(
        tx,
        &Actor {
            id: None,
            name: format!("device:{device_name}"),
        },
        "gate.enroll",
        Some(gate.event_id),
        Some(format!("gate:{}", gate.id)),
        serde_json::json!({"device_name": device_name, "mesh_key": mesh_public_key.is_some()}),
    )
    .await?;
    let event = store::events::require(db, gate.event_id).await?;
    let keys = EventKeys::load(db, &state.master, gate.event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    let change = config_change(
        &gate,
        &keys,
        &EventSettings::parse(&event.settings)?,
        EventStatus::parse(&event.status)?,
    )?;
    uow.change(gate.event_id, change, false)?;
    uow.commit(&state.notifier).await?;
    tracing::info!(gate.id = %gate.id, event.id = %gate.event_id, device = device_name, "gate enrolled");
    Ok(Enrolled {
        gate_id: gate.id,
        event_id: gate.event_id,
        credential,
        next_seq: u64::try_from(next_seq).map_err(anyhow::Error::from)?,
    })
}
