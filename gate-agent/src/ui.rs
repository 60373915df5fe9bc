//! The operator screen: a kiosk page served on the loopback interface.
//!
//! A local web page rather than a terminal UI: kiosks and tablets at venue gates run a
//! full-screen browser anyway, a page can show a screen-filling green/red verdict with the
//! attendee's name and attention note in large type, works with touch for undo/override/lookup,
//! and needs no extra dependency (axum already serves the sync side). It also makes the screen
//! testable over plain HTTP. The page listens to `/api/events` (server-sent events), so a badge
//! read by the USB scanner, the camera or BLE appears on screen the moment it is decided. The
//! same listener serves `/metrics` for Prometheus ([`crate::telemetry`]).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sync_protocol::wire::{Direction, Reason};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::decide::{GateError, ScanRequest, Subject, wall_ms};
use crate::handle::{GateHandle, HandleError};
use crate::replica::Replica;
use crate::status::status;
use crate::sync::SyncStatus;
use crate::telemetry;

#[derive(Clone)]
pub struct UiState {
    pub gate: GateHandle,
    pub replica: Arc<Mutex<Replica>>,
    pub sync: Arc<SyncStatus>,
    /// Operator sessions, pairing and the screen's settings.
    pub screen: Arc<Screen>,
    /// The badge printer, when `--printer` is given.
    pub badges: Option<Arc<crate::printer::Badges>>,
}

impl UiState {
    pub fn new(gate: GateHandle, replica: Arc<Mutex<Replica>>, sync: Arc<SyncStatus>) -> Self {
        Self::with_options(gate, replica, sync, ScreenOptions::default())
    }

    pub fn with_options(
        gate: GateHandle,
        replica: Arc<Mutex<Replica>>,
        sync: Arc<SyncStatus>,
        options: ScreenOptions,
    ) -> Self {
        Self {
            gate,
            replica,
            sync,
            screen: Arc::new(Screen::new(options)),
            badges: None,
        }
    }

    /// Adds the badge printer (`POST /api/print`).
    pub fn with_badges(mut self, badges: Arc<crate::printer::Badges>) -> Self {
        self.badges = Some(badges);
        self
    }

    /// The code a kiosk browser enters once to get an operator session.
    pub fn pairing_code(&self) -> String {
        self.screen.pairing_code()
    }
}

/// How the operator screen behaves.
#[derive(Debug, Clone)]
pub struct ScreenOptions {
    /// How long a verdict stays on screen before it returns to READY.
    pub verdict: Duration,
    /// Host names (besides `localhost` and IP literals) the screen answers to.
    pub allowed_hosts: Vec<String>,
    /// Print each new pairing code on stderr (the `gate-agent run` console).
    pub announce_pairing: bool,
    /// Kiosk self check-in: the page faces attendees (large instructions, automatic return
    /// to the start screen), and the API refuses what only staff may do: lookups, manual
    /// picks, direction changes, overrides, undo and reprints.
    pub kiosk: bool,
}

impl Default for ScreenOptions {
    fn default() -> Self {
        Self {
            verdict: Duration::from_secs(4),
            allowed_hosts: Vec::new(),
            announce_pairing: false,
            kiosk: false,
        }
    }
}

/// The name of the operator session cookie.
pub const SESSION_COOKIE: &str = "usher_gate";
/// Wrong pairing codes before the code is replaced by a new one.
const PAIRING_ATTEMPTS: u32 = 5;
/// Wrong supervisor PINs in a row before overrides pause.
const PIN_ATTEMPTS: u32 = 5;
/// How long overrides pause after [`PIN_ATTEMPTS`] wrong PINs.
const PIN_LOCKOUT: Duration = Duration::from_secs(60);
/// Pairing codes avoid characters that read alike (0/O, 1/I/L).
const PAIRING_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// Operator sessions of this gate's screen: one pairing code at a time (replaced after each
/// pairing and after a few wrong tries), sessions stored as SHA-256 of their token in the
/// replica (they survive restarts), and the supervisor PIN's failure count.
pub struct Screen {
    options: ScreenOptions,
    pairing: Mutex<(String, u32)>,
    sessions: Mutex<HashSet<String>>,
    pin_failures: Mutex<(u32, Option<std::time::Instant>)>,
}

