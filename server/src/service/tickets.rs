//! Ticket issuing: event key material, the signed `U1:` credential, short codes, the replicated
//! ticket/revocation changes, and QR rendering.
//!
//! Credentials are not stored. ed25519 signatures are deterministic, so signing the stored
//! fields again with the same key yields byte-for-byte the same `U1:` text; the database keeps
//! only the fields (serial, key id, validity, scopes), and a bulk import of 100,000 participants
//! spends no time signing.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use sync_protocol::ShortCode;
use sync_protocol::ble::BleKey;
use sync_protocol::short_code::MAX_VALUE as SHORT_CODE_MAX;
use sync_protocol::ticket::TicketFields;
use sync_protocol::wire::{ChangeData, RevocationChange, SigningKeyChange, TicketChange};
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::crypto::{MasterKey, random_below, random_bytes};
use crate::store::events::{EventSecrets, SigningKeyRow};
use crate::store::tickets::TicketRow;
use crate::store::{self, Db, Tx};

/// Decrypted key material of one event, loaded per request.
pub struct EventKeys {
    pub event_id: Uuid,
    pub event_tag: u32,
    pub ble_secret: [u8; 32],
    pub mesh_key: [u8; 32],
    /// The event barcode key: shop barcodes are stored and replicated by the lookup key it
    /// gives ([`sync_protocol::barcode`]).
    pub barcode_key: [u8; 32],
    /// key_id → signing key, retired ones included (they still verify old tickets).
    pub signing: BTreeMap<u32, SigningKey>,
    /// The key new tickets are signed with.
    pub current_key_id: u32,
    /// The argon2id hash of the event's supervisor PIN, replicated in every gate's config.
    pub supervisor_pin: Option<String>,
    /// The event's zones with their capacities, replicated in every gate's config.
    pub zones: Vec<sync_protocol::zones::ZoneRule>,
}

impl std::fmt::Debug for EventKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventKeys")
            .field("event_id", &self.event_id)
            .field("current_key_id", &self.current_key_id)
            .finish_non_exhaustive()
    }
}

/// AAD of a sealed signing key: event id ‖ key id, so a sealed key cannot be moved to another
/// event or key slot.
pub fn signing_key_aad(event_id: Uuid, key_id: u32) -> Vec<u8> {
    let mut aad = event_id.as_bytes().to_vec();
    aad.extend_from_slice(&key_id.to_be_bytes());
    aad
}

/// AAD of another sealed per-event secret: event id ‖ label.
pub fn secret_aad(event_id: Uuid, label: &str) -> Vec<u8> {
    let mut aad = event_id.as_bytes().to_vec();
    aad.extend_from_slice(label.as_bytes());
    aad
}

/// Fresh sealed secrets for a new event, its first signing key, and the public-key change.
pub fn new_event_material(
    master: &MasterKey,
    event_id: Uuid,
    event_tag: u32,
    now: i64,
) -> anyhow::Result<(EventSecrets, SigningKeyRow, ChangeData)> {
    let ble = random_bytes::<32>()?;
    let mesh = random_bytes::<32>()?;
    let secrets = EventSecrets {
        event_tag: i64::from(event_tag),
        ble_secret: master.seal(&secret_aad(event_id, "ble"), &ble)?,
        mesh_key: master.seal(&secret_aad(event_id, "mesh"), &mesh)?,
    };
    let key_id = 1u32;
    let signing = SigningKey::from_bytes(&random_bytes::<32>()?);
    let public = signing.verifying_key().to_bytes();
    let row = SigningKeyRow {
        key_id: i64::from(key_id),
        public_key: public.to_vec(),
        secret_key: master.seal(&signing_key_aad(event_id, key_id), &signing.to_bytes())?,
        created_at: now,
        retired_at: None,
    };
    let change = ChangeData::SigningKey(SigningKeyChange {
        key_id,
        public_key: hex::encode(public),
        retired: false,
    });
    Ok((secrets, row, change))
}

