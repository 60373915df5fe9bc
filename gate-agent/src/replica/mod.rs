//! The gate's SQLite replica (rusqlite, WAL): tickets, revocations, keys, gate configs, presence
//! and the outbox of check-ins.
//!
//! Every connection runs with `synchronous=FULL`: a decision's outbox row is on disk (WAL fsynced)
//! when `COMMIT` returns, so a check-in shown as admitted survives kill -9 and power loss.
//! Several connections may be open at once (the decision thread, the sync worker, a `gate-agent
//! scan` from a script); WAL lets readers run beside the single writer and `busy_timeout` queues
//! writers instead of failing.

pub(crate) mod outbox;
pub mod secrets;
mod sync_apply;

pub use secrets::GateSecret;

pub use sync_apply::Applied;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use sync_protocol::decide::TicketFacts;
use sync_protocol::wire::{GateConfig, TicketStatus};
use sync_protocol::{Hlc, KeyRing};
use uuid::Uuid;

pub use outbox::OutboxRow;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/gate/0001_init.sql"),
    include_str!("../../../migrations/gate/0004_door.sql"),
    include_str!("../../../migrations/gate/0005_door_days.sql"),
    include_str!("../../../migrations/gate/0007_barcodes.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("replica database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("this gate is not enrolled: run `gate-agent enroll --server URL --code CODE` first")]
    NotEnrolled,
    #[error("replica holds corrupt data in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("replica schema version {0} is newer than this gate-agent understands; upgrade it")]
    TooNew(i64),
}

pub type Result<T, E = ReplicaError> = std::result::Result<T, E>;

/// What enrollment stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub server_url: String,
    pub gate_id: Uuid,
    pub event_id: Uuid,
    pub credential: String,
}

/// A ticket row as the gate sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TicketRow {
    pub serial: u64,
    pub display_name: Option<String>,
    pub status: TicketStatus,
    pub scopes: u16,
    pub short_code: Option<String>,
    #[serde(skip)]
    pub ble_key: Option<Vec<u8>>,
    pub attention: Option<String>,
    pub valid_from: u32,
    pub valid_until: u32,
    pub ticket_type: Option<String>,
    pub organization: Option<String>,
}

impl TicketRow {
    /// What the admission rule reads of the row.
    pub fn facts(&self) -> TicketFacts {
        TicketFacts {
            status: self.status,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            scopes: self.scopes,
        }
    }
}

/// When and where a ticket's last movement was made (the presence view's row).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastSeen {
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    /// The gate's name when this gate knows its configuration, else its id.
    pub gate: Option<String>,
}

/// Presence as far as this gate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Presence {
    pub inside: bool,
    pub entries: u32,
    pub hlc: Hlc,
    /// The gate of the last movement, when known.
    pub gate_id: Option<Uuid>,
    /// The event-local day of the last entry and the entries that day.
    pub day: i32,
    pub day_entries: u32,
}

/// One open connection to the replica.
pub struct Replica {
    conn: Connection,
    /// The data directory's `gate.key` (see [`secrets`]).
    secret: GateSecret,
}

/// AAD of the sealed credential: which gate it belongs to.
fn credential_aad(gate_id: &str) -> Vec<u8> {
    format!("usher-gate credential {gate_id}").into_bytes()
}

pub(crate) fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

pub(crate) fn u64_from(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(what, format!("negative value {v}")))
}

