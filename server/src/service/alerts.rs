//! Alerts: each event's rules ([`rules`], [`save_rules`]) and the evaluator ([`run`], one per
//! server process) that decides when an alert starts and stops firing.
//!
//! Every tick (`USHER_ALERT_TICK_MS`, 5 s by default) the evaluator reads, per event being
//! prepared or running, what its rules need (gate reports, ticket and conflict counts, recent
//! scans), computes the conditions that hold ([`alerts::holding`]) and compares them with the
//! alerts firing now. Each difference is a transition, recorded in its own unit of work with
//! what it sends: the `alerts` row (inserted, or marked cleared), the webhook messages
//! (`gate.offline` / `gate.online` for a gate, `alert.fired` / `alert.cleared` for every rule),
//! the live item the dashboards show, and, when an SMTP server is configured, one e-mail to each
//! of the event's staff. When several processes decide the same transition, the store lets the
//! statement of exactly one change a row (see `store::alerts`); the others roll back, so every
//! transition goes out once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use uuid::Uuid;

use super::AppState;
use super::uow::UnitOfWork;
use crate::domain::Error;
use crate::domain::alerts::{self, EventSeen, GateSeen, Holding, Kind, Rules};
use crate::domain::auth::Actor;
use crate::domain::live::Live;
use crate::domain::webhook;
use crate::store::alerts::{AlertRow, Watched};
use crate::store::mail::{AlertMail, NewMail};
use crate::store::{self, Db, now_ms};

/// An event's rules: its own, or the defaults.
pub async fn rules(db: &Db, event_id: Uuid) -> Result<Rules, Error> {
    store::events::require(db, event_id).await?;
    let stored = store::alerts::rules(db, event_id).await?;
    Ok(Rules::from_stored(stored.as_deref()))
}

