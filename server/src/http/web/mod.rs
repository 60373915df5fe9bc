//! The organizer web console at `/`: server-rendered pages (minijinja templates embedded in the
//! binary, HTML auto-escaped), one small vanilla script and a stylesheet, no build step.
//!
//! Reads render on the server by calling the same handlers as the JSON API (so a page shows
//! exactly what the API answers, with the same role checks and paging); writes go from the
//! script to `/api/v1` with the session cookie and the CSRF header ([`session`]), so every rule
//! and every problem+json message is the API's own, shown next to the field it names. The few
//! plain forms (sign-in, password, sign-out, enrollment code) carry the CSRF token as a field.
//!
//! The dashboard listens on the event's `GET /api/v1/events/{event}/stream` (an `EventSource`
//! with the cookie) and re-reads the counters when something happened; the stream is fed by the
//! live notifier, which crosses server processes through PostgreSQL `NOTIFY`.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, context};
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::auth::{Auth, Role};
use crate::domain::error::Error;
use crate::http::api;
use crate::http::extract::{Path, Query};
use crate::service::AppState;
use crate::store;

pub mod session;

use session::Session;

/// Templates, compiled once; names ending in `.html` are auto-escaped.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    let templates: [(&str, &str); 13] = [
        ("layout.html", include_str!("templates/layout.html")),
        ("login.html", include_str!("templates/login.html")),
        ("password.html", include_str!("templates/password.html")),
        ("events.html", include_str!("templates/events.html")),
        ("event.html", include_str!("templates/event.html")),
        (
            "participants.html",
            include_str!("templates/participants.html"),
        ),
        ("import.html", include_str!("templates/import.html")),
        ("gates.html", include_str!("templates/gates.html")),
        ("enrollment.html", include_str!("templates/enrollment.html")),
        ("users.html", include_str!("templates/users.html")),
        ("api_keys.html", include_str!("templates/api_keys.html")),
        ("dashboard.html", include_str!("templates/dashboard.html")),
        ("error.html", include_str!("templates/error.html")),
    ];
    for (name, source) in templates {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "console template does not compile");
        }
    }
    env
});

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login_submit))
        .route("/logout", post(logout))
        .route("/password", get(password_page).post(password_submit))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .route("/events", get(events_page))
        .route("/events/{event}", get(event_page))
        .route("/events/{event}/participants", get(participants_page))
        .route("/events/{event}/import", get(import_page))
        .route("/events/{event}/gates", get(gates_page))
        .route(
            "/events/{event}/gates/{gate}/enrollment",
            post(enrollment_submit),
        )
        .route("/events/{event}/dashboard", get(dashboard_page))
        .route("/users", get(users_page))
        .route("/api-keys", get(api_keys_page))
}

// ------------------------------------------------------------------ rendering and errors

/// What a console handler returns on failure: the sign-in page for a lost session, the
/// password page while the generated password is unchanged, else an error page.
#[derive(Debug)]
pub enum WebError {
    SignIn,
    ChangePassword,
    Domain(Error),
}

impl From<Error> for WebError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unauthorized(_) => WebError::SignIn,
            e => WebError::Domain(e),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn => Redirect::to("/login").into_response(),
            WebError::ChangePassword => Redirect::to("/password").into_response(),
            WebError::Domain(e) => {
                let message = e.to_string();
                let status = e.into_response().status();
                let body = render(
                    "error.html",
                    context! { title => "Error", status => status.as_u16(), message },
                )
                .unwrap_or_else(|_| Html(message_page(status)));
                (status, body).into_response()
            }
        }
    }
}

fn message_page(status: StatusCode) -> String {
    format!("<!doctype html><title>{status}</title><p>{status}</p>")
}

fn render(name: &str, ctx: minijinja::Value) -> Result<Html<String>, Error> {
    TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| Error::Internal(anyhow::anyhow!("template {name}: {e:#}")))
}

/// A value the API would answer, for a template.
fn json<T: serde::Serialize>(v: &T) -> Result<minijinja::Value, Error> {
    let v = serde_json::to_value(v).map_err(|e| Error::Internal(e.into()))?;
    Ok(minijinja::Value::from(minijinja::value::Serde(v)))
}

/// The signed-in user of a console page (redirects to the sign-in page without one, and to
/// the password page while the generated password is unchanged).
#[derive(Debug, Clone)]
pub struct Console(pub Session);

