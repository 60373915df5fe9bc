//! Badge printing (`gate-agent run --printer zpl://HOST:PORT | lp:QUEUE`): a badge (name,
//! organization, ticket type, QR of the credential) rendered from a template and sent as ZPL
//! over raw TCP (Zebra-style label printers, port 9100) or as a one-page PDF through the
//! system's print queue (CUPS `lp`).
//!
//! A print is its own logged event (the replica's `prints` table), never an admission: it
//! writes no check-in. The first print of a ticket's badge needs nobody's approval; every later
//! one (a reprint) needs the supervisor PIN, and is logged with who approved it.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::decide::{ScanOutcome, wall_ms};
use crate::replica::{Replica, ReplicaError};
use sync_protocol::wire::{Decision, Direction};

/// Where badges go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrinterTarget {
    /// ZPL over raw TCP to `HOST:PORT`.
    Zpl(String),
    /// A PDF through CUPS: `lp -d QUEUE`.
    Lp(String),
}

impl FromStr for PrinterTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(addr) = s.strip_prefix("zpl://") {
            let addr = addr.trim_end_matches('/');
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            return if ok {
                Ok(Self::Zpl(addr.to_owned()))
            } else {
                Err(format!(
                    "{s:?}: give zpl://HOST:PORT (e.g. zpl://10.0.0.50:9100)"
                ))
            };
        }
        if let Some(queue) = s.strip_prefix("lp:") {
            let ok = !queue.is_empty()
                && queue
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
            return if ok {
                Ok(Self::Lp(queue.to_owned()))
            } else {
                Err(format!("{s:?}: give lp:QUEUE with a CUPS queue name"))
            };
        }
        Err(format!("{s:?}: a printer is zpl://HOST:PORT or lp:QUEUE"))
    }
}

impl std::fmt::Display for PrinterTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Zpl(a) => write!(f, "zpl://{a}"),
            Self::Lp(q) => write!(f, "lp:{q}"),
        }
    }
}

/// What a badge shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Badge {
    pub name: String,
    pub organization: Option<String>,
    pub ticket_type: Option<String>,
    /// The text the QR holds: the `U1:` credential when the gate read it, else the short code.
    pub credential: String,
}

/// The built-in ZPL template (a 4×3 in label at 203 dpi). An organizer template uses the same
/// placeholders: `{name}`, `{organization}`, `{ticket_type}`, `{credential}`; each value is
/// written hex-escaped after a `^FH`, so no attendee's name can inject ZPL commands.
pub const DEFAULT_ZPL_TEMPLATE: &str = "^XA^CI28\n\
^FO40,40^A0N,70,70^FH^FD{name}^FS\n\
^FO40,130^A0N,40,40^FH^FD{organization}^FS\n\
^FO40,185^A0N,34,34^FH^FD{ticket_type}^FS\n\
^FO40,240^BQN,2,5^FH^FDQA,{credential}^FS\n\
^XZ\n";

/// A field value for `^FH` (escape character `_`): printable ASCII stays, except the command
/// characters `^` and `~` and the escape `_`; everything else is its UTF-8 bytes as `_XX`
/// (`^CI28` reads them back as UTF-8).
fn zpl_field(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x20..0x7f).contains(&b) && !matches!(b, b'^' | b'~' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The ZPL of a badge from `template`.
pub fn render_zpl(template: &str, badge: &Badge) -> String {
    template
        .replace("{name}", &zpl_field(&badge.name))
        .replace(
            "{organization}",
            &zpl_field(badge.organization.as_deref().unwrap_or("")),
        )
        .replace(
            "{ticket_type}",
            &zpl_field(badge.ticket_type.as_deref().unwrap_or("")),
        )
        .replace("{credential}", &zpl_field(&badge.credential))
}

/// A PDF string literal: Latin-1 text with `\`, `(` and `)` escaped (the standard fonts have
/// no other characters; anything beyond Latin-1 prints as `?`).
fn pdf_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' | '(' | ')' => {
                out.push('\\');
                out.push(c);
            }
            c if (' '..='~').contains(&c) => out.push(c),
            c if u32::from(c) <= 0xff && u32::from(c) >= 0xa0 => {
                out.push_str(&format!("\\{:03o}", u32::from(c)));
            }
            _ => out.push('?'),
        }
    }
    out
}