fn new_pairing_code() -> String {
    (0..8)
        .map(|_| PAIRING_ALPHABET[rand::random_range(0..PAIRING_ALPHABET.len())] as char)
        .collect()
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Screen {
    fn new(options: ScreenOptions) -> Self {
        let screen = Self {
            options,
            pairing: Mutex::new((new_pairing_code(), 0)),
            sessions: Mutex::new(HashSet::new()),
            pin_failures: Mutex::new((0, None)),
        };
        screen.announce();
        screen
    }

    /// The current pairing code, shown as `XXXX-XXXX`.
    pub fn pairing_code(&self) -> String {
        let code = self.pairing.lock().map(|p| p.0.clone()).unwrap_or_default();
        format!(
            "{}-{}",
            &code[..4.min(code.len())],
            &code[4.min(code.len())..]
        )
    }

    fn announce(&self) {
        if self.options.announce_pairing {
            eprintln!(
                "operator screen pairing code: {} (enter it once in the kiosk browser)",
                self.pairing_code()
            );
        }
    }

    fn replace_code(&self) {
        if let Ok(mut p) = self.pairing.lock() {
            *p = (new_pairing_code(), 0);
        }
        self.announce();
    }

    /// Checks a pairing code; a right one is used up (a new one is printed), a few wrong ones
    /// replace it too, so guessing gets nowhere.
    fn pair(&self, given: &str) -> bool {
        let given: String = given
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let (ok, exhausted) = match self.pairing.lock() {
            Ok(mut p) => {
                let ok = !given.is_empty()
                    && subtle::ConstantTimeEq::ct_eq(given.as_bytes(), p.0.as_bytes()).into();
                if !ok {
                    p.1 += 1;
                }
                (ok, p.1 >= PAIRING_ATTEMPTS)
            }
            Err(_) => (false, false),
        };
        if ok || exhausted {
            if exhausted && !ok {
                tracing::warn!("too many wrong pairing codes: the code was replaced");
            }
            self.replace_code();
        }
        ok
    }

    fn pin_locked(&self) -> bool {
        self.pin_failures
            .lock()
            .map(|f| f.1.is_some_and(|t| t.elapsed() < PIN_LOCKOUT))
            .unwrap_or(true)
    }

    fn pin_result(&self, ok: bool) {
        if let Ok(mut f) = self.pin_failures.lock() {
            if ok {
                *f = (0, None);
            } else {
                f.0 += 1;
                if f.0 >= PIN_ATTEMPTS {
                    *f = (0, Some(std::time::Instant::now()));
                }
            }
        }
    }
}

pub(crate) struct ApiError(StatusCode, &'static str, String, Option<&'static str>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.1, "detail": self.2});
        if let Some(field) = self.3 {
            body["field"] = json!(field);
        }
        (self.0, Json(body)).into_response()
    }
}

/// What a kiosk in self check-in mode refuses: `what` names the refused part of the request.
fn kiosk_refused(what: &'static str) -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        "kiosk_mode",
        format!("this gate runs as a self check-in kiosk: {what} is for staff screens only"),
        Some(what),
    )
}

fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "operator_session_required",
        "this screen is not paired: enter the pairing code printed by `gate-agent run`".into(),
        None,
    )
}

impl From<HandleError> for ApiError {
    fn from(e: HandleError) -> Self {
        let (status, code, field) = match &e {
            HandleError::Gate(GateError::Deactivated) => {
                (StatusCode::CONFLICT, "gate_deactivated", None)
            }
            HandleError::Gate(GateError::NoConfig) => (StatusCode::CONFLICT, "not_synced", None),
            HandleError::Gate(GateError::UnknownCheckin(_)) => {
                (StatusCode::NOT_FOUND, "unknown_checkin", Some("id"))
            }
            HandleError::Gate(GateError::CannotUndo(..)) => {
                (StatusCode::CONFLICT, "cannot_undo", Some("id"))
            }
            HandleError::Gate(GateError::OverrideWithoutTicket) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "override_needs_ticket",
                Some("serial"),
            ),
            HandleError::Gate(e) if e.is_disk_full() => {
                (StatusCode::INSUFFICIENT_STORAGE, "disk_full", None)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "kiosk request failed");
        }
        ApiError(status, code, e.to_string(), field)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    credential: Option<String>,
    serial: Option<u64>,
    direction: Option<Direction>,
    #[serde(rename = "override")]
    operator_override: Option<String>,
    /// The supervisor PIN, required with an override.
    pin: Option<String>,
    /// Who approved an override (recorded with it).
    supervisor: Option<String>,
}