pub(crate) fn i64_from(v: u64) -> i64 {
    // Serials, sequences and clocks stay below 2^63 (the server keeps serials below 2^53).
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Test knob: the replica's `PRAGMA max_page_count`, so a test can fill it up.
pub const MAX_PAGES_ENV: &str = "USHER_REPLICA_MAX_PAGES";

impl Replica {
    /// Opens (creating if needed) the replica at `path` and brings its schema up to date.
    ///
    /// The replica's files are the owner's only (0600), and so is the data directory when this
    /// creates it (0700); the gate's secret is read from (or made in) `gate.key` beside it.
    pub fn open(path: &Path) -> Result<Self> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| corrupt("data directory", e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        let secret = GateSecret::load_or_create(&dir.join(secrets::KEY_FILE))?;
        secrets::prepare_replica_files(path).map_err(|e| corrupt("replica file", e))?;
        Self::setup(Connection::open(path)?, secret)
    }

    /// A private in-memory replica, for unit tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?, GateSecret::ephemeral())
    }

    fn setup(conn: Connection, secret: GateSecret) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(10))?;
        // Deleted rows (a wiped name, a replaced credential) are overwritten, not left in free
        // pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: the WAL is fsynced at every commit, so a committed decision survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Test knob: a size limit in pages makes writes beyond it fail as on a full disk
        // (SQLITE_FULL), where no small filesystem can be mounted for a test.
        if let Some(pages) = std::env::var(MAX_PAGES_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            conn.pragma_update(None, "max_page_count", pages)?;
        }
        // Checkpoints copy the WAL into the database file and fsync it: slow and bursty. They
        // run on the background connections (sync worker, checkpointer), never in a decision;
        // see `Replica::for_decisions`.
        let mut replica = Self { conn, secret };
        replica.migrate()?;
        replica.seal_plain_credential()?;
        Ok(replica)
    }

    /// A replica written before credentials were sealed holds it in plain text: seal it now.
    fn seal_plain_credential(&mut self) -> Result<()> {
        let (Some(plain), Some(gate_id)) = (self.meta("credential")?, self.meta("gate_id")?) else {
            return Ok(());
        };
        let sealed = self
            .secret
            .seal(&credential_aad(&gate_id), plain.as_bytes())?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        set_meta(&tx, "credential_sealed", &sealed)?;
        tx.execute("DELETE FROM meta WHERE key = 'credential'", [])?;
        tx.commit()?;
        Ok(())
    }

    /// This gate's ed25519 mesh key (derived from `gate.key`; DESIGN §8).
    pub fn mesh_signing_key(&self) -> ed25519_dalek::SigningKey {
        self.secret.mesh_signing_key()
    }

    /// Hex of this gate's mesh public key, as sent at enrollment.
    pub fn mesh_public_key_hex(&self) -> String {
        hex::encode(self.secret.mesh_signing_key().verifying_key().to_bytes())
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(ReplicaError::TooNew(version));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Tunes this connection for the decision path: no automatic checkpoints (a background
    /// connection runs them, see [`Replica::checkpoint`]), so a decision never pays for one.
    pub fn for_decisions(self) -> Result<Self> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(self)
    }

    /// Copies the WAL into the database without blocking writers (PASSIVE).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    pub(crate) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    // ---- meta ----

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        set_meta(&self.conn, key, value)
    }

    pub fn enrollment(&self) -> Result<Option<Enrollment>> {
        let (Some(server_url), Some(gate_id), Some(event_id), Some(sealed)) = (
            self.meta("server_url")?,
            self.meta("gate_id")?,
            self.meta("event_id")?,
            self.meta("credential_sealed")?,
        ) else {
            return Ok(None);
        };
        let credential =
            self.secret
                .open(&credential_aad(&gate_id), &sealed, "meta.credential_sealed")?;
        let credential =
            String::from_utf8(credential).map_err(|e| corrupt("meta.credential_sealed", e))?;
        Ok(Some(Enrollment {
            server_url,
            gate_id: Uuid::parse_str(&gate_id).map_err(|e| corrupt("meta.gate_id", e))?,
            event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("meta.event_id", e))?,
            credential,
        }))
    }

    pub fn require_enrollment(&self) -> Result<Enrollment> {
        self.enrollment()?.ok_or(ReplicaError::NotEnrolled)
    }

    /// Stores a new enrollment. A gate re-enrolled for another event starts from an empty
    /// replica (its outbox must have been pushed; refused otherwise so nothing is lost).
    pub fn store_enrollment(&mut self, e: &Enrollment) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let previous: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'event_id'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if previous.as_deref() != Some(&e.event_id.to_string()) {
            for table in [
                "tickets",
                "revocations",
                "signing_keys",
                "gates",
                "presence",
                "barcodes",
            ] {
                tx.execute(&format!("DELETE FROM {table}"), [])?;
            }
            tx.execute(
                "DELETE FROM meta WHERE key IN ('replica_cursor', 'wiped')",
                [],
            )?;
        }
        set_meta(&tx, "server_url", &e.server_url)?;
        set_meta(&tx, "gate_id", &e.gate_id.to_string())?;
        set_meta(&tx, "event_id", &e.event_id.to_string())?;
        let gate_id = e.gate_id.to_string();
        let sealed = self
            .secret
            .seal(&credential_aad(&gate_id), e.credential.as_bytes())?;
        set_meta(&tx, "credential_sealed", &sealed)?;
        tx.execute("DELETE FROM meta WHERE key = 'credential'", [])?;
        tx.commit()?;
        Ok(())
    }

    /// Where this device's check-in sequence starts: after `next_seq - 1`, as the server
    /// answered at enrollment. Only applies while the outbox is empty (a device that already
    /// logged scans keeps its own sequence).
    pub fn set_seq_start(&mut self, next_seq: u64) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let empty: bool =
            tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM outbox)", [], |r| r.get(0))?;
        if empty {
            let floor = next_seq.saturating_sub(1).to_string();
            set_meta(&tx, "seq_floor", &floor)?;
            set_meta(&tx, "acked_seq", &floor)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn replica_cursor(&self) -> Result<u64> {
        Ok(self
            .meta("replica_cursor")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The gate's clock: the newest of its own stamps and the remote clocks it observed.
    pub fn hlc(&self) -> Result<Hlc> {
        Ok(outbox::next_seq_and_clock(&self.conn)?.1)
    }

    /// Takes in a remote clock (a `server_time`, a peer's scan) so later local stamps sort after it.
    pub fn observe_clock(&mut self, remote: Hlc, wall_ms: u64) -> Result<Hlc> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if sync_protocol::too_far_ahead(remote, wall_ms) {
            tracing::warn!(%remote, "remote clock not adopted: too far ahead of the wall clock");
        }
        let last = outbox::next_seq_and_clock(&tx)?.1;
        let mut clock = sync_protocol::HlcClock::resume(last);
        let now = clock.update(remote, wall_ms);
        set_meta(&tx, "hlc", &now.to_string())?;
        tx.commit()?;
        Ok(now)
    }

    // ---- lookups ----

    pub fn key_ring(&self) -> Result<KeyRing> {
        let mut ring = KeyRing::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key_id, public_key FROM signing_keys")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        for row in rows {
            let (id, key) = row?;
            let id = u32::try_from(id).map_err(|e| corrupt("signing_keys.key_id", e))?;
            let key: [u8; 32] = key
                .try_into()
                .map_err(|_| corrupt("signing_keys.public_key", "not 32 bytes"))?;
            ring.insert_bytes(id, &key)
                .map_err(|e| corrupt("signing_keys.public_key", e))?;
        }
        Ok(ring)
    }

    pub fn gate_config(&self, gate_id: Uuid) -> Result<Option<GateConfig>> {
        let raw: Option<String> = self
            .conn
            .prepare_cached("SELECT config FROM gates WHERE gate_id = ?1")?
            .query_row([gate_id.to_string()], |r| r.get(0))
            .optional()?;
        raw.map(|s| serde_json::from_str(&s).map_err(|e| corrupt("gates.config", e)))
            .transpose()
    }

    /// Every gate configuration of the event, this gate's own included.
    pub fn all_configs(&self) -> Result<Vec<GateConfig>> {
        let mut stmt = self.conn.prepare_cached("SELECT config FROM gates")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(serde_json::from_str(&raw?).map_err(|e| corrupt("gates.config", e))?);
        }
        Ok(out)
    }

    pub fn peer_configs(&self, own: Uuid) -> Result<Vec<GateConfig>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT config FROM gates WHERE gate_id <> ?1")?;
        let rows = stmt.query_map([own.to_string()], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(serde_json::from_str(&raw?).map_err(|e| corrupt("gates.config", e))?);
        }
        Ok(out)
    }

    pub fn ticket(&self, serial: u64) -> Result<Option<TicketRow>> {
        ticket_by(
            &self.conn,
            "serial = ?1",
            rusqlite::types::Value::Integer(i64_from(serial)),
        )
    }

    pub fn ticket_by_code(&self, compact: &str) -> Result<Option<TicketRow>> {
        ticket_by(
            &self.conn,
            "short_code = ?1",
            rusqlite::types::Value::Text(compact.to_string()),
        )
    }

    /// The ticket a shop barcode belongs to, by the barcode's lookup key
    /// ([`sync_protocol::barcode::lookup_key`]).
    pub fn ticket_by_barcode(&self, key: &str) -> Result<Option<TicketRow>> {
        ticket_by(
            &self.conn,
            "serial = (SELECT serial FROM barcodes WHERE key = ?1)",
            rusqlite::types::Value::Text(key.to_string()),
        )
    }

    /// Manual lookup for people whose QR will not scan: by short code (exact) or name (substring,
    /// case-insensitive). At most `limit` rows.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<TicketRow>> {
        let q = query.trim();
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if let Ok(code) = sync_protocol::ShortCode::parse(q)
            && let Some(t) = self.ticket_by_code(&code.compact())?
        {
            out.push(t);
        }
        let pattern = format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let mut stmt = self.conn.prepare_cached(
            "SELECT serial, display_name, status, scopes, short_code, ble_key, attention,
                    valid_from, valid_until, ticket_type, organization
             FROM tickets WHERE display_name LIKE ?1 ESCAPE '\\'
             ORDER BY display_name COLLATE NOCASE LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![pattern, limit as i64], ticket_from_row)?;
        for row in rows {
            let t = row?;
            if !out.iter().any(|o: &TicketRow| o.serial == t.serial) {
                out.push(t);
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    pub fn revocation(&self, serial: u64) -> Result<Option<u64>> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT change_seq FROM revocations WHERE serial = ?1")?
            .query_row([i64_from(serial)], |r| r.get(0))
            .optional()?;
        v.map(|v| u64_from(v, "revocations.change_seq")).transpose()
    }

    pub fn presence(&self, serial: u64) -> Result<Presence> {
        presence(&self.conn, serial)
    }

    pub fn ticket_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM tickets", [], |r| r.get(0))?;
        u64_from(n, "count")
    }

    /// Applies check-ins a mesh peer made (DESIGN §8): each admitted movement enters the
    /// presence view like a server presence change — only when it is newer than what the view
    /// holds, so re-reading a peer's log changes nothing — and the peer's clock is observed.
    /// Advances the per-peer cursor in the same transaction.
    pub fn apply_peer_log(
        &mut self,
        peer: Uuid,
        checkins: &[sync_protocol::wire::Checkin],
        wall_ms: u64,
    ) -> Result<usize> {
        use sync_protocol::wire::{Decision, Direction};
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut applied = 0;
        let mut newest = Hlc::ZERO;
        let mut cursor = None;
        let offset: i16 = read_meta(&tx, "utc_offset_minutes")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for c in checkins {
            cursor = Some(c.seq);
            // A peer clock far ahead of ours is broken or hostile: its scans would win every
            // later comparison and drag this gate's clock along. Read past them, apply nothing.
            if sync_protocol::too_far_ahead(c.hlc, wall_ms) {
                tracing::warn!(peer = %peer, seq = c.seq, "peer check-in ignored: its clock is too far ahead");
                continue;
            }
            newest = newest.max(c.hlc);
            let Some(serial) = c.ticket_serial else {
                continue;
            };
            if c.decision != Decision::Admit {
                continue;
            }
            // An undo reverses the movement it cancels.
            let inside = match (c.undoes.is_some(), c.direction) {
                (false, Direction::In) | (true, Direction::Out) => true,
                (false, Direction::Out) | (true, Direction::In) => false,
            };
            let entry_delta: i64 = match (c.undoes.is_some(), c.direction) {
                (false, Direction::In) => 1,
                (true, Direction::In) => -1,
                _ => 0,
            };
            let day = sync_protocol::days::local_day(c.hlc.wall_ms(), offset);
            let n = tx
                .prepare_cached(
                    "INSERT INTO presence (serial, inside, entries, gate_id, checkin_id, hlc,
                            day, day_entries)
                     VALUES (?1, ?2, MAX(?3, 0), ?4, ?5, ?6, ?7, MAX(?3, 0))
                     ON CONFLICT (serial) DO UPDATE SET inside = excluded.inside,
                        entries = MAX(presence.entries + ?3, 0), gate_id = excluded.gate_id,
                        checkin_id = excluded.checkin_id, hlc = excluded.hlc,
                        day_entries = CASE WHEN ?3 = 0 THEN presence.day_entries
                            WHEN presence.day = ?7 THEN MAX(presence.day_entries + ?3, 0)
                            ELSE MAX(?3, 0) END,
                        day = CASE WHEN ?3 = 0 THEN presence.day ELSE ?7 END
                     WHERE excluded.hlc > presence.hlc",
                )?
                .execute(params![
                    i64_from(serial),
                    inside,
                    entry_delta,
                    peer.to_string(),
                    c.id.to_string(),
                    i64_from(c.hlc.as_u64()),
                    day,
                ])?;
            applied += n;
        }
        if let Some(seq) = cursor {
            set_meta(&tx, &format!("mesh_cursor:{peer}"), &seq.to_string())?;
        }
        if newest > Hlc::ZERO {
            let last = outbox::next_seq_and_clock(&tx)?.1;
            let mut clock = sync_protocol::HlcClock::resume(last);
            set_meta(&tx, "hlc", &clock.update(newest, wall_ms).to_string())?;
        }
        tx.commit()?;
        Ok(applied)
    }

    /// How many times the badge of `serial` was printed at this gate.
    pub fn print_count(&self, serial: u64) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM prints WHERE serial = ?1")?
            .query_row([i64_from(serial)], |r| r.get(0))?;
        u64_from(n, "prints.count")
    }

    /// Logs one badge print.
    pub fn record_print(
        &self,
        serial: u64,
        at_ms: u64,
        reprint: bool,
        approved_by: Option<&str>,
        printer: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO prints (serial, printed_at_ms, reprint, approved_by, printer)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                i64_from(serial),
                i64_from(at_ms),
                reprint,
                approved_by,
                printer
            ])?;
        Ok(())
    }

    /// How far this gate has read a peer's log.
    pub fn mesh_cursor(&self, peer: Uuid) -> Result<u64> {
        Ok(self
            .meta(&format!("mesh_cursor:{peer}"))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Deactivated gate: erase personal data (names, attention notes, BLE keys), keep the scan
    /// log so nothing already decided is lost.
    pub fn wipe_personal_data(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE tickets SET display_name = NULL, attention = NULL, ble_key = NULL",
            [],
        )?;
        set_meta(&tx, "wiped", "1")?;
        tx.commit()?;
        // Make sure the erased values do not linger in the WAL or free pages.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        self.conn.execute_batch("VACUUM")?;
        Ok(())
    }
}

