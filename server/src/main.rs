//! `server [serve] [--listen ADDR] [--data-dir DIR] [--tls-cert PEM --tls-key PEM]`,
//! `server backup DEST`, `server restore SRC`,
//! `server users list|create|set-role|disable|enable|reset-password`, `server admin create`,
//! `server import --event ID FILE` and `server export --event ID [OUT]`.

use std::io::Read;

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::Settings;
use server::domain::auth::Role;

#[derive(Debug, Parser)]
#[command(name = "server", version, about = "Usher check-in server")]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server (the same as no subcommand): `server serve --tls-cert PEM --tls-key PEM`
    /// for HTTPS.
    Serve,
    /// Writes a consistent snapshot of the database (and the master key) into a new
    /// directory, while the server keeps running. SQLite only: PostgreSQL uses pg_dump.
    Backup {
        /// A new (or empty) directory.
        dest: std::path::PathBuf,
    },
    /// Restores a `backup` directory into a data directory that has no database yet.
    Restore {
        /// A directory written by `server backup`.
        src: std::path::PathBuf,
    },
    /// Organizer accounts: list, create, set-role, disable, enable, reset-password.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Service API keys for the systems that call the API: list, create, revoke.
    ApiKeys {
        #[command(subcommand)]
        command: ApiKeysCommand,
    },
    /// Imports participants from a CSV file by the same parser and rules as the API; prints
    /// progress to standard error and every row error as `line N, field F: message`.
    Import {
        /// The event to import into.
        #[arg(long)]
        event: uuid::Uuid,
        /// The CSV file (a header line, then one participant per line).
        file: std::path::PathBuf,
        /// Report what would happen; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write the valid rows even if others have errors.
        #[arg(long)]
        partial: bool,
        /// Do not issue tickets for new participants.
        #[arg(long)]
        no_tickets: bool,
    },
    /// Exports participants with their check-in facts (or, with --checkins, the check-in log),
    /// the same rows as the API's exports; CSV cells are safe from formula injection.
    Export {
        /// The event to export.
        #[arg(long)]
        event: uuid::Uuid,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Comma-separated columns, in the order wanted (default: all).
        #[arg(long)]
        columns: Option<String>,
        /// The check-in log (failed scans included) instead of the participants.
        #[arg(long)]
        checkins: bool,
        /// Where to write (default: standard output).
        out: Option<std::path::PathBuf>,
    },
    /// Account administration (`admin create` is `users create`).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Creates a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (the only way, so it never shows in `ps`).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long, default_value = "admin", value_parser = ["admin", "staff", "viewer"])]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Every account: e-mail, role, whether disabled, created.
    List,
    /// Creates an account; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (the only way, so it never shows in `ps`).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long, default_value = "staff", value_parser = ["admin", "staff", "viewer"])]
        role: String,
    },
    /// Changes an account's role on all events (`none`: only the roles granted per event).
    SetRole {
        email: String,
        #[arg(value_parser = ["admin", "staff", "viewer", "none"])]
        role: String,
    },
    /// Grants an account a role on one event (replacing an earlier one there).
    Grant {
        email: String,
        /// The event's id.
        #[arg(long)]
        event: uuid::Uuid,
        #[arg(long, value_parser = ["admin", "staff", "viewer"])]
        role: String,
    },
    /// Takes an account's role on one event away.
    Revoke {
        email: String,
        /// The event's id.
        #[arg(long)]
        event: uuid::Uuid,
    },
    /// Disables an account: it can no longer sign in.
    Disable { email: String },
    /// Enables a disabled account again.
    Enable { email: String },
    /// Sets a new random password and prints it once.
    ResetPassword { email: String },
}

#[derive(Debug, Subcommand)]
enum ApiKeysCommand {
    /// Every key: id, name, role, event, last use, revoked.
    List,
    /// Creates a key and prints it once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "viewer", value_parser = ["admin", "staff", "viewer"])]
        role: String,
        /// Limit the key to one event.
        #[arg(long)]
        event: Option<uuid::Uuid>,
    },
    /// Revokes a key at once.
    Revoke { id: uuid::Uuid },
}

