//! The processes a figure is about: the server runs as a child process of the suite (this same
//! binary, `bench __serve`), so that its memory and CPU time are its own and not the load
//! generator's; PostgreSQL's CPU time is read from its processes. Linux `/proc` only.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`; 100 on every Linux
/// architecture this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// A server child process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub base: String,
    pub password: String,
}

impl ServerProcess {
    /// Starts `bench __serve` on a data directory and database; waits until it listens.
    pub fn start(data_dir: &Path, database_url: &str, pool: u32) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("the suite's own binary")?;
        let mut child = Command::new(exe)
            .arg("__serve")
            .arg(data_dir)
            .arg(database_url)
            .arg(pool.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server process")?;
        let stdout = child.stdout.take().context("server stdout")?;
        // The server may print its own notices first (the first start's admin password).
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 && !line.starts_with("READY") {
            line.clear();
        }
        // Whatever the server prints later goes nowhere, and must not block it.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let mut words = line.split_whitespace();
        let (Some("READY"), Some(port), password) = (words.next(), words.next(), words.next())
        else {
            let _ = child.kill();
            bail!("the server process did not start (it printed {line:?})");
        };
        Ok(Self {
            base: format!("http://127.0.0.1:{port}"),
            password: password.unwrap_or_default().to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in MB.
    pub fn rss_mb(&self) -> anyhow::Result<f64> {
        status_kb(self.pid(), "VmRSS:").map(|kb| kb / 1024.0)
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        cpu_secs(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status` in kB (`VmRSS:`, `VmHWM:`).
pub fn status_kb(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("value")?
        .parse::<f64>()?)
}

/// User + system CPU seconds of a process (and its finished, waited-for children).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its `)` are plain.
    let rest = &stat[stat.rfind(')').context("stat format")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime are fields 14 and 15 of the whole line: 12 and 13 of `rest` (0-based 11, 12).
    let ticks: f64 = f
        .get(11..13)
        .context("stat fields")?
        .iter()
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / TICKS_PER_SEC)
}

/// CPU seconds used so far by every process named `postgres` (the PostgreSQL server's backends
/// and workers on this machine).
pub fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| cpu_secs(pid).ok())
        .sum()
}

/// Samples a process's resident memory every 50 ms until stopped; returns the peak in MB.
pub struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<f64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = 0.0f64;
            loop {
                if let Ok(kb) = status_kb(pid, "VmRSS:") {
                    peak = peak.max(kb / 1024.0);
                }
                tokio::select! {
                    _ = &mut stopped => return peak,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Self { stop, task }
    }

    pub async fn peak_mb(self) -> f64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0.0)
    }
}

/// `bench __serve DATA_DIR DATABASE_URL POOL`: the server, in this process, until its standard
/// input closes (the suite ended or died).
pub async fn serve_child(args: &[String]) -> anyhow::Result<()> {
    let [data_dir, url, pool] = args else {
        bail!("usage: bench __serve DATA_DIR DATABASE_URL POOL");
    };
    let mut settings = server::Settings::for_test(data_dir.into(), Some(url.clone()));
    settings.db_max_connections = pool.parse().context("POOL")?;
    let app = server::build(settings).await?;
    println!(
        "READY {} {}",
        app.port(),
        app.initial_admin_password.clone().unwrap_or_default()
    );
    app.run_until_stopped(async {
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
    })
    .await
}