impl EventKeys {
    /// Loads and decrypts an event's keys; `None` when the event does not exist.
    pub async fn load(db: &Db, master: &MasterKey, event_id: Uuid) -> Result<Option<Self>, Error> {
        let Some(secrets) = store::events::secrets(db, event_id).await? else {
            return Ok(None);
        };
        let rows = store::events::signing_keys(db, event_id).await?;
        let mut signing = BTreeMap::new();
        let mut current_key_id = None;
        for row in rows {
            let key_id = u32::try_from(row.key_id).map_err(anyhow::Error::from)?;
            let secret = master.open_32(&signing_key_aad(event_id, key_id), &row.secret_key)?;
            signing.insert(key_id, SigningKey::from_bytes(&secret));
            if row.retired_at.is_none() {
                current_key_id = Some(key_id);
            }
        }
        let current_key_id = current_key_id
            .ok_or_else(|| anyhow::anyhow!("event {event_id} has no active signing key"))?;
        let ble_secret = master.open_32(&secret_aad(event_id, "ble"), &secrets.ble_secret)?;
        Ok(Some(Self {
            event_id,
            event_tag: u32::try_from(secrets.event_tag).map_err(anyhow::Error::from)?,
            barcode_key: sync_protocol::barcode::event_key(&ble_secret),
            ble_secret,
            mesh_key: master.open_32(&secret_aad(event_id, "mesh"), &secrets.mesh_key)?,
            signing,
            current_key_id,
            supervisor_pin: store::events::supervisor_pin(db, event_id).await?,
            zones: store::zones::rules(db, event_id).await?,
        }))
    }

    /// The `U1:` text of a stored ticket (deterministic: same fields, same key, same text).
    pub fn credential(&self, t: &TicketRow) -> anyhow::Result<String> {
        let key_id = u32::try_from(t.key_id)?;
        let key = self.signing.get(&key_id).ok_or_else(|| {
            anyhow::anyhow!("signing key {key_id} of event {} is missing", self.event_id)
        })?;
        let fields = TicketFields {
            key_id,
            event_tag: self.event_tag,
            serial: u64::try_from(t.serial)?,
            valid_from: u32::try_from(t.valid_from)?,
            valid_until: u32::try_from(t.valid_until)?,
            scopes: u16::try_from(t.scopes)?,
        };
        Ok(fields.sign(key).encode())
    }

    /// The replicated `ticket` change of a stored ticket held by `holder`.
    pub fn ticket_change(&self, t: &TicketRow, holder: Holder) -> anyhow::Result<ChangeData> {
        let Holder {
            display_name,
            attention,
            organization,
            ticket_type,
        } = holder;
        let serial = u64::try_from(t.serial)?;
        Ok(ChangeData::Ticket(TicketChange {
            serial,
            display_name,
            status: t.status().map_err(|e| anyhow::anyhow!("{e}"))?,
            scopes: u16::try_from(t.scopes)?,
            short_code: Some(short_code(t.short_code)?.compact()),
            ble_key: Some(hex::encode(BleKey::derive(&self.ble_secret, serial).0)),
            attention,
            valid_from: u32::try_from(t.valid_from)?,
            valid_until: u32::try_from(t.valid_until)?,
            ticket_type,
            organization,
        }))
    }
}

/// What a gate shows of a ticket's holder (display name, attention note, organization) and the
/// ticket type its day rules and badges read. All `None` once the holder is erased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub display_name: Option<String>,
    pub attention: Option<String>,
    pub organization: Option<String>,
    pub ticket_type: Option<String>,
}

impl Holder {
    /// The holder as stored.
    pub fn of(p: &crate::store::participants::ParticipantRow) -> Self {
        Self {
            display_name: p.name.clone(),
            attention: p.attention.clone(),
            organization: p.organization.clone(),
            ticket_type: p.ticket_type.clone(),
        }
    }

    /// The holder from the fields being written.
    pub fn of_fields(f: &crate::store::participants::ParticipantFields) -> Self {
        Self {
            display_name: Some(f.name.clone()),
            attention: f.attention.clone(),
            organization: f.organization.clone(),
            ticket_type: f.ticket_type.clone(),
        }
    }
}

pub fn short_code(value: i64) -> anyhow::Result<ShortCode> {
    Ok(ShortCode::from_value(u64::try_from(value)?)?)
}

/// A random 55-bit short-code value (uniqueness per event is enforced by the database).
pub fn random_short_code() -> anyhow::Result<i64> {
    Ok(i64::try_from(random_below(SHORT_CODE_MAX + 1)?)?)
}

/// The replicated `revocation` change.
pub fn revocation_change(
    serial: i64,
    hlc: sync_protocol::Hlc,
    reason: &str,
) -> anyhow::Result<ChangeData> {
    Ok(ChangeData::Revocation(RevocationChange {
        serial: u64::try_from(serial)?,
        hlc,
        reason: Some(reason.to_owned()),
    }))
}

