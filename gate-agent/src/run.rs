//! `gate-agent run`: the long-running kiosk process.
//!
//! Wires every input (keyboard-wedge scanner on stdin, the hardware sources when enabled, the
//! operator screen) into one decision thread, prints each committed decision as a JSON line on
//! stdout, serves the operator screen, and runs the sync loops in the background.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hardware::{Payload, Reading};
use serde_json::json;
use sync_protocol::wire::Direction;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::decide::{Gate, ScanRequest, Subject};
use crate::handle::GateHandle;
use crate::replica::Replica;
use crate::sync::{SyncEngine, SyncStatus};
use crate::telemetry;
use crate::ui::{self, UiState};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub data_dir: PathBuf,
    /// A venue CA (PEM) the sync client trusts besides the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// Where the operator screen listens; `None` disables it.
    pub ui_listen: Option<SocketAddr>,
    /// Read a keyboard-wedge scanner (or a pipe) on stdin.
    pub stdin: bool,
    /// The same credential read again within this window is one scan (a badge held under the
    /// camera, a double trigger on the scanner).
    pub dedupe: Duration,
    /// Direction for scanner input; `None` follows the gate's configuration.
    pub direction: Option<Direction>,
    /// Run the background sync.
    pub sync: bool,
    /// Replay a recorded BLE advert log (JSON lines) through the BLE presence filter.
    pub ble_replay: Option<PathBuf>,
    /// Camera index to read QR codes from (feature `camera`).
    pub camera: Option<u32>,
    /// Scan for BLE badges (feature `ble`).
    pub ble: bool,
    /// Serve this gate's log to mesh peers on this (LAN) address.
    pub mesh_listen: Option<SocketAddr>,
    /// Mesh peers besides those named in the gate configurations.
    pub peers: Vec<String>,
    /// How often peers' logs are read.
    pub mesh_interval: Duration,
    /// The operator screen's settings (verdict time, allowed host names).
    pub screen: ui::ScreenOptions,
    /// The badge printer: badges print on each first entry, and from the screen.
    pub printer: Option<crate::printer::PrinterTarget>,
    /// An organizer's ZPL badge template (the built-in one otherwise).
    pub badge_template: Option<String>,
}

/// Suppresses repeats of the same credential within a window.
#[derive(Debug)]
pub struct Dedupe {
    window: Duration,
    seen: HashMap<Vec<u8>, Instant>,
}

impl Dedupe {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
        }
    }

    /// The identity of a reading: the text, or for BLE the version and serial (the slot and MAC
    /// rotate, the badge does not).
    fn key(p: &Payload) -> Vec<u8> {
        match p {
            Payload::Text(t) => {
                let mut k = b"t".to_vec();
                k.extend(t.trim().to_ascii_uppercase().bytes());
                k
            }
            Payload::Ble { service_data, .. } => {
                let mut k = b"b".to_vec();
                k.extend(service_data.iter().take(9));
                k
            }
        }
    }

    /// True when the reading is new (and remembers it).
    pub fn admit(&mut self, p: &Payload, now: Instant) -> bool {
        if self.seen.len() > 4_096 {
            let w = self.window;
            self.seen.retain(|_, t| now.duration_since(*t) < w);
        }
        let key = Self::key(p);
        match self.seen.get(&key) {
            Some(t) if now.duration_since(*t) < self.window => false,
            _ => {
                self.seen.insert(key, now);
                true
            }
        }
    }
}

/// Feeds readings from all sources into the decision thread, dropping repeats within the
/// dedupe window. Returns when every source has stopped, or at `shutdown`: dropping the
/// receiver then is what tells the sources to stop.
pub async fn intake(
    mut rx: mpsc::Receiver<Reading>,
    gate: GateHandle,
    dedupe: Duration,
    direction: Option<Direction>,
    shutdown: CancellationToken,
) {
    let mut dd = Dedupe::new(dedupe);
    loop {
        let reading = tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.recv() => r,
        };
        let Some(reading) = reading else { return };
        if !dd.admit(&reading.payload, Instant::now()) {
            tracing::debug!(source = %reading.source, "repeat within the dedupe window ignored");
            continue;
        }
        let subject = match reading.payload {
            Payload::Text(t) => Subject::Text(t),
            Payload::Ble { service_data, .. } => Subject::Ble(service_data),
        };
        let req = ScanRequest {
            subject,
            method: None,
            direction,
            operator_override: None,
        };
        if let Err(e) = gate.scan(req).await {
            tracing::warn!(source = %reading.source, error = %e, "no decision");
            let line = json!({"error": e.to_string(), "source": reading.source});
            println!("{line}");
        }
    }
}

