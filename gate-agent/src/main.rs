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
            match runtime()
                .and_then(|rt| rt.block_on(enroll(&cli.data_dir, &server, &code, device_name)))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("enroll", &e),
            }
        }
        Command::Sync { once: _ } => {
            init_tracing("warn");
            match runtime().and_then(|rt| rt.block_on(sync_once(&cli.data_dir))) {
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
        } => {
            init_tracing("info");
            let opts = RunOptions {
                data_dir: cli.data_dir,
                ui_listen: (!no_ui).then_some(ui_listen),
                stdin: !no_stdin,
                dedupe: Duration::from_millis(dedupe_ms),
                direction: direction.map(Into::into),
                sync: !no_sync,
            };
            let r = runtime().and_then(|rt| {
                rt.block_on(async {
                    let shutdown = CancellationToken::new();
                    let sd = shutdown.clone();
                    tokio::spawn(async move {
                        wait_for_signal().await;
                        sd.cancel();
                    });
                    gate_agent::run::run(opts, shutdown).await
                })
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
    let client = SyncClient::new(server, None)?;
    let resp = client.enroll(code, &device).await?;
    replica.store_enrollment(&Enrollment {
        server_url: client.base().to_string(),
        gate_id: resp.gate_id,
        event_id: resp.event_id,
        credential: resp.credential,
    })?;
    replica.observe_clock(resp.server_time, gate_agent::decide::wall_ms())?;
    drop(replica);
    let engine = SyncEngine::new(Replica::open(&path)?)?;
    let stats = engine.sync_once().await?;
    println!(
        "{}",
        json!({"gate_id": resp.gate_id, "event_id": resp.event_id,
            "replica_cursor": stats.replica_cursor, "replica_changes": stats.pulled,
            "data_dir": dir})
    );
    Ok(())
}

async fn sync_once(dir: &Path) -> anyhow::Result<()> {
    let engine = SyncEngine::new(Replica::open(&replica_path(dir))?)?;
    let stats = engine.sync_once().await?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}
