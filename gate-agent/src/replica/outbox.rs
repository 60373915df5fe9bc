//! The outbox: this gate's append-only scan log, dense `seq` from 1.

use rusqlite::{Connection, OptionalExtension, params};
use sync_protocol::Hlc;
use sync_protocol::wire::{Checkin, Decision, Direction, Method, PushStatus, Reason};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Replica, Result, corrupt, i64_from, u64_from};

/// One stored check-in with its sync state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub checkin: Checkin,
    pub synced: bool,
}

fn method_str(m: Method) -> &'static str {
    match m {
        Method::Qr => "qr",
        Method::Code => "code",
        Method::Ble => "ble",
        Method::Manual => "manual",
    }
}

fn parse_method(s: &str) -> Result<Method> {
    Ok(match s {
        "qr" => Method::Qr,
        "code" => Method::Code,
        "ble" => Method::Ble,
        "manual" => Method::Manual,
        other => return Err(corrupt("outbox.method", other)),
    })
}

pub(crate) fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

fn parse_direction(s: &str) -> Result<Direction> {
    match s {
        "in" => Ok(Direction::In),
        "out" => Ok(Direction::Out),
        other => Err(corrupt("outbox.direction", other)),
    }
}

/// Appends a check-in inside the caller's transaction. The caller has assigned `seq` (dense,
/// `MAX(seq) + 1` under the write lock).
pub(crate) fn insert(conn: &Connection, c: &Checkin) -> Result<()> {
    let scanned_ms = (c.scanned_at.unix_timestamp_nanos() / 1_000_000) as i64;
    conn.prepare_cached(
        "INSERT INTO outbox (seq, id, ticket_serial, code, method, direction, decision, reason,
                             hlc, scanned_at_ms, replica_cursor, operator_override, undoes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        i64_from(c.seq),
        c.id.to_string(),
        c.ticket_serial.map(i64_from),
        c.code,
        method_str(c.method),
        direction_str(c.direction),
        match c.decision {
            Decision::Admit => "admit",
            Decision::Reject => "reject",
        },
        c.reason.map(Reason::as_str),
        i64_from(c.hlc.as_u64()),
        scanned_ms,
        i64_from(c.replica_cursor),
        c.operator_override,
        c.undoes.map(|u| u.to_string()),
    ])?;
    Ok(())
}

/// The next dense seq and the clock to resume from: the newer of the last decision's stamp and
/// the last remote clock observed (meta `hlc`). Read under the write lock.
pub(crate) fn next_seq_and_clock(conn: &Connection) -> Result<(u64, Hlc)> {
    let last: Option<(i64, i64)> = conn
        .prepare_cached("SELECT seq, hlc FROM outbox ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, local) = match last {
        Some((s, h)) => (u64_from(s, "outbox.seq")?, u64_from(h, "outbox.hlc")?),
        // A fresh device enrolled for a gate continues the gate's sequence where the server
        // says it stands (meta `seq_floor`, from enrollment).
        None => (
            super::read_meta(conn, "seq_floor")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            0,
        ),
    };
    let observed = super::read_meta(conn, "hlc")?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok((seq + 1, Hlc::from_u64(local.max(observed))))
}

const COLUMNS: &str = "seq, id, ticket_serial, code, method, direction, decision, reason, hlc,
    scanned_at_ms, replica_cursor, operator_override, undoes, synced";

fn row_to_outbox(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        ticket_serial: r.get(2)?,
        code: r.get(3)?,
        method: r.get(4)?,
        direction: r.get(5)?,
        decision: r.get(6)?,
        reason: r.get(7)?,
        hlc: r.get(8)?,
        scanned_at_ms: r.get(9)?,
        replica_cursor: r.get(10)?,
        operator_override: r.get(11)?,
        undoes: r.get(12)?,
        synced: r.get(13)?,
    })
}

struct RawRow {
    seq: i64,
    id: String,
    ticket_serial: Option<i64>,
    code: Option<String>,
    method: String,
    direction: String,
    decision: String,
    reason: Option<String>,
    hlc: i64,
    scanned_at_ms: i64,
    replica_cursor: i64,
    operator_override: Option<String>,
    undoes: Option<String>,
    synced: i64,
}

impl RawRow {
    fn into_row(self) -> Result<OutboxRow> {
        let scanned_at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.scanned_at_ms) * 1_000_000)
                .map_err(|e| corrupt("outbox.scanned_at_ms", e))?;
        Ok(OutboxRow {
            checkin: Checkin {
                id: Uuid::parse_str(&self.id).map_err(|e| corrupt("outbox.id", e))?,
                seq: u64_from(self.seq, "outbox.seq")?,
                ticket_serial: self
                    .ticket_serial
                    .map(|s| u64_from(s, "outbox.ticket_serial"))
                    .transpose()?,
                code: self.code,
                method: parse_method(&self.method)?,
                direction: parse_direction(&self.direction)?,
                decision: match self.decision.as_str() {
                    "admit" => Decision::Admit,
                    "reject" => Decision::Reject,
                    other => return Err(corrupt("outbox.decision", other)),
                },
                reason: self
                    .reason
                    .map(|r| Reason::parse(&r).ok_or_else(|| corrupt("outbox.reason", r)))
                    .transpose()?,
                hlc: Hlc::from_u64(u64_from(self.hlc, "outbox.hlc")?),
                scanned_at,
                replica_cursor: u64_from(self.replica_cursor, "outbox.replica_cursor")?,
                operator_override: self.operator_override,
                undoes: self
                    .undoes
                    .map(|u| Uuid::parse_str(&u).map_err(|e| corrupt("outbox.undoes", e)))
                    .transpose()?,
            },
            synced: self.synced != 0,
        })
    }
}

