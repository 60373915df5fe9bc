//! Ticket e-mail: queuing messages ([`send_tickets`]), the organizer's templates, and the worker
//! that sends them ([`run`]).
//!
//! `POST …/tickets/send` queues one row per participant in its unit of work (with the audit
//! line), so a message exists exactly when the request that asked for it committed. The worker
//! (one per process) claims due rows with a lease, as the webhook worker does, so several
//! processes on one PostgreSQL send each message once; it renders the organizer's templates (or
//! the built-in ones) with the QR code attached inline (`cid:`), and sends through SMTP
//! (`USHER_SMTP_URL`), or, with no SMTP server configured, writes the message as an `.eml` file
//! under the data directory (0600) for a person to open.
//!
//! A failed attempt is retried on a doubling schedule (10 s up to 1 h, [`MAX_ATTEMPTS`]
//! attempts), unless the mail server's answer is permanent (5xx); the last answer is kept on the
//! row and shown to the organizer. All processes together send at most `USHER_MAIL_PER_MINUTE`
//! messages a minute: a worker claims no more than what is left of the last minute's budget.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sync_protocol::wire::TicketStatus;
use uuid::Uuid;

use super::AppState;
use super::mail_outbox::WAKE;
use super::tickets::{self as issuing, EventKeys};
use super::uow::UnitOfWork;
use crate::domain::Error;
use crate::domain::auth::Actor;
use crate::domain::crypto::random_below;
use crate::domain::mail::{self as templates, Context, Templates};
use crate::settings::{Secret, Settings};
use crate::store::events::EventRow;
use crate::store::mail::{Claimed, NewMail, TemplateRow};
use crate::store::{self, Db, ms_to_time, now_ms};

/// Attempts of one message before it is `failed`.
pub const MAX_ATTEMPTS: u32 = 10;
/// How often a worker looks for due messages when nothing woke it.
const POLL: Duration = Duration::from_secs(1);
/// Messages claimed at once per process.
const CLAIM: i64 = 16;
/// Most bytes of a mail server's answer kept on a row.
const ERROR_LEN: usize = 500;
/// Most participants named in one send request.
pub const MAX_IDS: usize = 10_000;

/// How ticket e-mail is sent.
#[derive(Debug, Clone)]
pub struct Config {
    /// lettre's connection URL; `None` = `.eml` files in `eml_dir`.
    pub smtp_url: Option<Secret<String>>,
    /// The sender (`Name <address>`), checked at start.
    pub from: String,
    pub per_minute: u32,
    pub retry_scale: f64,
    /// Where messages are written without an SMTP server.
    pub eml_dir: PathBuf,
    /// Time an SMTP server has for one command.
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "Usher <usher@localhost>".into(),
            per_minute: 120,
            retry_scale: 1.0,
            eml_dir: PathBuf::from("mail"),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Reads and checks the mail settings: a bad sender or SMTP URL stops the start with a
    /// message, rather than failing every message later.
    pub fn from_settings(s: &Settings) -> anyhow::Result<Self> {
        s.mail_from.parse::<Mailbox>().map_err(|e| {
            anyhow::anyhow!(
                "USHER_MAIL_FROM {:?} is not an address (e.g. `Usher <tickets@example.org>`): {e}",
                s.mail_from
            )
        })?;
        if let Some(url) = &s.smtp_url {
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose()).map_err(|e| {
                anyhow::anyhow!(
                    "USHER_SMTP_URL is not usable ({e}); write it as smtp://host:port, \
                     smtp://user:pass@host:587?tls=required or smtps://user:pass@host:465"
                )
            })?;
        }
        let retry_scale = if s.mail_retry_scale.is_finite() && s.mail_retry_scale > 0.0 {
            s.mail_retry_scale
        } else {
            1.0
        };
        Ok(Self {
            smtp_url: s.smtp_url.clone(),
            from: s.mail_from.clone(),
            per_minute: s.mail_per_minute.max(1),
            retry_scale,
            eml_dir: s.data_dir.join("mail"),
            timeout: Duration::from_secs(30),
        })
    }

    /// A claimed message stays with its worker this long: past a whole SMTP dialogue.
    fn lease(&self) -> Duration {
        self.timeout * 4 + Duration::from_secs(10)
    }
}

