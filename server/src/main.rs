//! `server [--listen ADDR] [--data-dir DIR]` and `server admin create --email E --password-stdin`.

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
