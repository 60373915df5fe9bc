//! `gate-agent` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gate-agent",
    version,
    about = "Usher gate agent: offline ticket check-in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    }
}