/// Default validity of a new ticket: the event window widened by `margin_hours` either side,
/// as unix seconds.
pub fn default_validity(starts_at_ms: i64, ends_at_ms: i64, margin_hours: u32) -> (i64, i64) {
    let margin = i64::from(margin_hours) * 3600;
    let from = (starts_at_ms.div_euclid(1000) - margin).clamp(0, i64::from(u32::MAX));
    let until = (ends_at_ms.div_euclid(1000) + margin).clamp(0, i64::from(u32::MAX));
    (from, until)
}

/// Inserts tickets, drawing a new short code for any that collide with an existing one.
pub async fn insert_with_retry(
    tx: &mut Tx,
    event_id: Uuid,
    tickets: &mut [TicketRow],
) -> Result<(), Error> {
    let mut pending: Vec<usize> = (0..tickets.len()).collect();
    for _attempt in 0..8 {
        let batch: Vec<TicketRow> = pending.iter().map(|&i| tickets[i].clone()).collect();
        let clashed = store::tickets::insert_many(tx, event_id, &batch).await?;
        if clashed.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = clashed.len(),
            "short code collision; drawing new codes"
        );
        pending.retain(|&i| clashed.contains(&tickets[i].serial));
        for &i in &pending {
            tickets[i].short_code = random_short_code()?;
        }
    }
    Err(Error::Internal(anyhow::anyhow!(
        "could not find a free short code after 8 attempts"
    )))
}

/// PNG of a QR code (ECC level M, quiet zone, 8 px per module).
pub fn render_png(text: &str) -> anyhow::Result<Vec<u8>> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)?;
    let image = code
        .render::<image::Luma<u8>>()
        .quiet_zone(true)
        .module_dimensions(8, 8)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// SVG of a QR code (ECC level M, quiet zone).
pub fn render_svg(text: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .quiet_zone(true)
        .min_dimensions(328, 328)
        .build())
}

/// Builds (not inserts) a new valid ticket for a participant.
pub fn new_ticket(
    keys: &EventKeys,
    event: &store::events::EventRow,
    participant_id: Uuid,
    serial: i64,
    scopes: u16,
    now: i64,
) -> Result<TicketRow, Error> {
    let margin =
        crate::domain::event::EventSettings::parse(&event.settings)?.ticket_validity_margin_hours;
    let (valid_from, valid_until) = default_validity(event.starts_at, event.ends_at, margin);
    Ok(TicketRow {
        serial,
        participant_id,
        key_id: i64::from(keys.current_key_id),
        short_code: random_short_code()?,
        scopes: i64::from(scopes),
        valid_from,
        valid_until,
        status: sync_protocol::wire::TicketStatus::Valid.as_str().into(),
        issued_at: now,
        revoked_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_deterministic_and_verify() {
        let master = MasterKey::from_bytes([1; 32]);
        let event_id = Uuid::now_v7();
        let (_, row, change) = new_event_material(&master, event_id, 0x5553_4852, 0).unwrap();
        let secret = master
            .open_32(&signing_key_aad(event_id, 1), &row.secret_key)
            .unwrap();
        let mut signing = BTreeMap::new();
        signing.insert(1, SigningKey::from_bytes(&secret));
        let keys = EventKeys {
            event_id,
            event_tag: 0x5553_4852,
            ble_secret: [2; 32],
            mesh_key: [3; 32],
            barcode_key: [4; 32],
            signing,
            current_key_id: 1,
            supervisor_pin: None,
            zones: Vec::new(),
        };
        let t = TicketRow {
            serial: 42,
            participant_id: Uuid::nil(),
            key_id: 1,
            short_code: 12345,
            scopes: 1,
            valid_from: 1_796_083_200,
            valid_until: 1_796_169_599,
            status: sync_protocol::wire::TicketStatus::Valid.as_str().into(),
            issued_at: 0,
            revoked_at: None,
        };
        let a = keys.credential(&t).unwrap();
        assert_eq!(a, keys.credential(&t).unwrap());
        let ticket = sync_protocol::SignedTicket::decode(&a).unwrap();
        let mut ring = sync_protocol::KeyRing::new();
        let ChangeData::SigningKey(k) = change else {
            panic!("wrong change")
        };
        let public: [u8; 32] = hex::decode(k.public_key).unwrap().try_into().unwrap();
        ring.insert_bytes(1, &public).unwrap();
        ring.verify(&ticket).unwrap();
        assert_eq!(ticket.fields.serial, 42);
        let png = render_png(&a).unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        assert!(render_svg(&a).unwrap().contains("<svg"));
    }

    #[test]
    fn validity_widens_the_event_window() {
        assert_eq!(default_validity(7_200_000, 10_800_000, 1), (3_600, 14_400));
        assert_eq!(default_validity(0, 0, 1), (0, 3_600));
    }
}
