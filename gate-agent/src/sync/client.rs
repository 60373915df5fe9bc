//! HTTP client of the sync protocol (DESIGN §4).

use std::time::Duration;

use reqwest::StatusCode;
use sync_protocol::wire::{
    AGENT_VERSION_HEADER, EnrollRequest, EnrollResponse, LAST_SYNC_HEADER, OUTBOX_DEPTH_HEADER,
    PROTOCOL_HEADER, PROTOCOL_VERSION, PullResponse, PushRequest, PushResponse,
};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The text carries the whole cause chain (a refused TLS certificate is only named deep in
    /// it), so the status and the log show why.
    #[error("server unreachable: {}", error_chain(.0))]
    Network(reqwest::Error),
    #[error("{0}")]
    Config(String),
    #[error(
        "the server no longer accepts this gate's credential (gate deactivated or re-enrolled)"
    )]
    Unauthorized,
    #[error("server answered {status}: {detail}")]
    Server { status: u16, detail: String },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error(transparent)]
    Replica(#[from] crate::replica::ReplicaError),
    #[error("background task failed: {0}")]
    Task(String),
}

impl SyncError {
    /// Worth retrying later (the network or the server may come back).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Network(_) | SyncError::Task(_) => true,
            SyncError::Server { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// `error: cause: deeper cause`, without repeats (some errors print their cause themselves).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The certificates of a venue's own CA (`--ca-cert`, a PEM bundle), trusted besides the
/// system's roots.
pub fn read_ca_certs(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, SyncError> {
    let pem = std::fs::read(path)
        .map_err(|e| SyncError::Config(format!("--ca-cert {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        SyncError::Config(format!(
            "--ca-cert {}: not a PEM certificate bundle: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(SyncError::Config(format!(
            "--ca-cert {}: the file holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Installs the process-wide TLS crypto provider (ring) once; reqwest is built without one so
/// that the whole stack uses a single TLS implementation.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client bound to one server and, after enrollment, one gate credential.
#[derive(Clone)]
pub struct SyncClient {
    http: reqwest::Client,
    base: String,
    credential: Option<String>,
    /// What every request reports to the server: outbox depth and last sync (Unix ms), -1 while
    /// unknown; shared by the clones of this client.
    outbox_depth: std::sync::Arc<std::sync::atomic::AtomicI64>,
    last_sync_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl SyncClient {
    pub fn new(base: &str, credential: Option<String>) -> Result<Self, SyncError> {
        Self::with_ca_cert(base, credential, None)
    }

    /// A client that also trusts the CA certificates in `ca_cert` (PEM), for a server whose
    /// certificate a venue's own CA issued.
    pub fn with_ca_cert(
        base: &str,
        credential: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, SyncError> {
        install_tls_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("usher-gate-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            builder = builder.tls_certs_merge(read_ca_certs(path)?);
        }
        let http = builder.build().map_err(SyncError::Network)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            credential,
            outbox_depth: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            last_sync_at: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1)),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sets what the next requests report: the outbox depth and when the gate last synced.
    pub fn report(&self, outbox_depth: u64, last_sync_at_ms: u64) {
        use std::sync::atomic::Ordering;
        self.outbox_depth.store(
            i64::try_from(outbox_depth).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        self.last_sync_at.store(
            i64::try_from(last_sync_at_ms).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        use std::sync::atomic::Ordering;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .header(AGENT_VERSION_HEADER, env!("CARGO_PKG_VERSION"));
        let depth = self.outbox_depth.load(Ordering::Relaxed);
        if depth >= 0 {
            req = req.header(OUTBOX_DEPTH_HEADER, depth.to_string());
        }
        let last_sync = self.last_sync_at.load(Ordering::Relaxed);
        if last_sync >= 0 {
            req = req.header(LAST_SYNC_HEADER, last_sync.to_string());
        }
        if let Some(c) = &self.credential {
            req = req.bearer_auth(c);
        }
        req
    }

    async fn send<T: serde::de::DeserializeOwned>(
        req: reqwest::RequestBuilder,
    ) -> Result<T, SyncError> {
        let resp = req.send().await.map_err(SyncError::Network)?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(SyncError::Unauthorized);
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("detail")
                        .or_else(|| v.get("title"))
                        .and_then(|d| d.as_str().map(str::to_string))
                })
                .unwrap_or(body);
            return Err(SyncError::Server {
                status: status.as_u16(),
                detail,
            });
        }
        resp.json::<T>().await.map_err(|e| {
            if e.is_decode() {
                SyncError::Protocol(e.to_string())
            } else {
                SyncError::Network(e)
            }
        })
    }

    /// Enrolls with `code`, sending this device's mesh public key (hex).
    pub async fn enroll(
        &self,
        code: &str,
        device_name: &str,
        mesh_public_key: Option<String>,
    ) -> Result<EnrollResponse, SyncError> {
        let req = self
            .request(reqwest::Method::POST, "/sync/v1/enroll")
            .json(&EnrollRequest {
                code: code.trim().to_string(),
                device_name: device_name.to_string(),
                mesh_public_key,
            });
        match Self::send(req).await {
            // For enrollment a 401/403 means the code, not a gate credential, was refused.
            Err(SyncError::Unauthorized) => Err(SyncError::Server {
                status: 401,
                detail: "enrollment code refused (unknown, used or expired)".into(),
            }),
            other => other,
        }
    }

    /// Pulls changes after `after`. With `wait`, the server holds the request up to that many
    /// seconds when nothing is new (long poll).
    pub async fn pull(
        &self,
        after: u64,
        limit: u32,
        wait: Option<u32>,
    ) -> Result<PullResponse, SyncError> {
        let mut query = vec![("after", after.to_string()), ("limit", limit.to_string())];
        if let Some(w) = wait {
            query.push(("wait", w.to_string()));
        }
        let mut req = self
            .request(reqwest::Method::GET, "/sync/v1/changes")
            .query(&query);
        if let Some(w) = wait {
            req = req.timeout(Duration::from_secs(u64::from(w) + 15));
        }
        Self::send(req).await
    }

    /// `GET /healthz` within `timeout`: is the server reachable at all.
    pub async fn health(&self, timeout: Duration) -> Result<(), SyncError> {
        let resp = self
            .http
            .get(format!("{}/healthz", self.base))
            .timeout(timeout)
            .send()
            .await
            .map_err(SyncError::Network)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(SyncError::Server {
                status: resp.status().as_u16(),
                detail: "health check failed".into(),
            })
        }
    }

    pub async fn push(&self, body: &PushRequest) -> Result<PushResponse, SyncError> {
        Self::send(
            self.request(reqwest::Method::POST, "/sync/v1/checkins")
                .json(body),
        )
        .await
    }
}
