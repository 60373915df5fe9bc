//! Ticket e-mail templates: the built-in ones, the checks an organizer's own templates pass
//! before they are saved, and rendering (minijinja; the HTML part auto-escaped, undefined
//! names an error rather than empty text, and a fuel bound on what one render may cost).
//!
//! A template sees
//! - `event`: `name`, `venue` (or none), `starts`, `ends` (readable UTC times), `starts_at`,
//!   `ends_at` (RFC 3339);
//! - `participant`: `name`, `ticket_type`, `organization` (each possibly none);
//! - `ticket`: `short_code`, `serial`, `valid_from`, `valid_until` (RFC 3339);
//! - `qr_src`: the `cid:` URL of the QR code attached to the message (for an `<img src>`);
//! - `wallet`: `apple`, `google`: links to add the ticket to a wallet, or none when the server
//!   has no wallet keys.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use time::OffsetDateTime;

use super::Error;

/// The Content-ID of the inline QR code image.
pub const QR_CID: &str = "ticket-qr";
/// Longest template, per part.
pub const MAX_TEMPLATE_LEN: usize = 64 * 1024;
/// Longest rendered subject.
const MAX_SUBJECT_LEN: usize = 250;

pub const DEFAULT_SUBJECT: &str = "Your ticket for {{ event.name }}";

pub const DEFAULT_TEXT: &str = "Hello{% if participant.name %} {{ participant.name }}{% endif %},

here is your ticket for {{ event.name }}.

When:   {{ event.starts }} to {{ event.ends }}
{% if event.venue %}Where:  {{ event.venue }}
{% endif %}{% if participant.ticket_type %}Ticket: {{ participant.ticket_type }}
{% endif %}
Show the QR code attached to this message at the entrance. If it cannot be
scanned, give the code {{ ticket.short_code }}.
{% if wallet.apple %}
Add to Apple Wallet: {{ wallet.apple }}{% endif %}{% if wallet.google %}
Add to Google Wallet: {{ wallet.google }}{% endif %}
";

pub const DEFAULT_HTML: &str = r#"<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>{{ event.name }}</title></head>
<body style="font-family: sans-serif; color: #111;">
<p>Hello{% if participant.name %} {{ participant.name }}{% endif %},</p>
<p>here is your ticket for <strong>{{ event.name }}</strong>.</p>
<table>
<tr><td>When</td><td>{{ event.starts }} to {{ event.ends }}</td></tr>
{% if event.venue %}<tr><td>Where</td><td>{{ event.venue }}</td></tr>
{% endif %}{% if participant.ticket_type %}<tr><td>Ticket</td><td>{{ participant.ticket_type }}</td></tr>
{% endif %}</table>
<p><img src="{{ qr_src }}" alt="Ticket QR code" width="328" height="328"></p>
<p>Show this code at the entrance. If it cannot be scanned, give the code
<strong style="font-family: monospace;">{{ ticket.short_code }}</strong>.</p>
{% if wallet.apple %}<p><a href="{{ wallet.apple }}">Add to Apple Wallet</a></p>
{% endif %}{% if wallet.google %}<p><a href="{{ wallet.google }}">Add to Google Wallet</a></p>
{% endif %}</body>
</html>
"#;