/// A one-page PDF badge (A6 portrait): name, organization, ticket type, and the QR drawn as
/// filled squares.
pub fn render_pdf(badge: &Badge) -> Result<Vec<u8>, PrintError> {
    let qr = qrcode::QrCode::with_error_correction_level(
        badge.credential.as_bytes(),
        qrcode::EcLevel::M,
    )
    .map_err(|e| PrintError::Render(e.to_string()))?;
    let width = qr.width();
    let colors = qr.to_colors();
    // A6 = 298 × 420 pt.
    let module = 200.0 / width as f64;
    let (x0, y0) = (49.0, 40.0);
    let mut content = String::new();
    content.push_str(&format!(
        "BT /F1 24 Tf 24 380 Td ({}) Tj ET\n",
        pdf_text(&badge.name)
    ));
    if let Some(org) = &badge.organization {
        content.push_str(&format!(
            "BT /F1 14 Tf 24 355 Td ({}) Tj ET\n",
            pdf_text(org)
        ));
    }
    if let Some(kind) = &badge.ticket_type {
        content.push_str(&format!(
            "BT /F1 12 Tf 24 335 Td ({}) Tj ET\n",
            pdf_text(kind)
        ));
    }
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (col, row) = (i % width, i / width);
            let x = x0 + col as f64 * module;
            let y = y0 + (width - 1 - row) as f64 * module;
            content.push_str(&format!("{x:.2} {y:.2} {module:.2} {module:.2} re\n"));
        }
    }
    content.push_str("f\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 298 420] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    Ok(pdf)
}

#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    #[error("no badge printer is configured on this gate (gate-agent run --printer)")]
    NoPrinter,
    #[error("ticket {0} is not in this gate's replica")]
    UnknownTicket(u64),
    #[error("this badge was printed already: a reprint needs the supervisor PIN")]
    ReprintNeedsApproval,
    #[error("the badge could not be rendered: {0}")]
    Render(String),
    #[error("the printer did not take the badge: {0}")]
    Printer(String),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// One logged print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrintRecord {
    pub serial: u64,
    /// The how-manieth print of this ticket's badge (1 = the first).
    pub count: u64,
    pub reprint: bool,
    pub approved_by: Option<String>,
    pub printer: String,
}

/// The gate's badge printer and its log.
pub struct Badges {
    pub target: PrinterTarget,
    pub template: String,
    replica: Arc<Mutex<Replica>>,
    /// One print at a time, so the count and the log follow the order badges come out.
    lock: tokio::sync::Mutex<()>,
}

/// How long a printer gets to accept the connection and the label.
const PRINT_TIMEOUT: Duration = Duration::from_secs(10);

impl Badges {
    pub fn new(
        target: PrinterTarget,
        template: Option<String>,
        replica: Arc<Mutex<Replica>>,
    ) -> Self {
        Self {
            target,
            template: template.unwrap_or_else(|| DEFAULT_ZPL_TEMPLATE.to_owned()),
            replica,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica) -> Result<T, ReplicaError> + Send + 'static,
    ) -> Result<T, PrintError> {
        let replica = self.replica.clone();
        tokio::task::spawn_blocking(move || {
            let r = replica
                .lock()
                .map_err(|_| PrintError::Task("replica lock poisoned".into()))?;
            f(&r).map_err(PrintError::from)
        })
        .await
        .map_err(|e| PrintError::Task(e.to_string()))?
    }

    /// How many times the badge of `serial` was printed here.
    pub async fn count(&self, serial: u64) -> Result<u64, PrintError> {
        self.db(move |r| r.print_count(serial)).await
    }

    /// Prints the badge of `serial`. `credential` is the `U1:` text when the gate read it (the
    /// QR then holds it), else the short code is used. A reprint needs `approved_by` (the
    /// caller checked the supervisor PIN).
    pub async fn print(
        &self,
        serial: u64,
        credential: Option<String>,
        approved_by: Option<String>,
    ) -> Result<PrintRecord, PrintError> {
        let _one = self.lock.lock().await;
        let (row, count) = self
            .db(move |r| Ok((r.ticket(serial)?, r.print_count(serial)?)))
            .await?;
        let row = row.ok_or(PrintError::UnknownTicket(serial))?;
        let reprint = count > 0;
        if reprint && approved_by.is_none() {
            return Err(PrintError::ReprintNeedsApproval);
        }
        let code = row
            .short_code
            .as_deref()
            .and_then(|c| sync_protocol::ShortCode::parse(c).ok())
            .map(|c| c.to_string());
        let badge = Badge {
            name: row.display_name.clone().unwrap_or_default(),
            organization: row.organization.clone(),
            ticket_type: row.ticket_type.clone(),
            credential: credential.or(code).unwrap_or_else(|| format!("#{serial}")),
        };
        self.send(&badge).await?;
        let printer = self.target.to_string();
        let (p, who) = (printer.clone(), approved_by.clone());
        self.db(move |r| r.record_print(serial, wall_ms(), reprint, who.as_deref(), &p))
            .await?;
        tracing::info!(serial, reprint, approved_by = ?approved_by, printer = %printer, "badge printed");
        Ok(PrintRecord {
            serial,
            count: count + 1,
            reprint,
            approved_by,
            printer,
        })
    }

