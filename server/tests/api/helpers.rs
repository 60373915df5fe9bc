//! The test fixture: a real server on a random port, over a fresh database per test.
//!
//! SQLite tests use a temporary directory. PostgreSQL tests create a database named by UUID
//! through the admin connection of `server::testing::admin_url` (`USHER_TEST_DATABASE_URL`, else
//! the local server, else a private cluster) and drop it when the [`TestApp`] is dropped, even
//! after a failed assertion. They are never skipped: without PostgreSQL they fail and say what to
//! install.

use std::sync::Once;

use reqwest::StatusCode;
use serde_json::{Value, json};
use server::Settings;
use server::domain::auth::{Actor, Role};
use server::testing::PgDatabase;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `mod NAME { sqlite, postgres }` tests that run `async fn NAME(app: TestApp)`
/// against each backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await).await;
                }
            }
        )*
    };
}

pub const ADMIN_EMAIL: &str = "admin@localhost";
pub const STAFF_EMAIL: &str = "staff@example.org";
pub const VIEWER_EMAIL: &str = "viewer@example.org";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: server::Db,
    /// The server's master key (to read what it stores sealed).
    pub master: server::domain::crypto::MasterKey,
    pub admin: String,
    pub staff: String,
    pub viewer: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Dropped after the server is told to stop (fields drop after `Drop::drop`).
    _pg: Option<PgDatabase>,
    _dir: tempfile::TempDir,
}

/// One HTTP response, body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Resp {
    /// Asserts an RFC 9457 problem with this status (and `field`, if given).
    #[track_caller]
    pub fn assert_problem(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.body["status"], json!(status));
        assert!(self.body["type"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
        if let Some(field) = field {
            assert_eq!(self.body["field"], json!(field), "body: {}", self.body);
        }
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        &self.body
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

static INIT: Once = Once::new();

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// [`spawn_app`] with settings adjusted by `configure` (e.g. short webhook retry timings).
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    INIT.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        server::telemetry::init_for_tests();
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            PgDatabase::create("usher_test")
                .await
                .expect("a fresh PostgreSQL database"),
        ),
    };
    let mut settings = Settings::for_test(
        dir.path().to_path_buf(),
        pg.as_ref().map(|db| db.url.clone()),
    );
    configure(&mut settings);
    let app = server::build(settings).await.expect("server::build");
    let base = format!("http://127.0.0.1:{}", app.port());
    let db = app.db().clone();
    let master = app.state().master.clone();
    let admin_password = app
        .initial_admin_password
        .clone()
        .expect("first start creates an admin");
    let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    for (email, role) in [(STAFF_EMAIL, Role::Staff), (VIEWER_EMAIL, Role::Viewer)] {
        server::service::users::create(&db, &Actor::system(), email, PASSWORD, role)
            .await
            .expect("create user");
    }
    let client = reqwest::Client::builder().build().expect("client");
    let mut app = TestApp {
        base,
        client,
        db,
        master,
        admin: String::new(),
        staff: String::new(),
        viewer: String::new(),
        shutdown: Some(shutdown),
        _pg: pg,
        _dir: dir,
    };
    app.admin = app.login(ADMIN_EMAIL, &admin_password).await;
    app.staff = app.login(STAFF_EMAIL, PASSWORD).await;
    app.viewer = app.login(VIEWER_EMAIL, PASSWORD).await;
    app
}

impl TestApp {
    pub fn backend(&self) -> Backend {
        match self.db {
            server::Db::Postgres(_) => Backend::Postgres,
            server::Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The server's data directory (the SQLite file and the master key on SQLite).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The PostgreSQL database's URL, on PostgreSQL.
    pub fn pg_url(&self) -> Option<&str> {
        self._pg.as_ref().map(|p| p.url.as_str())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self
            .post(
                None,
                "/api/v1/auth/login",
                json!({"email": email, "password": password}),
            )
            .await;
        let body = r.assert_status(200);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 900);
        body["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = req.send().await.expect("request failed");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = resp.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            content_type,
            body,
            bytes,
        }
    }

    fn auth(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get(&self, token: Option<&str>, path: &str) -> Resp {
        self.send(Self::auth(self.client.get(self.url(path)), token))
            .await
    }

    pub async fn post(&self, token: Option<&str>, path: &str, body: Value) -> Resp {
        self.send(Self::auth(
            self.client.post(self.url(path)).json(&body),
            token,
        ))
        .await
    }

    /// POST without a body.
    pub async fn post_empty(&self, token: Option<&str>, path: &str) -> Resp {
        self.send(Self::auth(self.client.post(self.url(path)), token))
            .await
    }

    pub async fn patch(&self, token: Option<&str>, path: &str, body: Value) -> Resp {
        self.send(Self::auth(
            self.client.patch(self.url(path)).json(&body),
            token,
        ))
        .await
    }

    pub async fn delete(&self, token: Option<&str>, path: &str) -> Resp {
        self.send(Self::auth(self.client.delete(self.url(path)), token))
            .await
    }

    pub async fn post_csv(
        &self,
        token: Option<&str>,
        path: &str,
        csv: impl Into<reqwest::Body>,
    ) -> Resp {
        self.send(Self::auth(
            self.client
                .post(self.url(path))
                .header("content-type", "text/csv")
                .body(csv),
            token,
        ))
        .await
    }

    /// Creates an event as admin and returns its JSON.
    pub async fn create_event(&self, name: &str) -> Value {
        let r = self
            .post(
                Some(&self.admin),
                "/api/v1/events",
                json!({"name": name, "starts_at": "2026-12-01T09:00:00Z",
                       "ends_at": "2026-12-01T18:00:00Z", "venue": "Hall A"}),
            )
            .await;
        r.assert_status(201).clone()
    }

    /// Creates an event (as admin) with this status, running from an hour ago to eight hours from
    /// now: its tickets are inside their window on the server's own clock, whatever day the
    /// tests run. Tests that redeem online need it; [`TestApp::create_event`] has fixed dates.
    pub async fn create_event_running_now(&self, name: &str, status: &str) -> Value {
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .expect("an RFC 3339 date")
        };
        let r = self
            .post(
                Some(&self.admin),
                "/api/v1/events",
                json!({"name": name, "status": status,
                       "starts_at": fmt(now - time::Duration::hours(1)),
                       "ends_at": fmt(now + time::Duration::hours(8)), "venue": "Hall"}),
            )
            .await;
        r.assert_status(201).clone()
    }

    /// Creates a participant (with a ticket unless `issue_ticket` is false) as staff.
    pub async fn create_participant(&self, event: &str, body: Value) -> Value {
        let r = self
            .post(
                Some(&self.staff),
                &format!("/api/v1/events/{event}/participants"),
                body,
            )
            .await;
        r.assert_status(201).clone()
    }

    /// The change log of an event after `cursor`, read straight from the store.
    pub async fn changes(&self, event: &str, after: u64) -> Vec<sync_protocol::wire::Change> {
        let id = Uuid::parse_str(event).expect("event id");
        server::store::changes::list_after(&self.db, self.master.personal(), id, after, 100_000)
            .await
            .expect("list changes")
    }
}

/// Path of a CSV fixture in the repository's `testdata/csv/`.
pub fn csv_path(name: &str) -> String {
    format!("{}/../testdata/csv/{name}", env!("CARGO_MANIFEST_DIR"))
}