impl Replica {
    /// The highest seq the server has acknowledged (everything up to it is on the server).
    pub fn acked_seq(&self) -> Result<u64> {
        Ok(super::read_meta(&self.conn, "acked_seq")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Check-ins not yet acknowledged by the server, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<Checkin>> {
        let sql = format!("SELECT {COLUMNS} FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![i64_from(self.acked_seq()?), limit as i64],
            row_to_outbox,
        )?;
        rows.map(|r| r?.into_row().map(|o| o.checkin)).collect()
    }

    /// Marks everything up to `through_seq` as on the server, and records per-check-in statuses
    /// (by seq: the outbox's key, so a batch of a thousand costs a thousand key lookups).
    pub fn acknowledge(&mut self, through_seq: u64, statuses: &[(u64, PushStatus)]) -> Result<()> {
        let previous = self.acked_seq()?;
        let tx = self.conn.transaction()?;
        if through_seq > previous {
            tx.prepare_cached("UPDATE outbox SET synced = 1 WHERE seq > ?1 AND seq <= ?2")?
                .execute([i64_from(previous), i64_from(through_seq)])?;
            super::set_meta(&tx, "acked_seq", &through_seq.to_string())?;
        }
        {
            let mut stmt =
                tx.prepare_cached("UPDATE outbox SET server_status = ?2 WHERE seq = ?1")?;
            for (seq, status) in statuses {
                let s = match status {
                    PushStatus::Stored => "stored",
                    PushStatus::Duplicate => "duplicate",
                    PushStatus::Invalid => "invalid",
                };
                stmt.execute(params![i64_from(*seq), s])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Check-ins waiting for the server.
    pub fn outbox_depth(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM outbox WHERE seq > ?1")?
            .query_row([i64_from(self.acked_seq()?)], |r| r.get(0))?;
        u64_from(n, "count")
    }

    pub fn outbox_len(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM outbox")?
            .query_row([], |r| r.get(0))?;
        u64_from(n, "count")
    }

    pub fn checkin(&self, id: Uuid) -> Result<Option<OutboxRow>> {
        let sql = format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1");
        let raw = self
            .conn
            .prepare_cached(&sql)?
            .query_row([id.to_string()], row_to_outbox)
            .optional()?;
        raw.map(RawRow::into_row).transpose()
    }

    /// This gate's log after `after`, oldest first, at most `limit` rows (what it serves to
    /// its mesh peers).
    pub fn log_after(&self, after: u64, limit: usize) -> Result<Vec<Checkin>> {
        let sql = format!("SELECT {COLUMNS} FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![i64_from(after), limit as i64], row_to_outbox)?;
        rows.map(|r| r?.into_row().map(|o| o.checkin)).collect()
    }

    /// The whole log, oldest first (for audits and tests).
    pub fn all_checkins(&self) -> Result<Vec<OutboxRow>> {
        let sql = format!("SELECT {COLUMNS} FROM outbox ORDER BY seq");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], row_to_outbox)?;
        rows.map(|r| r?.into_row()).collect()
    }

    /// Whether a check-in has already been undone.
    pub fn is_undone(&self, id: Uuid) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM outbox WHERE undoes = ?1")?
            .query_row([id.to_string()], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(seq: u64) -> Checkin {
        Checkin {
            id: Uuid::now_v7(),
            seq,
            ticket_serial: Some(seq),
            code: None,
            method: Method::Qr,
            direction: Direction::In,
            decision: Decision::Admit,
            reason: None,
            hlc: Hlc::new(1_000 + seq, 0),
            scanned_at: OffsetDateTime::UNIX_EPOCH,
            replica_cursor: 0,
            operator_override: None,
            undoes: None,
        }
    }

    #[test]
    fn acknowledgement_marks_synced_rows_and_records_each_status() {
        let mut r = Replica::open_in_memory().unwrap();
        for seq in 1..=4 {
            insert(&r.conn, &scan(seq)).unwrap();
        }
        assert_eq!(r.pending(10).unwrap().len(), 4);
        r.acknowledge(
            3,
            &[
                (1, PushStatus::Stored),
                (2, PushStatus::Duplicate),
                (3, PushStatus::Invalid),
            ],
        )
        .unwrap();
        assert_eq!(r.acked_seq().unwrap(), 3);
        let pending = r.pending(10).unwrap();
        assert_eq!(pending.iter().map(|c| c.seq).collect::<Vec<_>>(), [4]);
        let status = |seq: i64| -> (Option<String>, i64) {
            r.conn
                .query_row(
                    "SELECT server_status, synced FROM outbox WHERE seq = ?1",
                    [seq],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap()
        };
        assert_eq!(status(1), (Some("stored".into()), 1));
        assert_eq!(status(2), (Some("duplicate".into()), 1));
        assert_eq!(status(3), (Some("invalid".into()), 1));
        assert_eq!(status(4), (None, 0));
    }
}
