//! `server [--listen ADDR] [--data-dir DIR]`, `server backup DEST`, `server restore SRC` and
//! `server admin create --email E --password-stdin`.

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
    /// Account administration.
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
        Some(Command::Admin {
            command: AdminCommand::Create { email, role, .. },
        }) => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let role = Role::parse(&role).context("role must be admin, staff or viewer")?;
            server::admin_create(&cli.settings, &email, password, role).await?;
            println!("created {role:?} {email}", role = role.as_str());
            Ok(())
        }
    }
}