/// Prints every committed decision as one JSON line. The receiver is subscribed before any
/// input starts, so no decision goes unprinted.
async fn printer(
    mut rx: tokio::sync::broadcast::Receiver<crate::decide::ScanOutcome>,
    shutdown: CancellationToken,
) {
    let mut out = tokio::io::stdout();
    loop {
        let o = tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.recv() => r,
        };
        match o {
            Ok(o) => {
                let mut line = serde_json::to_vec(&o).unwrap_or_default();
                line.push(b'\n');
                if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "decision log lagged");
            }
            Err(_) => return,
        }
    }
}

/// Runs a credential source as one of the agent's tasks; it stops when the intake drops its
/// receiver.
fn start_source<S: hardware::CredentialSource>(
    tasks: &mut JoinSet<()>,
    source: S,
    tx: &mpsc::Sender<Reading>,
) {
    let tx = tx.clone();
    tasks.spawn(async move {
        let _ = hardware::run_source(source, tx).await;
    });
}

/// Starts the camera and BLE sources compiled into this build.
#[allow(clippy::unused_async)]
async fn start_devices(
    opts: &RunOptions,
    beacon: sync_protocol::wire::BeaconConfig,
    tx: &mpsc::Sender<Reading>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    #[cfg(feature = "camera")]
    if let Some(index) = opts.camera {
        let camera = hardware::camera::NokhwaCamera::open(hardware::camera::CameraSettings {
            index,
            ..Default::default()
        })?;
        start_source(
            tasks,
            hardware::CameraSource::with_qr(camera, format!("camera:{index}")),
            tx,
        );
    }
    #[cfg(not(feature = "camera"))]
    if opts.camera.is_some() {
        anyhow::bail!("this gate-agent was built without camera support (cargo feature `camera`)");
    }
    #[cfg(feature = "ble")]
    if opts.ble {
        let scanner = hardware::ble::BtleplugScanner::start(beacon.service_uuid).await?;
        start_source(tasks, hardware::BleSource::new("ble", scanner, beacon), tx);
    }
    #[cfg(not(feature = "ble"))]
    if opts.ble {
        let _ = (beacon, tx, tasks);
        anyhow::bail!("this gate-agent was built without Bluetooth support (cargo feature `ble`)");
    }
    Ok(())
}

/// Folds the WAL back into the database every few seconds, off the decision path (and drains
/// the metrics' histogram samples).
async fn checkpointer(replica: Arc<Mutex<Replica>>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let r = replica.clone();
        let done = tokio::task::spawn_blocking(move || match r.lock() {
            Ok(r) => r.checkpoint().map_err(|e| e.to_string()),
            Err(_) => Err("replica lock poisoned".to_string()),
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
        telemetry::upkeep();
    }
}

/// How long the background tasks get to stop after `shutdown` before they are aborted.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the data directory's lock file (`agent.lock`, an exclusive advisory lock the OS drops
/// when the process ends, however it ends): two agents on one replica would log scans with the
/// same seqs and decide against each other's half-written state.
pub fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another gate agent is already running on {} (it holds {}); stop it first",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
}

/// Runs the kiosk until `shutdown`, then stops every task it started: the sync loops, the mesh,
/// the operator screen and its streams, the credential sources and, last, the decision thread
/// (after the decisions it accepted). Each gets [`STOP_TIMEOUT`].
pub async fn run(opts: RunOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    telemetry::install();
    // Held until this function returns: a second agent on the same data directory stops here.
    let _lock = lock_data_dir(&opts.data_dir)?;
    let offset = crate::decide::clock_offset_ms();
    if offset != 0 {
        tracing::warn!(
            offset_ms = offset,
            "{} is set: this gate's clock runs off the machine's on purpose",
            crate::decide::CLOCK_OFFSET_ENV
        );
    }
    let path = opts.data_dir.join("replica.db");
    let gate = Gate::new(Replica::open(&path)?)?;
    let enrollment = gate.enrollment().clone();
    let kick = Arc::new(Notify::new());
    let handle = GateHandle::spawn(gate, kick.clone())?;
    let mut tasks = JoinSet::new();
    let started = start(
        &opts,
        &path,
        &enrollment,
        &handle,
        kick,
        &shutdown,
        &mut tasks,
    )
    .await;
    if started.is_ok() {
        tracing::info!(gate_id = %enrollment.gate_id, server = %enrollment.server_url, "gate agent running");
        shutdown.cancelled().await;
    }
    // A failed start stops what did start, the same way.
    shutdown.cancel();
    stop(tasks, &handle).await;
    started
}