    async fn send(&self, badge: &Badge) -> Result<(), PrintError> {
        match &self.target {
            PrinterTarget::Zpl(addr) => {
                let zpl = render_zpl(&self.template, badge);
                let sent = tokio::time::timeout(PRINT_TIMEOUT, async {
                    let mut s = tokio::net::TcpStream::connect(addr.as_str()).await?;
                    s.write_all(zpl.as_bytes()).await?;
                    s.flush().await?;
                    s.shutdown().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(PrintError::Printer(format!("{addr}: {e}"))),
                    Err(_) => Err(PrintError::Printer(format!("{addr}: no answer in 10 s"))),
                }
            }
            PrinterTarget::Lp(queue) => {
                let pdf = render_pdf(badge)?;
                let mut child = tokio::process::Command::new("lp")
                    .args(["-d", queue, "-t", "badge", "--", "-"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| PrintError::Printer(format!("lp: {e}")))?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin
                        .write_all(&pdf)
                        .await
                        .map_err(|e| PrintError::Printer(format!("lp: {e}")))?;
                }
                let out = tokio::time::timeout(PRINT_TIMEOUT, child.wait_with_output())
                    .await
                    .map_err(|_| PrintError::Printer("lp did not finish in 10 s".into()))?
                    .map_err(|e| PrintError::Printer(format!("lp: {e}")))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(PrintError::Printer(format!(
                        "lp -d {queue}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )))
                }
            }
        }
    }
}

/// Prints the badge of every first entry (an admission inward, not an undo) whose badge was not
/// printed yet. Runs until `shutdown`.
pub async fn print_on_admit(
    badges: Arc<Badges>,
    mut rx: broadcast::Receiver<ScanOutcome>,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.recv() => r,
        };
        let o = match next {
            Ok(o) => o,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "badge printing lagged behind the decisions");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(serial) = o.ticket_serial else {
            continue;
        };
        if o.decision != Decision::Admit || o.direction != Direction::In || o.undoes.is_some() {
            continue;
        }
        match badges.count(serial).await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(serial, error = %e, "badge print count unreadable");
                continue;
            }
        }
        if let Err(e) = badges.print(serial, o.presented.clone(), None).await {
            tracing::warn!(serial, error = %e, "badge not printed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_fields_cannot_inject_commands() {
        assert_eq!(
            "zpl://10.0.0.5:9100".parse::<PrinterTarget>(),
            Ok(PrinterTarget::Zpl("10.0.0.5:9100".into()))
        );
        assert_eq!(
            "lp:Front_Desk".parse::<PrinterTarget>(),
            Ok(PrinterTarget::Lp("Front_Desk".into()))
        );
        for bad in ["zpl://host", "zpl://:9100", "lp:", "lp:a b", "ipp://x", ""] {
            assert!(bad.parse::<PrinterTarget>().is_err(), "{bad}");
        }
        let badge = Badge {
            name: "Zoë ^XZ~JA_".into(),
            organization: Some("ACME".into()),
            ticket_type: None,
            credential: "U1:ABC".into(),
        };
        let zpl = render_zpl(DEFAULT_ZPL_TEMPLATE, &badge);
        assert!(zpl.contains("^FDZo_C3_AB _5EXZ_7EJA_5F^FS"), "{zpl}");
        assert!(zpl.contains("^BQN,2,5^FH^FDQA,U1:ABC^FS"), "{zpl}");
        assert_eq!(zpl.matches("^XZ").count(), 1, "{zpl}");
    }

    #[test]
    fn the_pdf_is_one_page_with_a_correct_xref() {
        let badge = Badge {
            name: "Ada (Countess) Lovelace".into(),
            organization: Some("Analytical Engines".into()),
            ticket_type: Some("Speaker".into()),
            credential: "U1:SOMETHING".into(),
        };
        let pdf = render_pdf(&badge).unwrap();
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.starts_with("%PDF-1.4\n") && text.ends_with("%%EOF\n"));
        assert!(text.contains("(Ada \\(Countess\\) Lovelace) Tj"), "{text}");
        assert!(text.contains(" re\n"));
        // Every xref offset points at its object.
        let xref_at: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let table = &text[xref_at..];
        for (i, line) in table.lines().skip(3).take(5).enumerate() {
            let off: usize = line[..10].parse().unwrap();
            assert!(
                text[off..].starts_with(&format!("{} 0 obj", i + 1)),
                "object {}",
                i + 1
            );
        }
    }
}