/// Checks and stores an event's rules (with an audit line); the evaluator applies them from its
/// next tick.
pub async fn save_rules(
    db: &Db,
    actor: &Actor,
    event_id: Uuid,
    rules: Rules,
) -> Result<Rules, Error> {
    rules.check()?;
    store::events::require(db, event_id).await?;
    let text = serde_json::to_string(&rules).map_err(|e| Error::Internal(e.into()))?;
    let mut tx = db.begin().await?;
    store::alerts::put_rules(&mut tx, event_id, &text, now_ms()).await?;
    store::audit::record(
        &mut tx,
        actor,
        "alert_rules.update",
        Some(event_id),
        None,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(rules)
}

/// Evaluates every `tick` until `state.stopping` is cancelled.
pub async fn run(state: AppState, tick: Duration) {
    let tick = tick.max(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = state.stopping.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        if let Err(e) = evaluate(&state).await {
            tracing::warn!(error = ?e, "alert evaluation failed");
        }
    }
}

/// One pass over every watched event; returns the transitions this process recorded.
pub async fn evaluate(state: &AppState) -> Result<usize, Error> {
    let mut recorded = 0;
    for event in store::alerts::watched(&state.db).await? {
        if state.stopping.is_cancelled() {
            break;
        }
        match evaluate_event(state, &event).await {
            Ok(n) => recorded += n,
            Err(e) => tracing::warn!(event = %event.id, error = ?e, "alert evaluation failed"),
        }
    }
    Ok(recorded)
}

async fn evaluate_event(state: &AppState, event: &Watched) -> Result<usize, Error> {
    let rules = Rules::from_stored(event.rules.as_deref());
    // What fires is read before the conditions: an alert another process fired after this read
    // is not cleared on conditions older than its own (it decided on newer data, and this read
    // would otherwise see its row but not the report that raised it).
    let firing = store::alerts::firing(&state.db, event.id).await?;
    let now = now_ms();
    // A closed or archived event raises nothing: what still fires for it clears.
    let open = matches!(event.status.as_str(), "draft" | "live");
    let seen = if open {
        read(&state.db, event.id, &rules, now).await?
    } else {
        EventSeen::default()
    };
    let holding = alerts::holding(&rules, &seen, now);
    let firing_keys: HashSet<(&str, &str)> = firing
        .iter()
        .map(|a| (a.kind.as_str(), a.subject.as_str()))
        .collect();
    let holding_keys: HashSet<(&str, &str)> = holding
        .iter()
        .map(|h| (h.kind.as_str(), h.subject.as_str()))
        .collect();
    let gates: HashMap<String, &GateSeen> =
        seen.gates.iter().map(|g| (g.id.to_string(), g)).collect();
    let mut recorded = 0;
    for h in &holding {
        if !firing_keys.contains(&(h.kind.as_str(), h.subject.as_str()))
            && fire(state, event, h, now).await?
        {
            recorded += 1;
        }
    }
    for a in &firing {
        if holding_keys.contains(&(a.kind.as_str(), a.subject.as_str())) {
            continue;
        }
        let gate = gates.get(&a.subject).copied();
        // A gate is back when it is active and heard from within the rule's threshold (the
        // alert also clears when the rule is turned off or the gate deactivated).
        let back = gate.is_some_and(|g| {
            g.is_active
                && g.last_seen_at.is_some_and(|at| {
                    now - at <= i64::from(rules.gate_offline.after_seconds) * 1000
                })
        });
        let detail = match (Kind::parse(&a.kind), gate) {
            (Some(Kind::GateOffline), Some(g)) => serde_json::json!({
                "gate_id": g.id, "gate_name": g.name, "online": back,
                "last_seen_at": g.last_seen_at.map(|at| crate::domain::mail::rfc3339(crate::domain::ms_to_time(at))),
            }),
            (Some(Kind::OutboxDepth), Some(g)) => serde_json::json!({
                "gate_id": g.id, "gate_name": g.name, "outbox_depth": g.outbox_depth,
            }),
            (Some(Kind::ConflictCreated), _) => {
                serde_json::json!({"open_conflicts": seen.open_conflicts})
            }
            (Some(Kind::Attendance), _) => {
                serde_json::json!({"admitted": seen.admitted, "issued": seen.issued})
            }
            (Some(Kind::ErrorRate), _) => {
                serde_json::json!({"scans": seen.scans, "rejected": seen.rejected})
            }
            _ => serde_json::json!({}),
        };
        if clear(state, event, a, back, detail, now).await? {
            recorded += 1;
        }
    }
    Ok(recorded)
}

/// What the event's enabled rules need.
async fn read(db: &Db, event_id: Uuid, rules: &Rules, now: i64) -> Result<EventSeen, Error> {
    let mut seen = EventSeen::default();
    if rules.gate_offline.enabled || rules.outbox_depth.enabled {
        seen.gates = store::alerts::gates(db, event_id)
            .await?
            .into_iter()
            .map(|g| GateSeen {
                id: g.id,
                name: g.name,
                is_active: g.is_active,
                last_seen_at: g.last_seen_at,
                outbox_depth: g.outbox_depth,
            })
            .collect();
    }
    if rules.attendance.enabled || rules.conflict_created.enabled {
        let (_inside, admitted, issued, open) = store::reports::totals(db, event_id, 0).await?;
        seen.admitted = admitted;
        seen.issued = issued;
        seen.open_conflicts = open;
    }
    if rules.error_rate.enabled {
        let since = now - i64::from(rules.error_rate.window_seconds) * 1000;
        let (scans, rejected) = store::alerts::scans_since(db, event_id, since).await?;
        seen.scans = scans;
        seen.rejected = rejected;
    }
    Ok(seen)
}

/// The `alert.fired` / `alert.cleared` payload.
fn payload(a: &AlertRow, firing: bool, detail: &serde_json::Value) -> serde_json::Value {
    let at = |ms: i64| crate::domain::mail::rfc3339(crate::domain::ms_to_time(ms));
    serde_json::json!({
        "alert_id": a.id,
        "event_id": a.event_id,
        "kind": a.kind,
        "subject": a.subject,
        "state": if firing { "firing" } else { "cleared" },
        "fired_at": at(a.fired_at),
        "cleared_at": a.cleared_at.map(at),
        "detail": detail,
    })
}

async fn fire(state: &AppState, event: &Watched, h: &Holding, now: i64) -> Result<bool, Error> {
    let row = AlertRow {
        id: Uuid::now_v7(),
        event_id: event.id,
        kind: h.kind.as_str().to_owned(),
        subject: h.subject.clone(),
        fired_at: now,
        cleared_at: None,
        detail: h.detail.to_string(),
        cleared_detail: None,
    };
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    if !store::alerts::fire(uow.tx(), &row).await? {
        uow.rollback().await?;
        return Ok(false);
    }
    if h.kind == Kind::GateOffline {
        uow.webhook(
            event.id,
            webhook::GATE_OFFLINE,
            gate_payload(&row, &h.detail),
        );
    }
    uow.webhook(
        event.id,
        webhook::ALERT_FIRED,
        payload(&row, true, &h.detail),
    );
    finish(state, uow, event, &row, true, &h.detail).await?;
    metrics::counter!("usher_alert_transitions_total", "state" => "fired").increment(1);
    tracing::info!(event = %event.id, kind = %row.kind, subject = %row.subject, "alert fired");
    Ok(true)
}

async fn clear(
    state: &AppState,
    event: &Watched,
    a: &AlertRow,
    back: bool,
    detail: serde_json::Value,
    now: i64,
) -> Result<bool, Error> {
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    if !store::alerts::clear(uow.tx(), a.id, now, &detail.to_string()).await? {
        uow.rollback().await?;
        return Ok(false);
    }
    let row = AlertRow {
        cleared_at: Some(now),
        ..a.clone()
    };
    if a.kind == Kind::GateOffline.as_str() && back {
        uow.webhook(event.id, webhook::GATE_ONLINE, gate_payload(&row, &detail));
    }
    uow.webhook(
        event.id,
        webhook::ALERT_CLEARED,
        payload(&row, false, &detail),
    );
    finish(state, uow, event, &row, false, &detail).await?;
    metrics::counter!("usher_alert_transitions_total", "state" => "cleared").increment(1);
    tracing::info!(event = %event.id, kind = %row.kind, subject = %row.subject, "alert cleared");
    Ok(true)
}

/// The `gate.offline` / `gate.online` payload.
fn gate_payload(a: &AlertRow, detail: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "event_id": a.event_id,
        "gate_id": detail.get("gate_id").cloned().unwrap_or_else(|| a.subject.clone().into()),
        "gate_name": detail.get("gate_name"),
        "last_seen_at": detail.get("last_seen_at"),
        "alert_id": a.id,
    })
}