impl FromRequestParts<AppState> for Console {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let cookie = session::cookie_value(&parts.headers).ok_or(WebError::SignIn)?;
        let s = session::verify(state, &cookie).await?;
        if s.must_change_password {
            return Err(WebError::ChangePassword);
        }
        Ok(Console(s))
    }
}

impl Console {
    fn auth(&self) -> Auth {
        self.0.auth.clone()
    }

    /// What every page's layout needs: who is signed in and the CSRF token.
    fn user(&self) -> minijinja::Value {
        context! {
            email => self.0.auth.email.clone(),
            role => crate::service::users::role_name(self.0.auth.role),
            is_admin => self.0.auth.role >= Some(Role::Admin),
            is_staff => self.0.auth.highest() >= Some(Role::Staff),
            csrf => self.0.csrf.clone(),
        }
    }

    /// [`Console::user`] on an event's pages: what the user may do there is what their role
    /// on that event allows (`event_admin` for the event's settings and gates).
    fn user_on(&self, event_id: Uuid) -> minijinja::Value {
        let a = &self.0.auth;
        context! {
            email => a.email.clone(),
            role => crate::service::users::role_name(a.role_on(event_id)),
            is_admin => a.role >= Some(Role::Admin),
            is_staff => a.can_on(event_id, Role::Staff),
            event_admin => a.can_on(event_id, Role::Admin),
            csrf => self.0.csrf.clone(),
        }
    }
}

/// A form's CSRF field, checked against the session cookie of the request.
fn check_form_csrf(state: &AppState, headers: &HeaderMap, given: &str) -> Result<(), WebError> {
    let cookie = session::cookie_value(headers).ok_or(WebError::SignIn)?;
    if session::csrf_ok(&state.master, &cookie, given) {
        Ok(())
    } else {
        Err(WebError::Domain(Error::Forbidden))
    }
}

// ------------------------------------------------------------------ assets

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
}

// ------------------------------------------------------------------ sign-in

async fn home(headers: HeaderMap) -> Redirect {
    if session::cookie_value(&headers).is_some() {
        Redirect::to("/events")
    } else {
        Redirect::to("/login")
    }
}

async fn login_page() -> Result<Html<String>, WebError> {
    Ok(render(
        "login.html",
        context! { title => "Sign in", error => (), email => "" },
    )?)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    email: String,
    password: String,
}

async fn login_submit(
    State(state): State<AppState>,
    connect: axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let email = form.email.trim().to_lowercase();
    let failed = |message: &str, status: StatusCode| {
        let page = render(
            "login.html",
            context! { title => "Sign in", error => message, email => email.clone() },
        );
        match page {
            Ok(p) => (status, p).into_response(),
            Err(e) => WebError::Domain(e).into_response(),
        }
    };
    // The API's login: the same budgets, the same timing for unknown e-mails.
    let req = api::auth::LoginRequest {
        email: email.clone(),
        password: form.password,
    };
    match api::auth::login(
        State(state.clone()),
        connect,
        crate::http::extract::Json(req),
    )
    .await
    {
        Ok(_) => {}
        Err(Error::TooManyRequests { retry_after }) => {
            return failed(
                &format!("Too many attempts; try again in {retry_after} s."),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        Err(_) => return failed("Wrong e-mail or password.", StatusCode::UNAUTHORIZED),
    }
    let user = match store::users::by_email(&state.db, &email).await {
        Ok(Some(u)) => u,
        _ => return failed("Wrong e-mail or password.", StatusCode::UNAUTHORIZED),
    };
    let user = match store::users::session_user(&state.db, user.id).await {
        Ok(Some(u)) => u,
        _ => return failed("Wrong e-mail or password.", StatusCode::UNAUTHORIZED),
    };
    let cookie = match session::issue(&state.master, &user) {
        Ok(c) => c,
        Err(e) => return WebError::Domain(e).into_response(),
    };
    let next = if user.must_change_password {
        "/password"
    } else {
        "/events"
    };
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(&headers, Some(&cookie)),
        )],
        Redirect::to(next),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, WebError> {
    check_form_csrf(&state, &headers, &form.csrf)?;
    Ok((
        [(header::SET_COOKIE, session::set_cookie(&headers, None))],
        Redirect::to("/login"),
    )
        .into_response())
}

/// The password page works for a session that must change its password (no [`Console`]).
async fn password_session(state: &AppState, headers: &HeaderMap) -> Result<Session, WebError> {
    let cookie = session::cookie_value(headers).ok_or(WebError::SignIn)?;
    Ok(session::verify(state, &cookie).await?)
}

fn password_context(s: &Session, error: Option<(String, String)>) -> minijinja::Value {
    let (field, message) = error.unwrap_or_default();
    context! {
        title => "Change password",
        user => context! { email => s.auth.email.clone(),
            role => crate::service::users::role_name(s.auth.role),
            is_admin => s.auth.role >= Some(Role::Admin), csrf => s.csrf.clone() },
        must_change => s.must_change_password,
        error_field => field,
        error => message,
    }
}

async fn password_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Html<String>, WebError> {
    let s = password_session(&state, &headers).await?;
    Ok(render("password.html", password_context(&s, None))?)
}

#[derive(Debug, Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    current_password: String,
    new_password: String,
    confirm_password: String,
}