/// The delay before attempt `failed + 1`: 10 s doubling per failed attempt up to 1 h, scaled,
/// with up to a tenth of jitter; `None` once [`MAX_ATTEMPTS`] attempts failed.
pub fn retry_delay(failed: u32, scale: f64, jitter_permille: u64) -> Option<Duration> {
    if failed >= MAX_ATTEMPTS {
        return None;
    }
    let base = Duration::from_secs(10)
        .saturating_mul(1u32 << failed.saturating_sub(1).min(16))
        .min(Duration::from_secs(3600));
    let base = base.mul_f64(scale);
    Some(base + base.mul_f64(jitter_permille as f64 / 10_000.0))
}

// ---------------------------------------------------------------- queuing

/// What `POST …/tickets/send` did.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct SendSummary {
    /// Messages queued now.
    pub queued: u64,
    /// Participants skipped because a message for their current ticket is queued or sent
    /// (pass `"resend": true` to send again).
    pub already_sent: u64,
    /// Participants with no e-mail address.
    pub no_email: u64,
    /// Participants without a valid ticket.
    pub no_ticket: u64,
    /// The queued messages' ids.
    pub mail_ids: Vec<Uuid>,
}

/// Queues a ticket message for every participant of the event (or the ones named) who has an
/// address and a valid ticket and, unless `resend`, no message for that ticket queued or sent
/// yet. Named participants that do not exist are a 422 naming `participant_ids[i]`.
pub async fn send_tickets(
    state: &AppState,
    actor: &Actor,
    event_id: Uuid,
    ids: Option<Vec<Uuid>>,
    resend: bool,
) -> Result<SendSummary, Error> {
    store::events::require(&state.db, event_id).await?;
    let mut uow = UnitOfWork::begin(&state.db, state.master.personal()).await?;
    let candidates = store::mail::candidates(uow.tx(), event_id, ids.as_deref()).await?;
    if let Some(ids) = &ids {
        let found: std::collections::HashSet<Uuid> =
            candidates.iter().map(|c| c.participant_id).collect();
        if let Some(i) = ids.iter().position(|id| !found.contains(id)) {
            return Err(Error::validation(
                format!("participant_ids[{i}]"),
                format!("no participant {} in this event", ids[i]),
            ));
        }
    }
    let mut summary = SendSummary::default();
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in candidates {
        if !seen.insert(c.participant_id) {
            continue;
        }
        let serial = match (c.ticket_serial, c.ticket_status.as_deref()) {
            (Some(s), Some(status)) if status == TicketStatus::Valid.as_str() => s,
            _ => {
                summary.no_ticket += 1;
                continue;
            }
        };
        if !c.has_email {
            summary.no_email += 1;
            continue;
        }
        if c.already && !resend {
            summary.already_sent += 1;
            continue;
        }
        let id = Uuid::now_v7();
        summary.mail_ids.push(id);
        rows.push(NewMail {
            id,
            event_id,
            participant_id: c.participant_id,
            ticket_serial: serial,
            alert: None,
        });
    }
    summary.queued = rows.len() as u64;
    store::audit::record(
        uow.tx(),
        actor,
        "tickets.send",
        Some(event_id),
        None,
        serde_json::json!({"queued": summary.queued, "resend": resend,
            "named": ids.as_ref().map(Vec::len)}),
    )
    .await?;
    uow.ticket_mails(rows);
    uow.commit(&state.notifier).await?;
    Ok(summary)
}

/// The event's templates: its own, else the built-in ones (and whether they are its own).
pub async fn templates_of(db: &Db, event_id: Uuid) -> Result<(Templates, Option<i64>), Error> {
    Ok(match store::mail::template(db, event_id).await? {
        Some(t) => (
            Templates {
                subject: t.subject,
                html: t.html,
                text: t.text,
            },
            Some(t.updated_at),
        ),
        None => (Templates::default(), None),
    })
}

