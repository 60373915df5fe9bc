//! Applying the server's change log to the replica.

use rusqlite::params;
use sync_protocol::wire::{Change, ChangeData};

use super::{Replica, Result, corrupt, i64_from, set_meta};

/// What one page of changes did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub changes: usize,
    pub keys_changed: bool,
    pub config_changed: bool,
}

impl Replica {
    /// Applies one page of changes and advances the cursor to `next`, atomically: a crash leaves
    /// either the whole page applied with its cursor, or neither, so a re-pull is always safe.
    pub fn apply_changes(&mut self, changes: &[Change], next: u64) -> Result<Applied> {
        let mut applied = Applied::default();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for change in changes {
            let seq = i64_from(change.change_seq);
            match &change.data {
                ChangeData::Ticket(t) if change.deleted => {
                    tx.prepare_cached("DELETE FROM tickets WHERE serial = ?1")?
                        .execute([i64_from(t.serial)])?;
                }
                ChangeData::Ticket(t) => {
                    let ble_key = t
                        .ble_key
                        .as_deref()
                        .map(hex::decode)
                        .transpose()
                        .map_err(|e| corrupt("ticket.ble_key", e))?;
                    tx.prepare_cached(
                        "INSERT INTO tickets (serial, display_name, status, scopes, short_code,
                                              ble_key, attention, valid_from, valid_until, change_seq,
                                              ticket_type, organization)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                         ON CONFLICT (serial) DO UPDATE SET
                            display_name = excluded.display_name, status = excluded.status,
                            scopes = excluded.scopes, short_code = excluded.short_code,
                            ble_key = excluded.ble_key, attention = excluded.attention,
                            valid_from = excluded.valid_from, valid_until = excluded.valid_until,
                            change_seq = excluded.change_seq, ticket_type = excluded.ticket_type,
                            organization = excluded.organization",
                    )?
                    .execute(params![
                        i64_from(t.serial),
                        t.display_name,
                        t.status.as_str(),
                        i64::from(t.scopes),
                        t.short_code,
                        ble_key,
                        t.attention,
                        i64::from(t.valid_from),
                        i64::from(t.valid_until),
                        seq,
                        t.ticket_type,
                        t.organization,
                    ])?;
                }
                ChangeData::Revocation(r) if change.deleted => {
                    tx.prepare_cached("DELETE FROM revocations WHERE serial = ?1")?
                        .execute([i64_from(r.serial)])?;
                }
                ChangeData::Revocation(r) => {
                    tx.prepare_cached(
                        "INSERT INTO revocations (serial, change_seq, hlc, reason)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (serial) DO UPDATE SET change_seq = excluded.change_seq,
                            hlc = excluded.hlc, reason = excluded.reason",
                    )?
                    .execute(params![
                        i64_from(r.serial),
                        seq,
                        i64_from(r.hlc.as_u64()),
                        r.reason
                    ])?;
                }
                ChangeData::SigningKey(k) => {
                    applied.keys_changed = true;
                    if change.deleted {
                        tx.prepare_cached("DELETE FROM signing_keys WHERE key_id = ?1")?
                            .execute([i64::from(k.key_id)])?;
                    } else {
                        let key = hex::decode(&k.public_key)
                            .map_err(|e| corrupt("signing_key.public_key", e))?;
                        tx.prepare_cached(
                            "INSERT INTO signing_keys (key_id, public_key, retired) VALUES (?1, ?2, ?3)
                             ON CONFLICT (key_id) DO UPDATE SET public_key = excluded.public_key,
                                retired = excluded.retired",
                        )?
                        .execute(params![i64::from(k.key_id), key, k.retired])?;
                    }
                }
                ChangeData::GateConfig(g) => {
                    applied.config_changed = true;
                    if change.deleted {
                        tx.prepare_cached("DELETE FROM gates WHERE gate_id = ?1")?
                            .execute([g.gate_id.to_string()])?;
                    } else {
                        let json =
                            serde_json::to_string(g).map_err(|e| corrupt("gate_config", e))?;
                        tx.prepare_cached(
                            "INSERT INTO gates (gate_id, config) VALUES (?1, ?2)
                             ON CONFLICT (gate_id) DO UPDATE SET config = excluded.config",
                        )?
                        .execute(params![g.gate_id.to_string(), json])?;
                        // An event setting every gate's configuration carries: what "today"
                        // means when peers' scans enter the presence view.
                        set_meta(&tx, "utc_offset_minutes", &g.utc_offset_minutes.to_string())?;
                    }
                }
                ChangeData::Barcode(b) => {
                    if change.deleted {
                        tx.prepare_cached("DELETE FROM barcodes WHERE key = ?1")?
                            .execute([b.key.as_str()])?;
                    } else {
                        tx.prepare_cached(
                            "INSERT INTO barcodes (key, serial) VALUES (?1, ?2)
                             ON CONFLICT (key) DO UPDATE SET serial = excluded.serial",
                        )?
                        .execute(params![b.key.as_str(), i64_from(b.serial)])?;
                    }
                }
                ChangeData::Presence(p) => {
                    // Latest clock wins: the server's view replaces ours only when it is at
                    // least as new, so a local admission not yet pushed is never forgotten.
                    tx.prepare_cached(
                        "INSERT INTO presence (serial, inside, entries, gate_id, checkin_id, hlc,
                                day, day_entries)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (serial) DO UPDATE SET inside = excluded.inside,
                            entries = MAX(presence.entries, excluded.entries),
                            gate_id = excluded.gate_id, checkin_id = excluded.checkin_id,
                            hlc = excluded.hlc,
                            day_entries = CASE WHEN presence.day = excluded.day
                                THEN MAX(presence.day_entries, excluded.day_entries)
                                WHEN presence.day > excluded.day THEN presence.day_entries
                                ELSE excluded.day_entries END,
                            day = MAX(presence.day, excluded.day)
                         WHERE excluded.hlc >= presence.hlc",
                    )?
                    .execute(params![
                        i64_from(p.serial),
                        p.inside && !change.deleted,
                        i64::from(p.entries),
                        p.gate_id.map(|g| g.to_string()),
                        p.checkin_id.map(|c| c.to_string()),
                        i64_from(p.hlc.as_u64()),
                        i64::from(p.day),
                        i64::from(p.day_entries),
                    ])?;
                }
            }
            applied.changes += 1;
        }
        set_meta(&tx, "replica_cursor", &next.to_string())?;
        tx.commit()?;
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_protocol::Hlc;
    use sync_protocol::wire::{PresenceChange, RevocationChange, TicketChange};

    fn ticket(seq: u64, serial: u64, name: &str) -> Change {
        Change {
            change_seq: seq,
            deleted: false,
            data: ChangeData::Ticket(TicketChange {
                serial,
                display_name: Some(name.into()),
                short_code: Some(format!("CODE{serial}")),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn changes_upsert_tombstones_delete_and_the_cursor_moves() {
        let mut r = Replica::open_in_memory().unwrap();
        r.apply_changes(&[ticket(1, 7, "Ada"), ticket(2, 8, "Bo")], 2)
            .unwrap();
        assert_eq!(r.replica_cursor().unwrap(), 2);
        assert_eq!(r.ticket_count().unwrap(), 2);
        r.apply_changes(&[ticket(3, 7, "Ada L.")], 3).unwrap();
        assert_eq!(
            r.ticket(7).unwrap().unwrap().display_name.as_deref(),
            Some("Ada L.")
        );
        let mut tomb = ticket(4, 8, "");
        tomb.deleted = true;
        r.apply_changes(
            &[
                tomb,
                Change {
                    change_seq: 5,
                    deleted: false,
                    data: ChangeData::Revocation(RevocationChange {
                        serial: 7,
                        hlc: Hlc::new(5, 0),
                        reason: None,
                    }),
                },
            ],
            5,
        )
        .unwrap();
        assert!(r.ticket(8).unwrap().is_none());
        assert_eq!(r.revocation(7).unwrap(), Some(5));
        assert_eq!(r.search("ada", 10).unwrap().len(), 1);
    }

    #[test]
    fn older_server_presence_does_not_overwrite_newer_local_presence() {
        let mut r = Replica::open_in_memory().unwrap();
        let p = |inside, t| Change {
            change_seq: 1,
            deleted: false,
            data: ChangeData::Presence(PresenceChange {
                serial: 1,
                inside,
                hlc: Hlc::new(t, 0),
                entries: 1,
                ..Default::default()
            }),
        };
        r.apply_changes(&[p(true, 100)], 1).unwrap();
        r.apply_changes(&[p(false, 50)], 2).unwrap();
        assert!(r.presence(1).unwrap().inside);
        r.apply_changes(&[p(false, 150)], 3).unwrap();
        assert!(!r.presence(1).unwrap().inside);
    }
}