pub(crate) fn read_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

pub(crate) fn presence(conn: &Connection, serial: u64) -> Result<Presence> {
    type Row = (i64, i64, i64, Option<String>, i64, i64);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT inside, entries, hlc, gate_id, day, day_entries FROM presence
             WHERE serial = ?1",
        )?
        .query_row([i64_from(serial)], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?;
    Ok(match row {
        None => Presence::default(),
        Some((inside, entries, hlc, gate_id, day, day_entries)) => Presence {
            inside: inside != 0,
            entries: u32::try_from(entries).unwrap_or(0),
            hlc: Hlc::from_u64(u64_from(hlc, "presence.hlc")?),
            gate_id: gate_id.and_then(|g| Uuid::parse_str(&g).ok()),
            day: i32::try_from(day).unwrap_or(0),
            day_entries: u32::try_from(day_entries).unwrap_or(0),
        },
    })
}

/// How many holders the presence view has inside through one of `gate_ids` since the clock
/// `since_hlc` (the last daily check-out, or 0), not counting `except` (the holder at the
/// gate). The view merges the server's presence, this gate's outbox and its mesh peers' logs.
pub(crate) fn zone_occupancy(
    conn: &Connection,
    gate_ids: &[Uuid],
    since_hlc: u64,
    except: u64,
) -> Result<u32> {
    if gate_ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = gate_ids.iter().map(Uuid::to_string).collect();
    let list = serde_json::to_string(&ids).map_err(|e| corrupt("gate ids", e))?;
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM presence
             WHERE inside = 1 AND hlc >= ?1 AND serial <> ?2
               AND gate_id IN (SELECT value FROM json_each(?3))",
        )?
        .query_row(params![i64_from(since_hlc), i64_from(except), list], |r| {
            r.get(0)
        })?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// When and at which gate the presence view's row of `serial` was last moved: the clock of that