/// Checks the supervisor PIN the organizer set for this event (replicated as an argon2id
/// hash in the gate's configuration) and returns who approved, for the log. Offline: the hash
/// is in the replica.
pub(crate) async fn approve(
    s: &UiState,
    pin: Option<String>,
    supervisor: Option<String>,
) -> Result<String, ApiError> {
    let Some(pin) = pin.filter(|p| !p.trim().is_empty()) else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "supervisor_pin_required",
            "a supervisor must enter the event's PIN".into(),
            Some("pin"),
        ));
    };
    if s.screen.pin_locked() {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "supervisor_pin_locked",
            "too many wrong PINs: try again in a minute".into(),
            Some("pin"),
        ));
    }
    let replica = s.replica.clone();
    let ok = tokio::task::spawn_blocking(move || -> Result<Option<bool>, String> {
        let r = replica
            .lock()
            .map_err(|_| "replica lock poisoned".to_string())?;
        let e = r.require_enrollment().map_err(|e| e.to_string())?;
        let hash = r
            .gate_config(e.gate_id)
            .map_err(|e| e.to_string())?
            .and_then(|c| c.supervisor_pin);
        drop(r);
        Ok(hash.map(|h| sync_protocol::pin::verify(pin.trim(), &h)))
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
            None,
        )
    })?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e, None))?;
    match ok {
        None => Err(ApiError(
            StatusCode::CONFLICT,
            "no_supervisor_pin",
            "the organizer has not set a supervisor PIN for this event".into(),
            Some("pin"),
        )),
        Some(false) => {
            s.screen.pin_result(false);
            tracing::warn!("override refused: wrong supervisor PIN");
            Err(ApiError(
                StatusCode::FORBIDDEN,
                "bad_supervisor_pin",
                "wrong supervisor PIN".into(),
                Some("pin"),
            ))
        }
        Some(true) => {
            s.screen.pin_result(true);
            let who: String = supervisor
                .as_deref()
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .unwrap_or("supervisor")
                .chars()
                .filter(|c| !c.is_control())
                .take(80)
                .collect();
            Ok(who)
        }
    }
}

/// A body the JSON extractor refused: 400 with its message, naming `field` when given.
fn bad_body(
    field: Option<&'static str>,
) -> impl FnOnce(axum::extract::rejection::JsonRejection) -> ApiError {
    move |e| ApiError(StatusCode::BAD_REQUEST, "bad_request", e.body_text(), field)
}