async fn api_keys(settings: &Settings, command: ApiKeysCommand) -> anyhow::Result<()> {
    let db = server::Db::connect(settings).await?;
    let actor = server::domain::auth::Actor {
        id: None,
        name: "cli".into(),
    };
    let result = async {
        match command {
            ApiKeysCommand::List => {
                println!(
                    "{:<36} {:<24} {:<7} {:<36} last used",
                    "id", "name", "role", "event"
                );
                for k in server::store::api_keys::list(&db).await? {
                    let when = |ms: Option<i64>| {
                        ms.and_then(|ms| {
                            server::store::ms_to_time(ms)
                                .format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_else(|| "-".into())
                    };
                    println!(
                        "{:<36} {:<24} {:<7} {:<36} {}{}",
                        k.id,
                        k.name,
                        k.role,
                        k.event_id.map_or_else(|| "all".into(), |e| e.to_string()),
                        when(k.last_used_at),
                        if k.revoked_at.is_some() {
                            " (revoked)"
                        } else {
                            ""
                        }
                    );
                }
            }
            ApiKeysCommand::Create { name, role, event } => {
                let role = Role::parse(&role).context("role must be admin, staff or viewer")?;
                let created = server::service::api_keys::create(&db, &actor, &name, role, event)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "created API key {} ({} {}):\n{}\nIt is shown only once.",
                    created.row.id,
                    created.row.role,
                    event.map_or_else(|| "for every event".into(), |e| format!("for event {e}")),
                    created.key
                );
            }
            ApiKeysCommand::Revoke { id } => {
                server::service::api_keys::revoke(&db, &actor, id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("revoked API key {id}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}

fn read_password() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    Ok(password.trim_end_matches(['\r', '\n']).to_owned())
}

async fn users(settings: &Settings, command: UsersCommand) -> anyhow::Result<()> {
    use server::service::users::Change;
    let change = |email: String, c: Change| async move {
        let db = server::Db::connect(settings).await?;
        let actor = server::domain::auth::Actor {
            id: None,
            name: "cli".into(),
        };
        let out = server::service::users::change(&db, &actor, &email, c)
            .await
            .map_err(|e| match e {
                server::domain::Error::NotFound(_) => {
                    anyhow::anyhow!("no user with e-mail {email}")
                }
                other => anyhow::anyhow!("{other}"),
            });
        db.close().await;
        out
    };
    match command {
        UsersCommand::List => {
            let db = server::Db::connect(settings).await?;
            let rows = server::store::users::list(&db).await?;
            db.close().await;
            println!("{:<40} {:<7} {:<9} created", "e-mail", "role", "status");
            for u in rows {
                println!(
                    "{:<40} {:<7} {:<9} {}",
                    u.email,
                    if u.events_only {
                        "none"
                    } else {
                        u.role.as_str()
                    },
                    if u.disabled { "disabled" } else { "active" },
                    server::store::ms_to_time(u.created_at)
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                );
            }
        }
        UsersCommand::Create { email, role, .. } => {
            let role = Role::parse(&role).context("role must be admin, staff or viewer")?;
            server::admin_create(settings, &email, &read_password()?, role).await?;
            println!("created {} {email}", role.as_str());
        }
        UsersCommand::SetRole { email, role } => {
            let role = server::domain::auth::GlobalRole::parse(&role)
                .context("role must be admin, staff, viewer or none")?;
            change(email.clone(), Change::Role(role.role())).await?;
            println!(
                "{email} is now {} on all events",
                server::service::users::role_name(role.role())
            );
        }
        UsersCommand::Grant { email, event, role } => {
            let role = Role::parse(&role).context("role must be admin, staff or viewer")?;
            grant(settings, &email, event, Some(role)).await?;
            println!("{email} is now {} on event {event}", role.as_str());
        }
        UsersCommand::Revoke { email, event } => {
            grant(settings, &email, event, None).await?;
            println!("{email} has no role of its own on event {event}");
        }
        UsersCommand::Disable { email } => {
            change(email.clone(), Change::Disabled(true)).await?;
            println!("{email} is disabled");
        }
        UsersCommand::Enable { email } => {
            change(email.clone(), Change::Disabled(false)).await?;
            println!("{email} is enabled");
        }
        UsersCommand::ResetPassword { email } => {
            let password = change(email.clone(), Change::ResetPassword)
                .await?
                .context("no password was set")?;
            // Deliberately stdout and not the log.
            println!("new password for {email}: {password}\nIt is shown only once.");
        }
    }
    Ok(())
}

/// `server users grant|revoke`: sets (or with `None` takes away) a user's role on one event.
async fn grant(
    settings: &Settings,
    email: &str,
    event: uuid::Uuid,
    role: Option<Role>,
) -> anyhow::Result<()> {
    let db = server::Db::connect(settings).await?;
    let actor = server::domain::auth::Actor {
        id: None,
        name: "cli".into(),
    };
    let result = async {
        let user = server::store::users::by_email(&db, &email.trim().to_lowercase())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no user with e-mail {email}"))?;
        match role {
            Some(r) => server::service::users::grant(&db, &actor, user.id, event, r).await,
            None => server::service::users::revoke_grant(&db, &actor, user.id, event).await,
        }
        .map_err(|e| match e {
            server::domain::Error::NotFound(what) => anyhow::anyhow!("no such {what}"),
            other => anyhow::anyhow!("{other}"),
        })
    }
    .await;
    db.close().await;
    result
}

/// The state the use cases need, for a command that runs beside (or instead of) the server.
async fn open_state(settings: &Settings) -> anyhow::Result<server::service::AppState> {
    if !settings.data_dir.is_dir() && settings.database_url.is_none() {
        anyhow::bail!(
            "the data directory {} does not exist",
            settings.data_dir.display()
        );
    }
    let master = server::domain::crypto::MasterKey::load(settings)?;
    let db = server::Db::connect(settings).await?;
    server::service::users::check_master_key(&db, &master).await?;
    // Rows written before personal data was encrypted: sealed once, in batches (idempotent).
    let sealed = server::store::personal::backfill(&db, master.personal()).await?;
    if sealed > 0 {
        tracing::info!(
            participants = sealed,
            "encrypted the personal data of existing participants"
        );
    }
    Ok(server::service::AppState::new(
        db,
        master,
        server::service::webhooks::Config::from_settings(settings),
    ))
}

/// A use case's error as a command-line message (the row errors printed first).
fn cli_error(e: server::domain::Error, event: uuid::Uuid) -> anyhow::Error {
    use server::domain::Error;
    match e {
        Error::NotFound("event") => anyhow::anyhow!("no event with id {event}"),
        Error::Validation { detail, errors, .. } => {
            for e in &errors {
                eprintln!("{}", row_error_line(e.line, &e.field, &e.message));
            }
            anyhow::anyhow!("{detail}")
        }
        Error::BadRequest { detail, field } => match field {
            Some(f) => anyhow::anyhow!("{f}: {detail}"),
            None => anyhow::anyhow!("{detail}"),
        },
        other => anyhow::anyhow!("{other}"),
    }
}

fn row_error_line(line: Option<u64>, field: &str, message: &str) -> String {
    match line {
        Some(n) => format!("line {n}, field {field}: {message}"),
        None => format!("field {field}: {message}"),
    }
}

/// Counts the bytes read, for the progress report.
struct Counting<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Reports how much of the file was read until `done` is cancelled: a progress bar when
/// standard error is a terminal, else a plain line every few seconds.
async fn report_progress(
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    total: u64,
    done: tokio_util::sync::CancellationToken,
) {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering;
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {decimal_bytes}/{decimal_total_bytes} {percent}% {elapsed} (eta {eta})",
        ) {
            bar.set_style(style);
        }
        loop {
            bar.set_position(read.load(Ordering::Relaxed));
            tokio::select! {
                () = done.cancelled() => break,
                () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
        bar.finish_and_clear();
    } else {
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                () = done.cancelled() => break,
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
            let n = read.load(Ordering::Relaxed);
            eprintln!(
                "read {:.1} of {:.1} MB ({}%) in {} s",
                n as f64 / 1e6,
                total as f64 / 1e6,
                (n * 100).checked_div(total).unwrap_or(100),
                started.elapsed().as_secs()
            );
        }
    }
}

struct ImportArgs {
    event: uuid::Uuid,
    file: std::path::PathBuf,
    dry_run: bool,
    partial: bool,
    no_tickets: bool,
}

async fn import(settings: &Settings, args: ImportArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let state = open_state(settings).await?;
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = Counting {
        inner: std::io::BufReader::with_capacity(1 << 16, file),
        read: read.clone(),
    };
    let done = tokio_util::sync::CancellationToken::new();
    let progress = tokio::spawn(report_progress(read, total, done.clone()));
    let actor = server::domain::auth::Actor {
        id: None,
        name: "cli".into(),
    };
    let options = server::service::import::ImportOptions {
        dry_run: args.dry_run,
        partial: args.partial,
        issue_tickets: !args.no_tickets,
    };
    let outcome =
        server::service::import::import_csv(&state, &actor, args.event, options, reader).await;
    done.cancel();
    let _ = progress.await;
    state.db.close().await;
    let outcome = outcome.map_err(|e| cli_error(e, args.event))?;
    for e in &outcome.errors {
        eprintln!("{}", row_error_line(Some(e.line), &e.field, &e.message));
    }
    println!(
        "{}{} created, {} updated, {} unchanged, {} ticket(s) issued, {} cancelled, {} barcode(s), \
         {} row error(s)",
        if outcome.dry_run {
            "dry run (nothing written): "
        } else {
            ""
        },
        outcome.created,
        outcome.updated,
        outcome.unchanged,
        outcome.tickets_issued,
        outcome.cancelled,
        outcome.barcodes,
        outcome.errors.len()
    );
    Ok(())
}

struct ExportArgs {
    event: uuid::Uuid,
    format: String,
    columns: Option<String>,
    checkins: bool,
    out: Option<std::path::PathBuf>,
}

async fn export(settings: &Settings, args: ExportArgs) -> anyhow::Result<()> {
    use server::service::exports::{self, Format};
    let format = exports::format_of(Some(&args.format)).map_err(|e| cli_error(e, args.event))?;
    let known = if args.checkins {
        exports::CHECKIN_COLUMNS
    } else {
        exports::PARTICIPANT_COLUMNS
    };
    let columns = exports::columns_of(args.columns.as_deref(), known)
        .map_err(|e| cli_error(e, args.event))?;
    let master = server::domain::crypto::MasterKey::load(settings)?;
    let db = server::Db::connect(settings).await?;
    server::service::users::check_master_key(&db, &master).await?;
    let rows = async {
        server::store::events::require(&db, args.event).await?;
        if args.checkins {
            exports::checkin_rows(&db, args.event).await
        } else {
            exports::participant_rows(&db, master.personal(), args.event).await
        }
    }
    .await;
    db.close().await;
    let rows = rows.map_err(|e| cli_error(e, args.event))?;
    let n = rows.len();
    let bytes = match format {
        Format::Json => {
            let items: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|r| exports::json_object(r, &columns))
                .collect();
            let mut text = serde_json::to_vec_pretty(&items)?;
            text.push(b'\n');
            text
        }
        Format::Csv => {
            let mut w = server::http::csv::SafeCsv::default();
            w.row(&columns).map_err(|e| cli_error(e, args.event))?;
            for r in &rows {
                w.row(exports::csv_cells(r, &columns))
                    .map_err(|e| cli_error(e, args.event))?;
            }
            w.finish().map_err(|e| cli_error(e, args.event))?
        }
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {n} row(s) to {}", path.display());
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .context("cannot write to standard output")?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `server serve --tls-cert …`: the settings are the top-level flags, so `serve` followed by
    // them is the same as the flags alone.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() > 2 && args.get(1).is_some_and(|a| a == "serve") {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    server::telemetry::init();
    match cli.command {
        None | Some(Command::Serve) => {
            eprintln!("Usher server\n{}", cli.settings.describe());
            let app = server::build(cli.settings).await?;
            app.run_until_stopped(server::shutdown_signal()).await
        }
        Some(Command::Backup { dest }) => {
            let s = server::service::backup::backup(&cli.settings, &dest).await?;
            println!(
                "backed up {} check-ins to {}{}",
                s.checkins,
                s.dir.display(),
                if s.with_key {
                    " (with the master key: keep this directory private)"
                } else {
                    " (the master key comes from USHER_MASTER_KEY and is not in the backup)"
                }
            );
            Ok(())
        }
        Some(Command::Restore { src }) => {
            let s = server::service::backup::restore(&cli.settings, &src).await?;
            println!(
                "restored {} check-ins into {}; start the server with --data-dir {}",
                s.checkins,
                s.dir.display(),
                s.dir.display()
            );
            Ok(())
        }
        Some(Command::Users { command }) => users(&cli.settings, command).await,
        Some(Command::ApiKeys { command }) => api_keys(&cli.settings, command).await,
        Some(Command::Import {
            event,
            file,
            dry_run,
            partial,
            no_tickets,
        }) => {
            let args = ImportArgs {
                event,
                file,
                dry_run,
                partial,
                no_tickets,
            };
            import(&cli.settings, args).await
        }
        Some(Command::Export {
            event,
            format,
            columns,
            checkins,
            out,
        }) => {
            let args = ExportArgs {
                event,
                format,
                columns,
                checkins,
                out,
            };
            export(&cli.settings, args).await
        }
        Some(Command::Admin {
            command: AdminCommand::Create { email, role, .. },
        }) => {
            let password = read_password()?;
            let role = Role::parse(&role).context("role must be admin, staff or viewer")?;
            server::admin_create(&cli.settings, &email, &password, role).await?;
            println!("created {role:?} {email}", role = role.as_str());
            Ok(())
        }
    }
}