/// Starts every task of the agent into `tasks`.
async fn start(
    opts: &RunOptions,
    path: &std::path::Path,
    enrollment: &crate::replica::Enrollment,
    handle: &GateHandle,
    kick: Arc<Notify>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let status = Arc::new(SyncStatus::default());
    tasks.spawn(printer(handle.subscribe(), shutdown.clone()));

    if opts.sync {
        let engine = Arc::new(
            SyncEngine::with_ca_cert(Replica::open(path)?, opts.ca_cert.as_deref())?
                .with_status(status.clone()),
        );
        tasks.spawn(engine.run(kick, shutdown.clone()));
    }

    let (tx, rx) = mpsc::channel::<Reading>(256);
    tasks.spawn(intake(
        rx,
        handle.clone(),
        opts.dedupe,
        opts.direction,
        shutdown.clone(),
    ));
    let beacon = {
        let r = Replica::open(path)?;
        r.gate_config(enrollment.gate_id)?
            .and_then(|c| c.beacon_config)
            .unwrap_or_default()
    };
    if let Some(log) = &opts.ble_replay {
        let replay = hardware::AdvertReplay::open(log, 1.0).await?;
        start_source(
            tasks,
            hardware::BleSource::new("ble:replay", replay, beacon),
            &tx,
        );
    }
    start_devices(opts, beacon, &tx, tasks).await?;
    if opts.stdin {
        start_source(tasks, hardware::WedgeSource::stdin()?, &tx);
    }
    drop(tx);

    // A side connection for the screen's status reads and for WAL checkpoints, which the
    // decision connection never runs itself.
    let side = Arc::new(Mutex::new(Replica::open(path)?));
    tasks.spawn(checkpointer(side.clone(), shutdown.clone()));

    // The venue mesh: read peers' logs (from the gate configs or --peer), serve ours if asked.
    let mesh_replica = Arc::new(Mutex::new(Replica::open(path)?));
    tasks.spawn(crate::mesh::run_puller(
        mesh_replica.clone(),
        enrollment.gate_id,
        opts.peers.clone(),
        opts.mesh_interval,
        shutdown.clone(),
    ));
    if let Some(addr) = opts.mesh_listen {
        let listener = crate::mesh::bind(addr).await?;
        let (r, g, sd) = (mesh_replica, enrollment.gate_id, shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::mesh::serve(listener, r, g, sd).await {
                tracing::error!(error = %e, "mesh listener stopped");
            }
        });
    }

    let badges = match opts.printer.clone() {
        Some(target) => Some(Arc::new(crate::printer::Badges::new(
            target,
            opts.badge_template.clone(),
            Arc::new(Mutex::new(Replica::open(path)?)),
        ))),
        None => None,
    };
    if let Some(b) = &badges {
        tracing::info!(printer = %b.target, "badges print on first entry");
        tasks.spawn(crate::printer::print_on_admit(
            b.clone(),
            handle.subscribe(),
            shutdown.clone(),
        ));
    }

    if let Some(addr) = opts.ui_listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut state = UiState::with_options(
            handle.clone(),
            side,
            status,
            ui::ScreenOptions {
                announce_pairing: true,
                ..opts.screen.clone()
            },
        );
        if let Some(b) = badges {
            state = state.with_badges(b);
        }
        let sd = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = ui::serve(listener, state, sd).await {
                tracing::error!(error = %e, "operator screen stopped");
            }
        });
    }
    Ok(())
}

/// Waits for every task to notice the cancelled token (aborting those still running after
/// [`STOP_TIMEOUT`]), then stops the decision thread once it has decided what it accepted.
async fn stop(mut tasks: JoinSet<()>, handle: &GateHandle) {
    let t0 = Instant::now();
    let drained = tokio::time::timeout(STOP_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            still_running = tasks.len(),
            "background tasks did not stop in time; aborting them"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    if tokio::time::timeout(STOP_TIMEOUT, handle.stop())
        .await
        .is_err()
    {
        tracing::warn!("the decision thread did not stop in time");
    }
    tracing::info!(
        took_ms = t0.elapsed().as_millis() as u64,
        "gate agent stopped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_suppresses_repeats_within_the_window_only() {
        let mut d = Dedupe::new(Duration::from_secs(3));
        let t0 = Instant::now();
        let a = Payload::Text("U1:ABC".into());
        assert!(d.admit(&a, t0));
        assert!(!d.admit(
            &Payload::Text(" u1:abc ".into()),
            t0 + Duration::from_secs(1)
        ));
        assert!(d.admit(&Payload::Text("U1:ABD".into()), t0 + Duration::from_secs(1)));
        assert!(d.admit(&a, t0 + Duration::from_secs(4)));
        // BLE: a new slot of the same badge is the same badge.
        let mut s1 = vec![1u8; 21];
        let b1 = Payload::Ble {
            service_data: s1.clone(),
            rssi: -50,
        };
        s1[12] = 9;
        let b2 = Payload::Ble {
            service_data: s1,
            rssi: -50,
        };
        assert!(d.admit(&b1, t0));
        assert!(!d.admit(&b2, t0 + Duration::from_secs(2)));
    }
}
