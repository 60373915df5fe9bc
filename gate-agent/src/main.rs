//! `gate-agent` command line (DESIGN §6a).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use gate_agent::decide::{Gate, ScanRequest};
use gate_agent::replica::{Enrollment, Replica};
use gate_agent::run::RunOptions;
use gate_agent::sync::{SyncClient, SyncEngine};
use serde_json::json;
use sync_protocol::wire::{Decision, Direction};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "gate-agent",
    version,
    about = "Usher gate agent: offline ticket check-in"
)]
struct Cli {
    /// Where the replica and outbox live.
    #[arg(
        long,
        global = true,
        env = "USHER_GATE_DIR",
        default_value = "./usher-gate"
    )]
    data_dir: PathBuf,
    /// Trust this CA (a PEM file, one or more certificates) for the server's HTTPS certificate
    /// besides the system's roots: a venue that runs its own CA.
    #[arg(long, global = true, env = "USHER_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dir {
    In,
    Out,
}

impl From<Dir> for Direction {
    fn from(d: Dir) -> Self {
        match d {
            Dir::In => Direction::In,
            Dir::Out => Direction::Out,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Exchange a one-time enrollment code for this gate's credential and pull the replica.
    Enroll {
        /// The server's base URL, e.g. http://10.0.0.2:8080
        #[arg(long, env = "USHER_SERVER")]
        server: String,
        /// The code the organizer created for this gate.
        #[arg(long)]
        code: String,
        /// How this device appears to organizers (defaults to the host name).
        #[arg(long)]
        device_name: Option<String>,
    },
    /// Run the kiosk: scanner on stdin, operator screen, background sync.
    Run {
        /// Operator screen address (loopback by default: the kiosk browser runs on this device).
        #[arg(long, env = "USHER_UI_LISTEN", default_value = "127.0.0.1:7878")]
        ui_listen: SocketAddr,
        /// Do not serve the operator screen.
        #[arg(long)]
        no_ui: bool,
        /// Do not read a keyboard-wedge scanner on stdin.
        #[arg(long)]
        no_stdin: bool,
        /// The same credential read again within this many ms counts once.
        #[arg(long, env = "USHER_DEDUPE_MS", default_value_t = 3000)]
        dedupe_ms: u64,
        /// Direction of scanner input (default: the gate's configured direction).
        #[arg(long, value_enum)]
        direction: Option<Dir>,
        /// Decide offline only; never contact the server.
        #[arg(long)]
        no_sync: bool,
        /// Replay a recorded BLE advert log (JSON lines) through the presence filter.
        #[arg(long, value_name = "FILE")]
        ble_replay: Option<PathBuf>,
        /// Read QR codes from this camera (/dev/videoN; needs the `camera` build feature).
        #[arg(long, value_name = "INDEX")]
        camera: Option<u32>,
        /// Scan for BLE badges (needs the `ble` build feature).
        #[arg(long)]
        ble: bool,
        /// Serve this gate's scan log to the other gates on the venue LAN (e.g. 0.0.0.0:7879).
        #[arg(long, env = "USHER_MESH_LISTEN")]
        mesh_listen: Option<SocketAddr>,
        /// A mesh peer (HOST:PORT) besides those set in the gate configurations; repeatable.
        #[arg(long = "peer", value_name = "HOST:PORT")]
        peers: Vec<String>,
        /// How often peers' logs are read, in ms.
        #[arg(long, default_value_t = 500)]
        mesh_interval_ms: u64,
        /// Seconds a verdict stays on the operator screen before it returns to READY.
        #[arg(long, env = "USHER_VERDICT_SECONDS", default_value_t = 4.0)]
        verdict_seconds: f64,
        /// A host name the operator screen answers to besides localhost and IP addresses
        /// (requests naming any other host are refused: DNS rebinding); repeatable.
        #[arg(long = "ui-host", value_name = "NAME")]
        ui_hosts: Vec<String>,
        /// Badge printer: zpl://HOST:PORT (ZPL over raw TCP) or lp:QUEUE (PDF through CUPS).
        #[arg(long, env = "USHER_PRINTER", value_name = "TARGET")]
        printer: Option<gate_agent::printer::PrinterTarget>,
        /// A ZPL badge template with {name}, {organization}, {ticket_type}, {credential}.
        #[arg(long, value_name = "FILE")]
        badge_template: Option<PathBuf>,
        /// Self check-in kiosk: an attendee-facing screen (no search, override or undo) that
        /// returns to its start screen after each answer.
        #[arg(long, env = "USHER_KIOSK")]
        kiosk: bool,
    },
    /// Decode QR codes in image files and decide each (photos of tickets that failed to scan).
    /// Prints one JSON line per file: {"file","decoded","decision","reason"}.
    ScanImage {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum)]
        direction: Option<Dir>,
    },
    /// Print the BLE advertisement an attendee's badge or phone sends for a ticket right now
    /// (the attendee-side reference implementation of the BLE credential).
    BleAdvert {
        /// Ticket serial.
        #[arg(long)]
        ticket: u64,
        /// The ticket's 32-byte BLE key, hex (as issued to the attendee's app).
        #[arg(long, value_name = "HEX", conflicts_with = "event_secret")]
        ble_key: Option<String>,
        /// Or derive the key from the event's BLE secret, hex (organizer tools, demos).
        #[arg(long, value_name = "HEX")]
        event_secret: Option<String>,
        /// Unix time to compute the slot for (default: now).
        #[arg(long)]
        at: Option<u64>,
        /// 16-bit service UUID (default 0xFEAA).
        #[arg(long, value_parser = parse_u16)]
        service_uuid: Option<u16>,
    },
    /// Print this gate's state as JSON.
    Status,
    /// Decide one credential (for scripts). Prints one JSON line; exit 0 admit, 1 reject.
    Scan {
        credential: String,
        #[arg(long, value_enum)]
        direction: Option<Dir>,
        /// Supervisor override: admit despite a rejection, with this reason.
        #[arg(long = "override", value_name = "REASON")]
        operator_override: Option<String>,
    },
    /// Push the outbox and pull changes.
    Sync {
        /// One round, then exit (the only mode: `run` syncs continuously).
        #[arg(long, default_value_t = true)]
        once: bool,
    },
    /// Print the decoded fields of a credential as JSON; with --public-key, check the signature.
    /// Exit code: 0 valid (or well-formed, without a key), 1 signature invalid, 2 malformed.
    Inspect {
        /// A `U1:` ticket, a short code, or `ble:HEX` service data.
        credential: String,
        /// The event's ed25519 public key, 64 hex characters.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
    },
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn replica_path(dir: &Path) -> PathBuf {
    dir.join("replica.db")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect {
            credential,
            public_key,
        } => match gate_agent::inspect::inspect(&credential, public_key.as_deref()) {
            Ok(result) => {
                println!("{}", result.report);
                ExitCode::from(result.exit_code)
            }
            Err(usage) => {
                eprintln!("gate-agent inspect: {usage}");
                ExitCode::from(2)
            }
        },
        Command::Scan {
            credential,
            direction,
            operator_override,
        } => {
            init_tracing("warn");
            match scan(&cli.data_dir, credential, direction, operator_override) {
                Ok(code) => code,
                Err(e) => fail("scan", &e),
            }
        }
        Command::ScanImage { files, direction } => {
            init_tracing("warn");
            match scan_images(&cli.data_dir, &files, direction) {
                Ok(code) => code,
                Err(e) => fail("scan-image", &e),
            }
        }
        Command::BleAdvert {
            ticket,
            ble_key,
            event_secret,
            at,
            service_uuid,
        } => match ble_advert(ticket, ble_key, event_secret, at, service_uuid) {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => fail("ble-advert", &e),
        },
        Command::Status => {
            init_tracing("warn");
            let r = Replica::open(&replica_path(&cli.data_dir))
                .and_then(|r| gate_agent::status::status(&r));
            match r {
                Ok(s) => {
                    println!("{}", serde_json::to_string(&s).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => fail("status", &e.into()),
            }
        }
        Command::Enroll {
            server,
            code,
            device_name,
        } => {
            init_tracing("warn");
            match runtime().and_then(|rt| {
                rt.block_on(enroll(
                    &cli.data_dir,
                    cli.ca_cert.as_deref(),
                    &server,
                    &code,
                    device_name,
                ))
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("enroll", &e),
            }
        }
        Command::Sync { once: _ } => {
            init_tracing("warn");
            match runtime()
                .and_then(|rt| rt.block_on(sync_once(&cli.data_dir, cli.ca_cert.as_deref())))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("sync", &e),
            }
        }
        Command::Run {
            ui_listen,
            no_ui,
            no_stdin,
            dedupe_ms,
            direction,
            no_sync,
            ble_replay,
            camera,
            ble,
            mesh_listen,
            peers,
            mesh_interval_ms,
            verdict_seconds,
            ui_hosts,
            printer,
            badge_template,
            kiosk,
        } => {
            let badge_template = match badge_template.map(std::fs::read_to_string).transpose() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("gate-agent run: --badge-template: {e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing("info");
            let opts = RunOptions {
                data_dir: cli.data_dir,
                ca_cert: cli.ca_cert,
                ui_listen: (!no_ui).then_some(ui_listen),
                stdin: !no_stdin,
                dedupe: Duration::from_millis(dedupe_ms),
                direction: direction.map(Into::into),
                sync: !no_sync,
                ble_replay,
                camera,
                ble,
                mesh_listen,
                peers,
                mesh_interval: Duration::from_millis(mesh_interval_ms.max(50)),
                screen: gate_agent::ui::ScreenOptions {
                    verdict: Duration::from_secs_f64(if verdict_seconds.is_finite() {
                        verdict_seconds.clamp(0.5, 120.0)
                    } else {
                        4.0
                    }),
                    allowed_hosts: ui_hosts,
                    announce_pairing: true,
                    kiosk,
                },
                printer,
                badge_template,
            };
            let r = runtime().and_then(|rt| {
                let r = rt.block_on(async {
                    let shutdown = CancellationToken::new();
                    let sd = shutdown.clone();
                    tokio::spawn(async move {
                        wait_for_signal().await;
                        sd.cancel();
                    });
                    gate_agent::run::run(opts, shutdown).await
                });
                // Every task has stopped by now; a blocking call still running (a read on a
                // device that never answers) must not keep the process from exiting.
                rt.shutdown_timeout(Duration::from_secs(1));
                r
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("run", &e),
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn fail(cmd: &str, e: &anyhow::Error) -> ExitCode {
    eprintln!("gate-agent {cmd}: {e:#}");
    ExitCode::from(2)
}

fn scan(
    dir: &Path,
    credential: String,
    direction: Option<Dir>,
    operator_override: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut gate = Gate::new(Replica::open(&replica_path(dir))?)?;
    let o = gate.scan(&ScanRequest {
        direction: direction.map(Into::into),
        operator_override,
        ..ScanRequest::text(credential)
    })?;
    println!(
        "{}",
        json!({"decision": o.decision, "reason": o.reason, "ticket_serial": o.ticket_serial,
            "name": o.name, "attention": o.attention, "id": o.id, "seq": o.seq,
            "direction": o.direction, "operator_override": o.operator_override})
    );
    Ok(match o.decision {
        Decision::Admit => ExitCode::SUCCESS,
        Decision::Reject => ExitCode::from(1),
    })
}

async fn enroll(
    dir: &Path,
    ca_cert: Option<&Path>,
    server: &str,
    code: &str,
    device_name: Option<String>,
) -> anyhow::Result<()> {
    let device = device_name
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gate".to_string());
    let path = replica_path(dir);
    let mut replica = Replica::open(&path)?;
    if let Some(old) = replica.enrollment()? {
        let depth = replica.outbox_depth()?;
        if depth > 0 {
            anyhow::bail!(
                "this gate (gate {}) still has {depth} check-ins that did not reach the server; \
                 run `gate-agent sync --once` before enrolling again",
                old.gate_id
            );
        }
    }
    let client = SyncClient::with_ca_cert(server, None, ca_cert)?;
    let resp = client
        .enroll(code, &device, Some(replica.mesh_public_key_hex()))
        .await?;
    replica.store_enrollment(&Enrollment {
        server_url: client.base().to_string(),
        gate_id: resp.gate_id,
        event_id: resp.event_id,
        credential: resp.credential,
    })?;
    replica.set_seq_start(resp.next_seq)?;
    replica.observe_clock(resp.server_time, gate_agent::decide::wall_ms())?;
    drop(replica);
    let engine = SyncEngine::with_ca_cert(Replica::open(&path)?, ca_cert)?;
    let stats = engine.sync_once().await?;
    println!(
        "{}",
        json!({"gate_id": resp.gate_id, "event_id": resp.event_id,
            "replica_cursor": stats.replica_cursor, "replica_changes": stats.pulled,
            "data_dir": dir})
    );
    Ok(())
}

async fn sync_once(dir: &Path, ca_cert: Option<&Path>) -> anyhow::Result<()> {
    let engine = SyncEngine::with_ca_cert(Replica::open(&replica_path(dir))?, ca_cert)?;
    let stats = engine.sync_once().await?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|e| format!("not a 16-bit number: {e}"))
}

fn scan_images(dir: &Path, files: &[PathBuf], direction: Option<Dir>) -> anyhow::Result<ExitCode> {
    let path = replica_path(dir);
    // Decoding needs no enrollment; deciding does.
    let mut gate = if path.exists() {
        let r = Replica::open(&path)?;
        if r.enrollment()?.is_some() {
            Some(Gate::new(r)?)
        } else {
            None
        }
    } else {
        None
    };
    let mut all_good = true;
    for file in files {
        let decoded = hardware::decode_image_file(file)
            .with_context(|| format!("reading {}", file.display()))?;
        let (decision, reason) = match (&decoded, gate.as_mut()) {
            (Some(text), Some(g)) => {
                let o = g.scan(&ScanRequest {
                    direction: direction.map(Into::into),
                    method: Some(sync_protocol::wire::Method::Qr),
                    ..ScanRequest::text(text.as_str())
                })?;
                (Some(o.decision), o.reason)
            }
            _ => (None, None),
        };
        all_good &= decoded.is_some() && decision != Some(Decision::Reject);
        println!(
            "{}",
            json!({"file": file, "decoded": decoded, "decision": decision, "reason": reason})
        );
    }
    Ok(if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ble_advert(
    serial: u64,
    ble_key: Option<String>,
    event_secret: Option<String>,
    at: Option<u64>,
    service_uuid: Option<u16>,
) -> anyhow::Result<serde_json::Value> {
    use sync_protocol::ble::{BleCredential, BleKey, DEFAULT_SERVICE_UUID, SLOT_SECONDS, slot_at};
    let key = match (ble_key, event_secret) {
        (Some(k), None) => {
            let bytes = hex::decode(k.trim()).context("--ble-key is not hex")?;
            let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                anyhow::anyhow!("--ble-key must be 32 bytes, got {}", b.len())
            })?;
            BleKey(arr)
        }
        (None, Some(secret)) => {
            let bytes = hex::decode(secret.trim()).context("--event-secret is not hex")?;
            BleKey::derive(&bytes, serial)
        }
        _ => anyhow::bail!("give --ble-key or --event-secret"),
    };
    let now = at.unwrap_or_else(|| gate_agent::decide::wall_ms() / 1000);
    let slot = slot_at(now);
    let payload = BleCredential::issue(&key, serial, slot).encode();
    let uuid = service_uuid.unwrap_or(DEFAULT_SERVICE_UUID);
    // A legacy advert: Flags (LE General Discoverable, BR/EDR not supported), then Service Data
    // for the 16-bit UUID (little-endian) carrying the 21-byte credential: 28 of 31 bytes.
    let mut advert = vec![0x02, 0x01, 0x06];
    advert.push((1 + 2 + payload.len()) as u8);
    advert.push(0x16);
    advert.extend_from_slice(&uuid.to_le_bytes());
    advert.extend_from_slice(&payload);
    let slot_start = u64::from(slot) * SLOT_SECONDS;
    Ok(json!({
        "serial": serial,
        "slot": slot,
        "valid_from_unix": slot_start,
        "valid_until_unix": slot_start + SLOT_SECONDS - 1,
        "service_uuid": format!("0x{uuid:04X}"),
        "service_data_hex": hex::encode(payload),
        "advert_hex": hex::encode(&advert),
        "advert_len": advert.len(),
    }))
}