/// Checks and saves an event's templates (a template that does not render is a 422 naming
/// its part).
pub async fn save_templates(
    db: &Db,
    actor: &Actor,
    event_id: Uuid,
    t: Templates,
) -> Result<i64, Error> {
    templates::validate(&t)?;
    store::events::require(db, event_id).await?;
    let now = now_ms();
    let mut tx = db.begin().await?;
    store::mail::put_template(
        &mut tx,
        event_id,
        &TemplateRow {
            subject: t.subject,
            html: t.html,
            text: t.text,
            updated_at: now,
        },
    )
    .await?;
    store::audit::record(
        &mut tx,
        actor,
        "mail_template.update",
        Some(event_id),
        None,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(now)
}

/// Returns an event to the built-in templates.
pub async fn reset_templates(db: &Db, actor: &Actor, event_id: Uuid) -> Result<(), Error> {
    store::events::require(db, event_id).await?;
    let mut tx = db.begin().await?;
    store::mail::delete_template(&mut tx, event_id).await?;
    store::audit::record(
        &mut tx,
        actor,
        "mail_template.reset",
        Some(event_id),
        None,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------- the message

/// The template context of one participant's ticket.
pub fn context(
    event: &EventRow,
    p: &store::participants::ParticipantRow,
    t: &store::tickets::TicketRow,
) -> anyhow::Result<Context> {
    let secs = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(s).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    Ok(Context {
        event: templates::EventView {
            name: event.name.clone(),
            venue: event.venue.clone(),
            starts: templates::readable(ms_to_time(event.starts_at)),
            ends: templates::readable(ms_to_time(event.ends_at)),
            starts_at: templates::rfc3339(ms_to_time(event.starts_at)),
            ends_at: templates::rfc3339(ms_to_time(event.ends_at)),
        },
        participant: templates::ParticipantView {
            name: p.name.clone(),
            ticket_type: p.ticket_type.clone(),
            organization: p.organization.clone(),
        },
        ticket: templates::TicketView {
            short_code: issuing::short_code(t.short_code)?.to_string(),
            serial: u64::try_from(t.serial)?,
            valid_from: templates::rfc3339(secs(t.valid_from)),
            valid_until: templates::rfc3339(secs(t.valid_until)),
        },
        qr_src: format!("cid:{}", templates::QR_CID),
        wallet: templates::WalletView::default(),
    })
}

/// The wallet links of one ticket: each present when this server has that wallet configured
/// (Apple also needs `USHER_PUBLIC_URL`).
fn wallet_links(
    state: &AppState,
    event: &EventRow,
    p: &store::participants::ParticipantRow,
    t: &store::tickets::TicketRow,
    keys: &EventKeys,
) -> Result<templates::WalletView, Error> {
    let serial = u64::try_from(t.serial).map_err(anyhow::Error::from)?;
    let apple = state
        .wallet
        .apple_link(&state.master, event.id, p.id, serial)?;
    let google = match &state.wallet.google {
        Some(signer) => {
            let doc = super::ticket_doc::TicketDoc::build(event, p, t, keys)?;
            Some(signer.save_url(&doc, time::OffsetDateTime::now_utc())?)
        }
        None => None,
    };
    Ok(templates::WalletView { apple, google })
}

/// Why a message cannot be built or sent: `permanent` ones are not retried.
#[derive(Debug)]
struct Failure {
    text: String,
    permanent: bool,
}

impl Failure {
    fn permanent(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            permanent: true,
        }
    }
    fn transient(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            permanent: false,
        }
    }
}

/// Builds the message of one claimed row.
async fn build_message(
    state: &AppState,
    config: &Config,
    c: &Claimed,
    cache: &mut HashMap<Uuid, (EventRow, EventKeys, Templates)>,
) -> Result<Message, Failure> {
    let internal = |e: &dyn std::fmt::Display| {
        Failure::transient(format!("the server could not build the message: {e}"))
    };
    if c.kind == "alert" {
        return alert_message(config, c);
    }
    let p = store::participants::get(
        &state.db,
        state.master.personal(),
        c.event_id,
        c.participant_id,
    )
    .await
    .map_err(|e| internal(&e))?
    .ok_or_else(|| Failure::permanent("the participant was erased"))?;
    let ticket = p
        .ticket()
        .filter(|t| t.serial == c.ticket_serial && t.status == TicketStatus::Valid.as_str())
        .ok_or_else(|| {
            Failure::permanent("the ticket was revoked or reissued before the message was sent")
        })?;
    let Some(email) = p.email.clone().filter(|e| !e.is_empty()) else {
        return Err(Failure::permanent("the participant has no e-mail address"));
    };
    let address: lettre::Address = email
        .parse()
        .map_err(|e| Failure::permanent(format!("{email:?} is not a deliverable address: {e}")))?;
    if let std::collections::hash_map::Entry::Vacant(v) = cache.entry(c.event_id) {
        let event = store::events::get(&state.db, c.event_id)
            .await
            .map_err(|e| internal(&e))?
            .ok_or_else(|| Failure::permanent("the event was deleted"))?;
        let keys = EventKeys::load(&state.db, &state.master, c.event_id)
            .await
            .map_err(|e| internal(&e))?
            .ok_or_else(|| Failure::permanent("the event was deleted"))?;
        let (t, _) = templates_of(&state.db, c.event_id)
            .await
            .map_err(|e| internal(&e))?;
        v.insert((event, keys, t));
    }
    let Some((event, keys, t)) = cache.get(&c.event_id) else {
        return Err(Failure::transient("the event's data is missing"));
    };
    let credential = keys.credential(&ticket).map_err(|e| internal(&e))?;
    let mut ctx = context(event, &p, &ticket).map_err(|e| internal(&e))?;
    ctx.wallet = wallet_links(state, event, &p, &ticket, keys).map_err(|e| internal(&e))?;
    let rendered = templates::render(t, &ctx).map_err(|e| Failure::permanent(e.to_string()))?;
    let png = issuing::render_png(&credential).map_err(|e| internal(&e))?;
    let png_type = ContentType::parse("image/png").map_err(|e| internal(&e))?;
    let from: Mailbox = config.from.parse().map_err(|e| {
        Failure::permanent(format!(
            "the sender {:?} is not an address: {e}",
            config.from
        ))
    })?;
    Message::builder()
        .from(from)
        .to(Mailbox::new(p.name.clone(), address))
        .subject(rendered.subject)
        .message_id(Some(format!("<{}@usher.ticket>", c.id)))
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(rendered.text))
                .multipart(
                    MultiPart::related()
                        .singlepart(SinglePart::html(rendered.html))
                        .singlepart(
                            Attachment::new_inline(templates::QR_CID.to_owned())
                                .body(png, png_type),
                        ),
                ),
        )
        .map_err(|e| internal(&e))
}