/// movement and the gate's name from the replicated configurations (its id when unknown).
pub(crate) fn last_seen(conn: &Connection, serial: u64) -> Result<Option<LastSeen>> {
    let row: Option<(Option<String>, i64)> = conn
        .prepare_cached("SELECT gate_id, hlc FROM presence WHERE serial = ?1")?
        .query_row([i64_from(serial)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((gate_id, hlc)) = row else {
        return Ok(None);
    };
    let ms = Hlc::from_u64(u64_from(hlc, "presence.hlc")?).wall_ms();
    if ms == 0 {
        return Ok(None);
    }
    let gate = match gate_id {
        None => None,
        Some(id) => {
            let config: Option<String> = conn
                .prepare_cached("SELECT config FROM gates WHERE gate_id = ?1")?
                .query_row([&id], |r| r.get(0))
                .optional()?;
            let name = config
                .and_then(|c| serde_json::from_str::<GateConfig>(&c).ok())
                .map(|c| c.name)
                .filter(|n| !n.is_empty());
            Some(name.unwrap_or(id))
        }
    };
    Ok(Some(LastSeen {
        at: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        gate,
    }))
}

fn ticket_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TicketRow> {
    let serial: i64 = r.get(0)?;
    let status: String = r.get(2)?;
    // An unknown status is corrupt data: no decision rather than a guess.
    let status = status.parse::<TicketStatus>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(TicketRow {
        serial: u64::try_from(serial).unwrap_or(0),
        display_name: r.get(1)?,
        status,
        scopes: u16::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        short_code: r.get(4)?,
        ble_key: r.get(5)?,
        attention: r.get(6)?,
        valid_from: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
        valid_until: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
        ticket_type: r.get(9)?,
        organization: r.get(10)?,
    })
}

fn ticket_by(
    conn: &Connection,
    cond: &str,
    value: rusqlite::types::Value,
) -> Result<Option<TicketRow>> {
    let sql = format!(
        "SELECT serial, display_name, status, scopes, short_code, ble_key, attention,
                valid_from, valid_until, ticket_type, organization FROM tickets WHERE {cond}"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([value], ticket_from_row)
        .optional()?)
}
