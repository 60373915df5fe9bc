//! `server [--listen ADDR] [--data-dir DIR]`, `server backup DEST`, `server restore SRC`,
//! `server users list|create|set-role|disable|enable|reset-password` and `server admin create`.

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
    /// Changes an account's role.
    SetRole {
        email: String,
        #[arg(value_parser = ["admin", "staff", "viewer"])]
        role: String,
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
                    u.role,
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
            let role = Role::parse(&role).context("role must be admin, staff or viewer")?;
            change(email.clone(), Change::Role(role)).await?;
            println!("{email} is now {}", role.as_str());
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    server::telemetry::init();
    match cli.command {
        None => {
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