/// An alert message to a staff member: stored whole when the alert fired, sent as plain text.
fn alert_message(config: &Config, c: &Claimed) -> Result<Message, Failure> {
    let (Some(to), Some(subject), Some(body)) = (&c.recipient, &c.subject, &c.body) else {
        return Err(Failure::permanent("the alert message is incomplete"));
    };
    let address: lettre::Address = to
        .parse()
        .map_err(|e| Failure::permanent(format!("the address is not deliverable: {e}")))?;
    let from: Mailbox = config.from.parse().map_err(|e| {
        Failure::permanent(format!(
            "the sender {:?} is not an address: {e}",
            config.from
        ))
    })?;
    Message::builder()
        .from(from)
        .to(Mailbox::new(None, address))
        .subject(subject.clone())
        .message_id(Some(format!("<{}@usher.alert>", c.id)))
        .singlepart(SinglePart::plain(body.clone()))
        .map_err(|e| Failure::transient(format!("the server could not build the message: {e}")))
}

// ---------------------------------------------------------------- the worker

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

impl Transport {
    fn new(config: &Config) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(match &config.smtp_url {
            Some(url) => Self::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())?
                    .timeout(Some(config.timeout))
                    .build(),
            ),
            None => Self::Files(config.eml_dir.clone()),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Smtp(_) => "smtp",
            Self::Files(_) => "file",
        }
    }

    async fn send(&self, id: Uuid, message: Message) -> Result<(), Failure> {
        match self {
            Self::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let mut text = format!("the mail server refused or failed: {e}");
                    if let Some(source) = std::error::Error::source(&e) {
                        text.push_str(&format!(" ({source})"));
                    }
                    Err(Failure {
                        text: truncate(text),
                        permanent: e.is_permanent(),
                    })
                }
            },
            Self::Files(dir) => {
                let path = dir.join(format!("{id}.eml"));
                let bytes = message.formatted();
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || write_private(&dir, &path, &bytes))
                    .await
                    .map_err(|e| Failure::transient(e.to_string()))?
                    .map_err(|e| Failure::transient(format!("cannot write the .eml file: {e}")))
            }
        }
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > ERROR_LEN {
        let mut cut = ERROR_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Writes a file only its owner can read (0600), in a directory only its owner can enter.
fn write_private(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let tmp = path.with_extension("eml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

/// Sends until `state.stopping` is cancelled; a message in flight then finishes.
pub async fn run(state: AppState) {
    let config = state.mail.clone();
    let transport = match Transport::new(&config) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up ticket e-mail; no message is sent");
            return;
        }
    };
    loop {
        let notified = WAKE.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if state.stopping.is_cancelled() {
            return;
        }
        let worked = match send_due(&state, &config, &transport).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = ?e, "ticket e-mail pass failed");
                0
            }
        };
        if worked > 0 {
            continue;
        }
        let wait = match store::mail::next_due(&state.db).await {
            Ok(Some(due)) => {
                Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)).min(POLL)
            }
            _ => POLL,
        }
        .max(Duration::from_millis(5));
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(wait) => {}
            () = state.stopping.cancelled() => return,
        }
    }
}

