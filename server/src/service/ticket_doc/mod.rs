//! The readable ticket: what a person sees on a ticket (event, holder, type, short code, QR),
//! gathered once as [`TicketDoc`] and drawn as PNG, SVG or PDF, and carried into wallet passes.
//!
//! # Layout
//! - this file: [`TicketDoc`], loaded for one participant or built from rows already read.
//! - [`image`]: the PNG (text drawn with an embedded font) and the SVG.
//! - [`pdf`]: one ticket per A6 page, for one participant or a whole event.

pub mod image;
pub mod pdf;

use sync_protocol::wire::TicketStatus;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AppState;
use super::tickets::{self as issuing, EventKeys};
use crate::domain::Error;
use crate::domain::event::EventSettings;
use crate::store::events::EventRow;
use crate::store::participants::ParticipantRow;
use crate::store::tickets::TicketRow;
use crate::store::{self, ms_to_time};

/// Everything a ticket shows, for one participant's current, valid ticket.
#[derive(Clone)]
pub struct TicketDoc {
    pub event_id: Uuid,
    pub event_name: String,
    pub venue: Option<String>,
    /// Latitude and longitude of the venue, when the event's settings give them.
    pub location: Option<(f64, f64)>,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub participant_id: Uuid,
    pub name: Option<String>,
    pub organization: Option<String>,
    pub ticket_type: Option<String>,
    pub serial: u64,
    /// `XXXX-XXXX-XXXX`.
    pub short_code: String,
    /// The signed `U1:` text (a bearer secret: never logged).
    pub credential: String,
    pub valid_from: OffsetDateTime,
    pub valid_until: OffsetDateTime,
}

impl std::fmt::Debug for TicketDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketDoc")
            .field("event_id", &self.event_id)
            .field("participant_id", &self.participant_id)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl TicketDoc {
    /// The document of a participant's current ticket; 404 without participant or ticket, 409
    /// when the ticket is revoked (as for the QR image).
    pub async fn load(
        state: &AppState,
        event_id: Uuid,
        participant_id: Uuid,
    ) -> Result<Self, Error> {
        let event = store::events::require(&state.db, event_id).await?;
        let p =
            store::participants::get(&state.db, state.master.personal(), event_id, participant_id)
                .await?
                .ok_or(Error::NotFound("participant"))?;
        let ticket = p.ticket().ok_or(Error::NotFound("ticket"))?;
        if ticket.status()? != TicketStatus::Valid {
            return Err(Error::Conflict(
                "the ticket is revoked; issue a new one first".into(),
            ));
        }
        let keys = EventKeys::load(&state.db, &state.master, event_id)
            .await?
            .ok_or(Error::NotFound("event"))?;
        Self::build(&event, &p, &ticket, &keys)
    }

    /// The document from rows already read.
    pub fn build(
        event: &EventRow,
        p: &ParticipantRow,
        t: &TicketRow,
        keys: &EventKeys,
    ) -> Result<Self, Error> {
        let secs =
            |s: i64| OffsetDateTime::from_unix_timestamp(s).map_err(|e| Error::Internal(e.into()));
        let location = EventSettings::parse(&event.settings)?
            .venue_location
            .map(|l| (l.latitude, l.longitude));
        Ok(Self {
            event_id: event.id,
            event_name: event.name.clone(),
            venue: event.venue.clone(),
            location,
            starts_at: ms_to_time(event.starts_at),
            ends_at: ms_to_time(event.ends_at),
            participant_id: p.id,
            name: p.name.clone(),
            organization: p.organization.clone(),
            ticket_type: p.ticket_type.clone(),
            serial: u64::try_from(t.serial).map_err(anyhow::Error::from)?,
            short_code: issuing::short_code(t.short_code)?.to_string(),
            credential: keys.credential(t)?,
            valid_from: secs(t.valid_from)?,
            valid_until: secs(t.valid_until)?,
        })
    }

    /// "Tue 1 Dec 2026, 09:00 UTC – 18:00 UTC" (the end's date repeated only when it differs).
    pub fn when(&self) -> String {
        let start = crate::domain::mail::readable(self.starts_at);
        let end = if self.starts_at.date() == self.ends_at.date() {
            let f = time::macros::format_description!("[hour]:[minute] UTC");
            self.ends_at.format(&f).unwrap_or_default()
        } else {
            crate::domain::mail::readable(self.ends_at)
        };
        format!("{start} – {end}")
    }

    /// The lines printed under the event name, in order: when, where, holder, organization,
    /// ticket type (absent ones left out).
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("When", self.when())];
        if let Some(v) = self.venue.as_ref().filter(|v| !v.is_empty()) {
            out.push(("Where", v.clone()));
        }
        if let Some(v) = self.name.as_ref().filter(|v| !v.is_empty()) {
            out.push(("Name", v.clone()));
        }
        if let Some(v) = self.organization.as_ref().filter(|v| !v.is_empty()) {
            out.push(("Organization", v.clone()));
        }
        if let Some(v) = self.ticket_type.as_ref().filter(|v| !v.is_empty()) {
            out.push(("Ticket", v.clone()));
        }
        out
    }
}

/// The QR module matrix of a credential (ECC M), `true` = dark, without quiet zone.
pub fn qr_modules(text: &str) -> anyhow::Result<(usize, Vec<bool>)> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)?;
    let width = code.width();
    let modules = code
        .to_colors()
        .into_iter()
        .map(|c| c == qrcode::Color::Dark)
        .collect();
    Ok((width, modules))
}