async fn scan(
    State(s): State<UiState>,
    body: Result<Json<ScanBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(bad_body(None))?;
    if s.screen.options.kiosk {
        if b.serial.is_some() {
            return Err(kiosk_refused("serial"));
        }
        if b.operator_override.is_some() || b.pin.is_some() || b.supervisor.is_some() {
            return Err(kiosk_refused("override"));
        }
        if b.direction.is_some() {
            return Err(kiosk_refused("direction"));
        }
    }
    let subject = match (b.credential, b.serial) {
        (Some(c), None) if !c.trim().is_empty() => Subject::Text(c),
        (None, Some(serial)) => Subject::Serial(serial),
        _ => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_request",
                "give exactly one of `credential` or `serial`".into(),
                Some("credential"),
            ));
        }
    };
    let operator_override = match b.operator_override.filter(|o| !o.trim().is_empty()) {
        None => None,
        Some(why) => {
            let who = approve(&s, b.pin, b.supervisor).await?;
            let why: String = why
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            tracing::info!(approved_by = %who, reason = %why, "supervisor override");
            Some(format!("{why} (approved by {who})"))
        }
    };
    let outcome = s
        .gate
        .scan(ScanRequest {
            subject,
            method: None,
            direction: b.direction,
            operator_override,
        })
        .await?;
    Ok(Json(outcome).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrintBody {
    serial: u64,
    pin: Option<String>,
    supervisor: Option<String>,
}

/// `POST /api/print {serial, pin?, supervisor?}`: prints the ticket's badge (no admission). The
/// first print needs nothing more; a reprint needs the supervisor PIN.
async fn print_badge(
    State(s): State<UiState>,
    body: Result<Json<PrintBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    use crate::printer::PrintError;
    if s.screen.options.kiosk {
        // Badges print by themselves on a first entry; reprints need staff.
        return Err(kiosk_refused("print"));
    }
    let Json(b) = body.map_err(bad_body(Some("serial")))?;
    let Some(badges) = s.badges.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "no_printer",
            PrintError::NoPrinter.to_string(),
            None,
        ));
    };
    let internal = |e: PrintError| {
        let (status, code, field) = match &e {
            PrintError::UnknownTicket(_) => {
                (StatusCode::NOT_FOUND, "unknown_ticket", Some("serial"))
            }
            PrintError::ReprintNeedsApproval => (
                StatusCode::FORBIDDEN,
                "supervisor_pin_required",
                Some("pin"),
            ),
            PrintError::Printer(_) => (StatusCode::BAD_GATEWAY, "printer_failed", None),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        ApiError(status, code, e.to_string(), field)
    };
    let count = badges.count(b.serial).await.map_err(internal)?;
    let approved_by = if count > 0 {
        if b.pin.as_deref().is_none_or(|p| p.trim().is_empty()) {
            return Err(internal(PrintError::ReprintNeedsApproval));
        }
        Some(approve(&s, b.pin, b.supervisor).await?)
    } else {
        None
    };
    let record = badges
        .print(b.serial, None, approved_by)
        .await
        .map_err(internal)?;
    Ok(Json(record).into_response())
}

#[derive(Deserialize)]
struct UndoBody {
    id: Uuid,
}

async fn undo(
    State(s): State<UiState>,
    body: Result<Json<UndoBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    if s.screen.options.kiosk {
        return Err(kiosk_refused("undo"));
    }
    let Json(b) = body.map_err(bad_body(Some("id")))?;
    Ok(Json(s.gate.undo(b.id).await?).into_response())
}

#[derive(Deserialize)]
struct LookupQuery {
    q: String,
}

async fn lookup(
    State(s): State<UiState>,
    Query(q): Query<LookupQuery>,
) -> Result<Response, ApiError> {
    if s.screen.options.kiosk {
        return Err(kiosk_refused("search"));
    }
    Ok(Json(json!({"items": s.gate.lookup(q.q).await?})).into_response())
}

async fn get_status(State(s): State<UiState>) -> Result<Response, ApiError> {
    let replica = s.replica.clone();
    let st = tokio::task::spawn_blocking(move || {
        let r = replica
            .lock()
            .map_err(|_| "replica lock poisoned".to_string())?;
        status(&r).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
            None,
        )
    })?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e, None))?;
    let mut v = serde_json::to_value(&st).unwrap_or_default();
    v["sync_error"] = json!(s.sync.last_error());
    // With the sync loops in this process, `online` is their live view (heartbeat), not the
    // age of the last sync.
    if s.sync.running.load(Ordering::Relaxed) {
        v["online"] = json!(s.sync.online.load(Ordering::Relaxed));
    }
    v["verdict_ms"] = json!(s.screen.options.verdict.as_millis() as u64);
    v["printer"] = json!(s.badges.as_ref().map(|b| b.target.to_string()));
    v["kiosk"] = json!(s.screen.options.kiosk);
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
struct PairBody {
    code: String,
}