/// The three parts of a ticket message, as templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    pub subject: String,
    pub html: String,
    pub text: String,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            subject: DEFAULT_SUBJECT.into(),
            html: DEFAULT_HTML.into(),
            text: DEFAULT_TEXT.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub name: String,
    pub venue: Option<String>,
    pub starts: String,
    pub ends: String,
    pub starts_at: String,
    pub ends_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantView {
    pub name: Option<String>,
    pub ticket_type: Option<String>,
    pub organization: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketView {
    pub short_code: String,
    pub serial: u64,
    pub valid_from: String,
    pub valid_until: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WalletView {
    pub apple: Option<String>,
    pub google: Option<String>,
}

/// Everything a template sees.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub event: EventView,
    pub participant: ParticipantView,
    pub ticket: TicketView,
    pub qr_src: String,
    pub wallet: WalletView,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// RFC 3339, or empty for a time out of range.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `Tue 1 Dec 2026, 09:00 UTC`.
pub fn readable(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short] [day padding:none] [month repr:short] [year], [hour]:[minute] UTC"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

impl Context {
    /// The context templates are checked against when saved.
    pub fn sample() -> Self {
        let at = OffsetDateTime::from_unix_timestamp(1_796_112_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let until = at + time::Duration::hours(9);
        Self {
            event: EventView {
                name: "Sample Event".into(),
                venue: Some("Main Hall".into()),
                starts: readable(at),
                ends: readable(until),
                starts_at: rfc3339(at),
                ends_at: rfc3339(until),
            },
            participant: ParticipantView {
                name: Some("Ada Lovelace".into()),
                ticket_type: Some("Standard".into()),
                organization: Some("Analytical Engines".into()),
            },
            ticket: TicketView {
                short_code: "ABCD-EFGH-JKMN".into(),
                serial: 1,
                valid_from: rfc3339(at),
                valid_until: rfc3339(until),
            },
            qr_src: format!("cid:{QR_CID}"),
            wallet: WalletView {
                apple: Some("https://usher.example/wallet/apple".into()),
                google: Some("https://pay.google.com/gp/v/save/sample".into()),
            },
        }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(200_000));
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    if let Some(line) = e.line() {
        text = format!("line {line}: {text}");
    }
    text
}

/// Renders the three parts; an error names the part (`subject`, `html`, `text`).
pub fn render(t: &Templates, ctx: &Context) -> Result<Rendered, Error> {
    let env = environment();
    let value = minijinja::Value::from(minijinja::value::Serde(ctx));
    let part = |field: &str, name: &str, src: &str| {
        env.render_named_str(name, src, value.clone()).map_err(|e| {
            Error::validation(
                field,
                format!("the {field} template does not render: {}", describe(&e)),
            )
        })
    };
    let subject = part("subject", "subject.txt", &t.subject)?;
    let subject = subject.trim().to_owned();
    if subject.is_empty() {
        return Err(Error::validation("subject", "the subject renders empty"));
    }
    if subject.contains(['\r', '\n']) {
        return Err(Error::validation("subject", "the subject must be one line"));
    }
    if subject.chars().count() > MAX_SUBJECT_LEN {
        return Err(Error::validation(
            "subject",
            format!("the subject renders longer than {MAX_SUBJECT_LEN} characters"),
        ));
    }
    Ok(Rendered {
        subject,
        html: part("html", "ticket.html", &t.html)?,
        text: part("text", "ticket.txt", &t.text)?,
    })
}

/// Checks an organizer's templates before they are saved: each within size, and each renders
/// against the sample context (so a typo in a name is refused now, not at sending time).
pub fn validate(t: &Templates) -> Result<(), Error> {
    for (field, src) in [
        ("subject", &t.subject),
        ("html", &t.html),
        ("text", &t.text),
    ] {
        if src.len() > MAX_TEMPLATE_LEN {
            return Err(Error::validation(
                field,
                format!("the {field} template is longer than {MAX_TEMPLATE_LEN} bytes"),
            ));
        }
        if src.trim().is_empty() {
            return Err(Error::validation(
                field,
                format!("the {field} template is empty"),
            ));
        }
    }
    let mut without_wallet = Context::sample();
    without_wallet.wallet = WalletView::default();
    without_wallet.event.venue = None;
    without_wallet.participant = ParticipantView {
        name: None,
        ticket_type: None,
        organization: None,
    };
    render(t, &Context::sample())?;
    render(t, &without_wallet)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_templates_render_and_escape_html() {
        validate(&Templates::default()).unwrap();
        let mut ctx = Context::sample();
        ctx.participant.name = Some("<b>Bob</b> & Co".into());
        let r = render(&Templates::default(), &ctx).unwrap();
        assert_eq!(r.subject, "Your ticket for Sample Event");
        assert!(
            r.html.contains("&lt;b&gt;Bob&lt;&#x2f;b&gt; &amp; Co")
                || r.html.contains("&lt;b&gt;Bob")
        );
        assert!(!r.html.contains("<b>Bob</b>"));
        assert!(
            r.text.contains("<b>Bob</b> & Co"),
            "plain text is not escaped"
        );
        assert!(r.html.contains("cid:ticket-qr"));
        assert!(r.text.contains("ABCD-EFGH-JKMN"));
        assert!(r.text.contains("Main Hall"));
    }

    #[test]
    fn a_broken_template_names_its_part() {
        let t = Templates {
            html: "{{ event.nmae }}".into(),
            ..Default::default()
        };
        match validate(&t) {
            Err(Error::Validation { field, .. }) => assert_eq!(field.as_deref(), Some("html")),
            other => panic!("{other:?}"),
        }
        let t = Templates {
            text: "{% if %}".into(),
            ..Default::default()
        };
        match validate(&t) {
            Err(Error::Validation { field, .. }) => assert_eq!(field.as_deref(), Some("text")),
            other => panic!("{other:?}"),
        }
        let t = Templates {
            subject: "a\n{{ event.name }}\nb".into(),
            ..Default::default()
        };
        match validate(&t) {
            Err(Error::Validation { field, .. }) => assert_eq!(field.as_deref(), Some("subject")),
            other => panic!("{other:?}"),
        }
    }
}