async fn password_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<PasswordForm>,
) -> Result<Response, WebError> {
    let s = password_session(&state, &headers).await?;
    check_form_csrf(&state, &headers, &form.csrf)?;
    let again = |field: &str, message: String| -> Result<Response, WebError> {
        let page = render(
            "password.html",
            password_context(&s, Some((field.to_owned(), message))),
        )?;
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    if form.new_password != form.confirm_password {
        return again(
            "confirm_password",
            "The two new passwords differ.".to_owned(),
        );
    }
    match crate::service::users::change_own_password(
        &state.db,
        s.auth.user_id,
        &form.current_password,
        &form.new_password,
    )
    .await
    {
        Ok(()) => {}
        Err(Error::Validation { field, detail, .. }) => {
            return again(field.as_deref().unwrap_or("new_password"), detail);
        }
        Err(e) => return Err(e.into()),
    }
    // The old cookie was bound to the old password hash: issue a new one.
    let user = store::users::session_user(&state.db, s.auth.user_id)
        .await
        .map_err(Error::from)?
        .ok_or(WebError::SignIn)?;
    let cookie = session::issue(&state.master, &user)?;
    Ok((
        [(
            header::SET_COOKIE,
            session::set_cookie(&headers, Some(&cookie)),
        )],
        Redirect::to("/events"),
    )
        .into_response())
}

// ------------------------------------------------------------------ events

#[derive(Debug, Deserialize)]
struct CursorQuery {
    cursor: Option<String>,
}

async fn events_page(
    State(state): State<AppState>,
    c: Console,
    Query(q): Query<CursorQuery>,
) -> Result<Html<String>, WebError> {
    let page = api::events::list(
        State(state),
        c.auth(),
        Query(api::PageParams {
            cursor: q.cursor,
            limit: Some(100),
        }),
    )
    .await?;
    Ok(render(
        "events.html",
        context! { title => "Events", user => c.user(), page => json(&page.0)? },
    )?)
}

async fn load_event(
    state: &AppState,
    c: &Console,
    event_id: Uuid,
) -> Result<minijinja::Value, WebError> {
    let e = api::events::get(State(state.clone()), c.auth(), Path(event_id)).await?;
    Ok(json(&e.0)?)
}

async fn event_page(
    State(state): State<AppState>,
    c: Console,
    Path(event_id): Path<Uuid>,
) -> Result<Html<String>, WebError> {
    let event = load_event(&state, &c, event_id).await?;
    Ok(render(
        "event.html",
        context! { title => "Event", user => c.user_on(event_id), event, section => "event" },
    )?)
}

// ------------------------------------------------------------------ participants

#[derive(Debug, Deserialize)]
struct ParticipantsQuery {
    q: Option<String>,
    ticket_type: Option<String>,
    cursor: Option<String>,
}

async fn participants_page(
    State(state): State<AppState>,
    c: Console,
    Path(event_id): Path<Uuid>,
    Query(q): Query<ParticipantsQuery>,
) -> Result<Html<String>, WebError> {
    let event = load_event(&state, &c, event_id).await?;
    let search = q.q.clone().unwrap_or_default();
    let page = api::participants::list(
        State(state),
        c.auth(),
        Path(event_id),
        Query(api::participants::SearchParams {
            q: q.q,
            ticket_type: q.ticket_type,
            cursor: q.cursor,
            limit: Some(50),
        }),
    )
    .await?;
    Ok(render(
        "participants.html",
        context! { title => "Participants", user => c.user_on(event_id), event, section => "participants",
        page => json(&page.0)?, q => search },
    )?)
}

async fn import_page(
    State(state): State<AppState>,
    c: Console,
    Path(event_id): Path<Uuid>,
) -> Result<Html<String>, WebError> {
    let event = load_event(&state, &c, event_id).await?;
    Ok(render(
        "import.html",
        context! { title => "Import participants", user => c.user_on(event_id), event, section => "import" },
    )?)
}

// ------------------------------------------------------------------ gates

async fn gates_page(
    State(state): State<AppState>,
    c: Console,
    Path(event_id): Path<Uuid>,
) -> Result<Html<String>, WebError> {
    let event = load_event(&state, &c, event_id).await?;
    let gates = api::gates::list(State(state), c.auth(), Path(event_id)).await?;
    Ok(render(
        "gates.html",
        context! { title => "Gates", user => c.user_on(event_id), event, section => "gates",
        gates => json(&gates.0)? },
    )?)
}

async fn enrollment_submit(
    State(state): State<AppState>,
    c: Console,
    headers: HeaderMap,
    Path((event_id, gate_id)): Path<(Uuid, Uuid)>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, WebError> {
    check_form_csrf(&state, &headers, &form.csrf)?;
    let event = load_event(&state, &c, event_id).await?;
    let gate = api::gates::get(State(state.clone()), c.auth(), Path((event_id, gate_id))).await?;
    let gate = json(&gate.0)?;
    let (_, enrollment) = api::gates::enroll(
        State(state),
        c.auth(),
        Path((event_id, gate_id)),
        axum::body::Bytes::new(),
    )
    .await?;
    let code = enrollment.0.code.clone();
    let enrollment = json(&enrollment.0)?;
    let png = crate::service::tickets::render_png(&code).map_err(Error::Internal)?;
    use base64::Engine;
    let qr = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    let page = render(
        "enrollment.html",
        context! { title => "Enrollment code", user => c.user_on(event_id), event, section => "gates",
        gate, enrollment, qr },
    )?;
    // The code is shown once: never cached.
    Ok(([(header::CACHE_CONTROL, "no-store")], page).into_response())
}

// ------------------------------------------------------------------ users

async fn users_page(State(state): State<AppState>, c: Console) -> Result<Html<String>, WebError> {
    let users = api::auth::list_users(State(state.clone()), c.auth()).await?;
    // Grants name their events.
    let events = api::events::list(
        State(state),
        c.auth(),
        Query(api::PageParams {
            cursor: None,
            limit: Some(1000),
        }),
    )
    .await?;
    let event_names: std::collections::BTreeMap<String, String> = events
        .0
        .items
        .iter()
        .map(|e| (e.id.to_string(), e.name.clone()))
        .collect();
    Ok(render(
        "users.html",
        context! { title => "Users", user => c.user(), users => json(&users.0)?,
        me => c.0.auth.user_id.to_string(), event_names },
    )?)
}

// ------------------------------------------------------------------ API keys

async fn api_keys_page(
    State(state): State<AppState>,
    c: Console,
) -> Result<Html<String>, WebError> {
    let keys = api::api_keys::list(State(state.clone()), c.auth()).await?;
    let events = api::events::list(
        State(state),
        c.auth(),
        Query(api::PageParams {
            cursor: None,
            limit: Some(1000),
        }),
    )
    .await?;
    let event_names: std::collections::BTreeMap<String, String> = events
        .0
        .items
        .iter()
        .map(|e| (e.id.to_string(), e.name.clone()))
        .collect();
    // A new key is shown by the script from the answer to its creation, never by this page.
    Ok(render(
        "api_keys.html",
        context! { title => "API keys", user => c.user(), keys => json(&keys.0)?,
        events => json(&events.0)?, event_names },
    )?)
}

// ------------------------------------------------------------------ dashboard

async fn dashboard_page(
    State(state): State<AppState>,
    c: Console,
    Path(event_id): Path<Uuid>,
) -> Result<Html<String>, WebError> {
    let event = load_event(&state, &c, event_id).await?;
    Ok(render(
        "dashboard.html",
        context! { title => "Live dashboard", user => c.user_on(event_id), event, section => "dashboard" },
    )?)
}
