//! Typed configuration: command-line flags, each backed by an environment variable (DESIGN §6a).
//!
//! Secrets are wrapped in [`Secret`] so that `Debug` and the start-up banner never print them;
//! the password inside `DATABASE_URL` is masked the same way.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A value that must never reach a log line. `Debug`/`Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret itself; call sites are easy to grep for.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret<String> {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Server settings. Every flag has an environment variable, so containers need no arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "USHER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve HTTPS with this certificate chain (PEM file, leaf first); goes with `--tls-key`.
    /// Unset = plain HTTP (behind a TLS-terminating proxy, or on a closed venue network).
    #[arg(long, env = "USHER_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM file: PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[arg(long, env = "USHER_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Directory for the embedded SQLite database and the generated master key.
    #[arg(long, env = "USHER_DATA_DIR", default_value = "./usher-data")]
    pub data_dir: PathBuf,

    /// `postgres://user:password@host/db` to use PostgreSQL; unset = SQLite file in the data
    /// directory. `sqlite://path` is accepted too.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret<String>>,

    /// 32-byte master key (hex or base64) that seals event secrets and signs sessions. Unset =
    /// generated once into `<data dir>/master.key`. Several server processes sharing one
    /// PostgreSQL need the same key.
    #[arg(long, env = "USHER_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<Secret<String>>,

    /// E-mail of the admin created on first start (when there are no users yet).
    #[arg(long, env = "USHER_ADMIN_EMAIL", default_value = "admin@localhost")]
    pub admin_email: String,

    /// Largest database pool.
    #[arg(long, env = "USHER_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Multiplies the webhook retry schedule (5 s, 30 s, 2 min, … for a little over 24 h) and
    /// with it the time after which a failing endpoint is disabled. 1 in production; tests use
    /// small values.
    #[arg(long, env = "USHER_WEBHOOK_RETRY_SCALE", default_value_t = 1.0)]
    pub webhook_retry_scale: f64,

    /// Seconds a webhook receiver has to answer one delivery.
    #[arg(long, env = "USHER_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,

    /// SMTP server for ticket e-mail, in lettre's URL form: `smtp://host:port` (plain, a local
    /// relay), `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://user:pass@host:465`
    /// (implicit TLS). Unset = each message is written as an `.eml` file under
    /// `<data dir>/mail/`.
    #[arg(long, env = "USHER_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret<String>>,

    /// Sender of ticket e-mail, e.g. `Usher <tickets@example.org>`.
    #[arg(
        long,
        env = "USHER_MAIL_FROM",
        default_value = "Usher <usher@localhost>"
    )]
    pub mail_from: String,

    /// Most ticket e-mails sent per minute, by all server processes together.
    #[arg(long, env = "USHER_MAIL_PER_MINUTE", default_value_t = 120)]
    pub mail_per_minute: u32,

    /// Multiplies the ticket e-mail retry schedule (10 s doubling to 1 h, 10 attempts). 1 in
    /// production; tests use small values.
    #[arg(long, env = "USHER_MAIL_RETRY_SCALE", default_value_t = 1.0)]
    pub mail_retry_scale: f64,

    /// How often each server process evaluates the alert rules of every event, in
    /// milliseconds (default 5000; tests use small values).
    #[arg(long, env = "USHER_ALERT_TICK_MS", default_value_t = 5000)]
    pub alert_tick_ms: u64,
    /// Apple Wallet: the Pass Type ID (`pass.org.example.tickets`) of the organizer's
    /// certificate. The five `USHER_WALLET_*` settings go together; unset = no Apple passes.
    #[arg(long, env = "USHER_WALLET_PASS_TYPE_ID")]
    pub wallet_pass_type_id: Option<String>,

    /// Apple Wallet: the Apple developer team id the Pass Type ID belongs to.
    #[arg(long, env = "USHER_WALLET_TEAM_ID")]
    pub wallet_team_id: Option<String>,

    /// Apple Wallet: the Pass Type ID certificate (PEM file).
    #[arg(long, env = "USHER_WALLET_CERT")]
    pub wallet_cert: Option<PathBuf>,

    /// Apple Wallet: the certificate's private key (PEM file, PKCS#8, unencrypted RSA).
    #[arg(long, env = "USHER_WALLET_KEY")]
    pub wallet_key: Option<PathBuf>,

    /// Apple Wallet: Apple's WWDR intermediate certificate that issued the pass certificate
    /// (PEM file).
    #[arg(long, env = "USHER_WALLET_WWDR")]
    pub wallet_wwdr: Option<PathBuf>,

    /// Apple Wallet: the organization name a pass shows on the lock screen.
    #[arg(long, env = "USHER_WALLET_ORGANIZATION", default_value = "Usher")]
    pub wallet_organization: String,

    /// Google Wallet: the service account's JSON key file (with `client_email` and
    /// `private_key`). Goes with `USHER_GOOGLE_WALLET_ISSUER_ID`; unset = no save links.
    #[arg(long, env = "USHER_GOOGLE_WALLET_KEY")]
    pub google_wallet_key: Option<PathBuf>,

    /// Google Wallet: the issuer id from the Google Pay & Wallet console.
    #[arg(long, env = "USHER_GOOGLE_WALLET_ISSUER_ID")]
    pub google_wallet_issuer_id: Option<String>,

    /// The address attendees reach this server at (`https://tickets.example.org`): the Apple
    /// Wallet link in ticket e-mail points here. Unset = the e-mail carries no Apple link.
    #[arg(long, env = "USHER_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl Settings {
    /// Settings for tests: port 0 on loopback, the given data directory and database.
    pub fn for_test(data_dir: PathBuf, database_url: Option<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_cert: None,
            tls_key: None,
            data_dir,
            database_url: database_url.map(Secret::new),
            master_key: None,
            admin_email: "admin@localhost".into(),
            db_max_connections: 8,
            webhook_retry_scale: 1.0,
            webhook_timeout_secs: 10,
            smtp_url: None,
            mail_from: "Usher <usher@localhost>".into(),
            mail_per_minute: 120,
            mail_retry_scale: 1.0,
            alert_tick_ms: 5000,
            wallet_pass_type_id: None,
            wallet_team_id: None,
            wallet_cert: None,
            wallet_key: None,
            wallet_wwdr: None,
            wallet_organization: "Usher".into(),
            google_wallet_key: None,
            google_wallet_issuer_id: None,
            public_url: None,
        }
    }

    /// The configuration as one printable line per setting, secrets masked.
    pub fn describe(&self) -> String {
        let db = match &self.database_url {
            Some(url) => mask_url_password(url.expose()),
            None => format!("sqlite {}", self.data_dir.join("usher.db").display()),
        };
        let master = if self.master_key.is_some() {
            "from USHER_MASTER_KEY ([redacted])".to_owned()
        } else {
            format!("{}", self.data_dir.join("master.key").display())
        };
        format!(
            "listen      {}{}\ndata dir    {}\ndatabase    {db}\nmaster key  {master}\nadmin email {}\n\
             webhooks    timeout {} s, retry scale {}\n\
             mail        {}, from {}, at most {} a minute\n\
             wallet      apple {}, google {}",
            self.listen,
            match &self.tls_cert {
                Some(cert) => format!(" (HTTPS, certificate {})", cert.display()),
                None => " (HTTP)".to_owned(),
            },
            self.data_dir.display(),
            self.admin_email,
            self.webhook_timeout_secs,
            self.webhook_retry_scale,
            match &self.smtp_url {
                Some(url) => mask_url_password(url.expose()),
                None => format!(".eml files in {}", self.data_dir.join("mail").display()),
            },
            self.mail_from,
            self.mail_per_minute,
            self.wallet_pass_type_id.as_deref().unwrap_or("off"),
            self.google_wallet_issuer_id.as_deref().unwrap_or("off"),
        )
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:****@host/db`.
pub fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:****{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_masked() {
        assert_eq!(
            mask_url_password("postgres://usher:s3cr:et@db:5432/usher?sslmode=require"),
            "postgres://usher:****@db:5432/usher?sslmode=require"
        );
        assert_eq!(
            mask_url_password("postgres://usher@db/usher"),
            "postgres://usher@db/usher"
        );
        assert_eq!(mask_url_password("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let mut s = Settings::for_test("/tmp/x".into(), Some("postgres://a:hunter2@h/d".into()));
        s.master_key = Some(Secret::new("00".repeat(32)));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!s.describe().contains("hunter2"));
        assert!(!dbg.contains(&"00".repeat(32)));
    }
}