/// `POST /api/pair {code}`: the kiosk browser trades the pairing code for an operator session
/// cookie (HttpOnly, SameSite=Strict), stored hashed in the replica so it outlives restarts.
async fn pair(
    State(s): State<UiState>,
    body: Result<Json<PairBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(bad_body(Some("code")))?;
    if !s.screen.pair(&b.code) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "bad_pairing_code",
            "wrong pairing code: use the one `gate-agent run` printed last".into(),
            Some("code"),
        ));
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let hash = token_hash(&token);
    let replica = s.replica.clone();
    let key = format!("ui_session:{hash}");
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let r = replica
            .lock()
            .map_err(|_| "replica lock poisoned".to_string())?;
        r.set_meta(&key, &wall_ms().to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
            None,
        )
    })?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e, None))?;
    if let Ok(mut set) = s.screen.sessions.lock() {
        set.insert(hash);
    }
    tracing::info!("operator screen paired");
    let cookie =
        format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=31536000");
    let mut resp = Json(json!({"paired": true})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Every operator route needs a paired session.
async fn require_session(
    State(s): State<UiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = session_token(req.headers()) else {
        return Err(unauthorized());
    };
    let hash = token_hash(&token);
    let known = s
        .screen
        .sessions
        .lock()
        .is_ok_and(|set| set.contains(&hash));
    if !known {
        let replica = s.replica.clone();
        let key = format!("ui_session:{hash}");
        let stored = tokio::task::spawn_blocking(move || {
            replica
                .lock()
                .ok()
                .and_then(|r| r.meta(&key).ok().flatten())
        })
        .await
        .ok()
        .flatten();
        if stored.is_none() {
            return Err(unauthorized());
        }
        if let Ok(mut set) = s.screen.sessions.lock() {
            set.insert(hash);
        }
    }
    Ok(next.run(req).await)
}

/// Whether `host` (a Host header) names this screen: an IP literal, `localhost`, or a name the
/// operator allowed. Any other name may be a DNS-rebinding page in the kiosk browser.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Refuses requests whose Host is not this screen's, and writes whose Origin is another site.
async fn check_host(
    State(s): State<UiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, &s.screen.options.allowed_hosts) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "bad_host",
            format!("this screen does not answer to host {host:?} (see --ui-host)"),
            None,
        ));
    }
    if let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin != "null" && !origin_host.eq_ignore_ascii_case(host) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "bad_origin",
                "requests from another site are refused".into(),
                None,
            ));
        }
    }
    Ok(next.run(req).await)
}

/// The shutdown token, for the handlers whose responses stay open (the event stream).
#[derive(Clone)]
struct Stopping(CancellationToken);

/// The live decision stream. It ends at shutdown, so the graceful stop of the listener is not
/// held open by a kiosk browser.
async fn events(
    State(s): State<UiState>,
    Extension(Stopping(shutdown)): Extension<Stopping>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.gate.subscribe();
    let stream = futures_util::stream::unfold((rx, shutdown), |(mut rx, shutdown)| async move {
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return None,
                r = rx.recv() => r,
            };
            match next {
                Ok(o) => {
                    let ev = Event::default()
                        .event("decision")
                        .json_data(&o)
                        .unwrap_or_default();
                    return Some((Ok(ev), (rx, shutdown)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// The page, with the operator's words for every reason (`Reason::describe`) filled in.
fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let reasons: serde_json::Map<String, serde_json::Value> = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), json!(r.describe())))
            .collect();
        include_str!("ui/index.html").replace(
            "__REASONS__",
            &serde_json::Value::Object(reasons).to_string(),
        )
    })
}

/// The attendee-facing page of a self check-in kiosk, with the attendees' words for every
/// reason filled in (no operator jargon: each refusal sends them to staff).
fn kiosk_page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let mut messages: serde_json::Map<String, serde_json::Value> = Reason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), json!(attendee_message(*r))))
            .collect();
        messages.insert(
            "default".into(),
            json!("We could not check you in here. A staff member will help you."),
        );
        include_str!("ui/kiosk.html").replace(
            "__KIOSK_MESSAGES__",
            &serde_json::Value::Object(messages).to_string(),
        )
    })
}