/// One pass: claims what the rate allows of the due messages and sends them; returns how many
/// were claimed.
async fn send_due(
    state: &AppState,
    config: &Config,
    transport: &Transport,
) -> anyhow::Result<usize> {
    let now = now_ms();
    let load = store::mail::recent_load(&state.db, now - 60_000, now).await?;
    let budget = (i64::from(config.per_minute) - load).min(CLAIM);
    if budget <= 0 {
        return Ok(0);
    }
    let lease = now + i64::try_from(config.lease().as_millis())?;
    let claimed = store::mail::claim(&state.db, now, lease, budget).await?;
    let n = claimed.len();
    let mut cache = HashMap::new();
    for c in claimed {
        if state.stopping.is_cancelled() {
            // Unsent claims come back when their lease ends.
            break;
        }
        let result = match build_message(state, config, &c, &mut cache).await {
            Ok(message) => transport.send(c.id, message).await,
            Err(f) => Err(f),
        };
        match result {
            Ok(()) => {
                store::mail::sent(&state.db, c.id, lease, transport.name(), now_ms()).await?;
                metrics::counter!("usher_ticket_mails_total", "result" => "sent").increment(1);
            }
            Err(f) => {
                let failed = u32::try_from(c.attempts)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                let next = if f.permanent {
                    None
                } else {
                    let jitter = random_below(1000).unwrap_or(500);
                    retry_delay(failed, config.retry_scale, jitter).map(|d| {
                        now_ms()
                            .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
                    })
                };
                store::mail::attempt_failed(&state.db, c.id, lease, &f.text, next).await?;
                let result = if next.is_some() { "retrying" } else { "failed" };
                metrics::counter!("usher_ticket_mails_total", "result" => result).increment(1);
                tracing::info!(mail = %c.id, error = %f.text, result, "ticket e-mail not sent");
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_then_stop() {
        assert_eq!(retry_delay(1, 1.0, 0), Some(Duration::from_secs(10)));
        assert_eq!(retry_delay(2, 1.0, 0), Some(Duration::from_secs(20)));
        assert_eq!(retry_delay(3, 1.0, 0), Some(Duration::from_secs(40)));
        assert_eq!(retry_delay(9, 1.0, 0), Some(Duration::from_secs(2560)));
        assert_eq!(retry_delay(MAX_ATTEMPTS, 1.0, 0), None);
        assert_eq!(retry_delay(1, 0.01, 0), Some(Duration::from_millis(100)));
        assert_eq!(retry_delay(1, 1.0, 1000), Some(Duration::from_secs(11)));
    }
}
