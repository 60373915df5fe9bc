#![allow(dead_code)]
//! A webhook receiver for tests: a small axum server on loopback that records every request,
//! can be told to answer 503 (or to be slow), and verifies signatures as the Standard Webhooks
//! specification says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use tokio::net::TcpListener;

/// One request the receiver accepted (answered 2xx).
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Shared {
    got: Mutex<Vec<Received>>,
    failing: AtomicBool,
    refused: AtomicU64,
    delay_ms: AtomicU64,
}

#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Arc<tokio::sync::Notify>,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener)
    }

    /// Starts on `port` (one reserved earlier, while nothing listened on it).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the reserved port");
        Self::serve(listener)
    }

    /// A port nothing listens on (yet).
    pub fn reserve_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind port 0")
            .port()
    }

    fn serve(listener: TcpListener) -> Self {
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let app = axum::Router::new()
            .fallback(axum::routing::any(handle))
            .with_state(shared.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.notified().await })
                .await;
        });
        Self { port, shared, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Answer 503 (and record nothing) while `failing`.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, ms: u64) {
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests answered 503.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.got.lock().expect("lock").clone()
    }

    pub fn stop(&self) {
        self.stop.notify_waiters();
    }

    /// Waits until `n` requests were accepted, or panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let t0 = std::time::Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                t0.elapsed() < within,
                "only {} of {n} webhook deliveries arrived within {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if shared.failing.load(Ordering::SeqCst) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    shared.got.lock().expect("lock").push(Received {
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        content_type: h("content-type"),
        body: body.to_vec(),
    });
    StatusCode::NO_CONTENT
}

/// Verifies a delivery as the specification says: the secret is base64 after `whsec_`; the
/// signed content is `id.timestamp.body`; any of the space-separated `v1,` signatures must
/// match (compared in constant time); the timestamp must be within five minutes of now.
pub fn verify(secret: &str, r: &Received) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|s| B64.decode(s).ok())
    else {
        return false;
    };
    let Ok(ts) = r.timestamp.parse::<i64>() else {
        return false;
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if (now - ts).abs() > 300 {
        return false;
    }
    r.signature.split(' ').any(|sig| {
        let Some(b64) = sig.strip_prefix("v1,") else {
            return false;
        };
        let Ok(expected) = B64.decode(b64) else {
            return false;
        };
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("key");
        mac.update(r.id.as_bytes());
        mac.update(b".");
        mac.update(r.timestamp.as_bytes());
        mac.update(b".");
        mac.update(&r.body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&expected).is_ok()
    })
}

/// Asserts every delivery verifies and that no `webhook-id` arrived twice; returns them by id.
#[track_caller]
pub fn once_each(secret: &str, got: &[Received]) -> HashMap<String, Received> {
    let mut by_id = HashMap::new();
    for r in got {
        assert!(verify(secret, r), "signature does not verify: {r:?}");
        assert_eq!(r.content_type, "application/json");
        assert!(r.id.starts_with("msg_"), "{}", r.id);
        if let Some(first) = by_id.insert(r.id.clone(), r.clone()) {
            panic!(
                "webhook-id {} arrived twice:\n{}\n{}",
                r.id,
                String::from_utf8_lossy(&first.body),
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    by_id
}