/// What an attendee reads for a refusal at a self check-in kiosk.
fn attendee_message(r: Reason) -> &'static str {
    match r {
        Reason::AlreadyInside | Reason::ReentryNotAllowed => "This ticket has already been used.",
        Reason::NotYetValid | Reason::NotValidToday => "This ticket is not valid today.",
        Reason::Expired => "This ticket is no longer valid.",
        Reason::WrongEvent => "This ticket is for another event.",
        Reason::WrongZone => "This ticket does not open this entrance.",
        Reason::ZoneFull => "This area is full right now. Please wait a moment.",
        Reason::DailyLimitReached => "This ticket has no entries left today.",
        Reason::EventClosed => "Check-in is closed.",
        Reason::Malformed | Reason::UnknownCode => {
            "We could not read this code. Try again, or show it to a staff member."
        }
        _ => "We could not check you in here. A staff member will help you.",
    }
}

async fn index(State(s): State<UiState>) -> Html<&'static str> {
    Html(if s.screen.options.kiosk {
        kiosk_page()
    } else {
        page()
    })
}

/// `GET /metrics`: the gate's metrics in the Prometheus text format. The gauges that live in
/// the replica (outbox depth, replica cursor, age of the last sync) are read at scrape time.
async fn metrics(State(s): State<UiState>) -> Response {
    let replica = s.replica.clone();
    let read = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let r = replica
            .lock()
            .map_err(|_| "replica lock poisoned".to_string())?;
        let last_sync: Option<u64> = r
            .meta("last_sync_at")
            .map_err(|e| e.to_string())?
            .and_then(|v| v.parse().ok());
        let depth = r.outbox_depth().map_err(|e| e.to_string())?;
        let cursor = r.replica_cursor().map_err(|e| e.to_string())?;
        Ok((depth, cursor, last_sync))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match read {
        Ok((depth, cursor, stored)) => {
            telemetry::outbox_depth(depth);
            telemetry::replica_cursor(cursor);
            let live = s.sync.last_sync_ms.load(Ordering::Relaxed);
            let last = stored.max((live > 0).then_some(live));
            telemetry::sync_state(s.sync.online.load(Ordering::Relaxed), last, wall_ms());
        }
        // Still render what is known: a scrape that fails is worse than one stale gauge.
        Err(e) => tracing::warn!(error = %e, "metrics: replica gauges not refreshed"),
    }
    match telemetry::render() {
        Some(body) => ([(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)], body).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are recorded by another recorder in this process\n",
        )
            .into_response(),
    }
}

/// The operator screen and its API, plus `/metrics`. `/metrics` is routed beside the operator
/// routes, not among them: whatever guards the screen's routes must leave it readable by
/// Prometheus scraping this (loopback) listener.
pub fn router(state: UiState, shutdown: CancellationToken) -> Router<()> {
    let operator = Router::new()
        .route("/api/status", get(get_status))
        .route("/api/scan", post(scan))
        .route("/api/undo", post(undo))
        .route("/api/print", post(print_badge))
        .route("/api/lookup", get(lookup))
        .route("/api/events", get(events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    // The page itself holds no data: it asks for the pairing code when the API answers 401.
    let screen = Router::new()
        .route("/", get(index))
        .route("/api/pair", post(pair))
        .merge(operator)
        .route_layer(middleware::from_fn_with_state(state.clone(), check_host));
    screen
        .route("/metrics", get(metrics))
        .layer(Extension(Stopping(shutdown)))
        .with_state(state)
}

/// Serves the kiosk page until `shutdown` (open event streams end then too).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: UiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Record from the first decision on, whoever started this listener.
    telemetry::install();
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "operator screen listening");
    if let Some(a) = addr
        && !a.ip().is_loopback()
    {
        tracing::warn!(addr = %a, "the operator screen is reachable beyond this device: anyone on the network can try its pairing code; bind it to 127.0.0.1 unless a second screen needs it");
        eprintln!("WARNING: the operator screen listens on {a}, beyond loopback; prefer 127.0.0.1");
    }
    axum::serve(listener, router(state, shutdown.clone()))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