/// Queues the staff e-mails and the live item, then commits.
async fn finish(
    state: &AppState,
    mut uow: UnitOfWork,
    event: &Watched,
    a: &AlertRow,
    firing: bool,
    detail: &serde_json::Value,
) -> Result<(), Error> {
    if state.mail.smtp_url.is_some() {
        let (subject, body) = message(event, a, firing, detail);
        let staff = store::alerts::staff(uow.tx()).await?;
        uow.ticket_mails(staff.into_iter().map(|(user_id, email)| NewMail {
            id: Uuid::now_v7(),
            event_id: event.id,
            participant_id: user_id,
            ticket_serial: 0,
            alert: Some(AlertMail {
                recipient: email,
                subject: subject.clone(),
                body: body.clone(),
            }),
        }));
    }
    uow.live([Live::Alert {
        event_id: event.id,
        alert_id: a.id,
        kind: a.kind.clone(),
        subject: a.subject.clone(),
        firing,
    }]);
    uow.commit(&state.notifier).await
}

/// The e-mail of a transition: subject and plain text.
fn message(
    event: &Watched,
    a: &AlertRow,
    firing: bool,
    detail: &serde_json::Value,
) -> (String, String) {
    let title: &str = match Kind::parse(&a.kind) {
        Some(k) => k.title(),
        None => a.kind.as_str(),
    };
    let what = match detail.get("gate_name").and_then(|v| v.as_str()) {
        Some(gate) => format!("{title} ({gate})"),
        None => title.to_owned(),
    };
    let subject = if firing {
        format!("[Usher] {what}: {}", event.name)
    } else {
        format!("[Usher] Cleared: {what}: {}", event.name)
    };
    let at = |ms: i64| crate::domain::mail::rfc3339(crate::domain::ms_to_time(ms));
    let mut body = format!(
        "Event: {}\nAlert: {what}\nState: {}\nFired at: {}\n",
        event.name,
        if firing { "firing" } else { "cleared" },
        at(a.fired_at),
    );
    if let Some(cleared) = a.cleared_at {
        body.push_str(&format!("Cleared at: {}\n", at(cleared)));
    }
    if let Some(fields) = detail.as_object() {
        body.push('\n');
        for (k, v) in fields {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            body.push_str(&format!("{k}: {v}\n"));
        }
    }
    body.push_str("\nThe event's dashboard lists the alerts firing now.\n");
    (subject, body)
}
