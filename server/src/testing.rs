//! Fresh PostgreSQL databases for the tests and benchmarks of every crate that runs this server
//! against a real PostgreSQL (this crate's API and two-process tests, the gate agent's end-to-end
//! tests, the benchmarks). Not used by the server itself.
//!
//! The server they run on ([`admin_url`]), in order:
//! 1. `USHER_TEST_DATABASE_URL`, used as given;
//! 2. the local server at `postgres://postgres@127.0.0.1:5432/postgres`, if it answers;
//! 3. else a private cluster this process starts from the PostgreSQL binaries on the machine
//!    ([`Cluster`]): `initdb` into a temporary directory, `pg_ctl start` on a free loopback
//!    port. So the tests need PostgreSQL installed, not running.
//!
//! The private cluster is started at most once per process and shared by all its tests. It is
//! not shared across processes: `cargo test` runs test binaries one after another, so sharing
//! would need a cluster that outlives the process that started it, and a timer to decide when
//! no one needs it any more. One cluster per test binary costs about a second, and nothing
//! can outlive the run.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection;
use uuid::Uuid;

/// Set to a PostgreSQL superuser connection to run the tests on that server.
const ENV_URL: &str = "USHER_TEST_DATABASE_URL";
/// The local server the tests use when it answers.
const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL superuser connection tests create their databases with: `USHER_TEST_DATABASE_URL`,
/// else the local server's `postgres` user over TCP if it answers, else a private cluster
/// started for this process (see the module documentation). Resolved once per process; an
/// error (no PostgreSQL binaries, a cluster that would not start) is returned to every caller.
pub fn admin_url() -> anyhow::Result<String> {
    if let Ok(url) = std::env::var(ENV_URL) {
        return Ok(url);
    }
    static RESOLVED: OnceLock<Result<String, String>> = OnceLock::new();
    // `get_or_init` runs the closure once; tests that ask meanwhile wait for its result.
    RESOLVED
        .get_or_init(|| local_or_private().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn local_or_private() -> anyhow::Result<String> {
    if answers(LOCAL_URL) {
        return Ok(LOCAL_URL.to_owned());
    }
    let bindir = find_bindir().with_context(|| {
        format!(
            "PostgreSQL does not answer at {LOCAL_URL}, and no PostgreSQL server binaries \
             (initdb, pg_ctl) were found (looked at `pg_config --bindir`, \
             /usr/lib/postgresql/*/bin and PATH) to start a private cluster for the tests. \
             Install them (`apt-get install postgresql`; nothing needs to be running), or set \
             {ENV_URL} to a PostgreSQL superuser connection"
        )
    })?;
    let cluster = Cluster::start(&bindir).with_context(|| {
        format!(
            "starting a private PostgreSQL cluster from {}",
            bindir.display()
        )
    })?;
    let url = cluster.url.clone();
    // Kept until the process exits; its watchdog then stops it.
    static PROCESS_CLUSTER: OnceLock<Cluster> = OnceLock::new();
    let _ = PROCESS_CLUSTER.set(cluster);
    Ok(url)
}

/// Whether a superuser connection to `url` succeeds within a few seconds.
fn answers(url: &str) -> bool {
    let url = url.to_owned();
    on_private_runtime(async move {
        let connect = sqlx::PgConnection::connect(&url);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(conn)) => {
                conn.close().await.ok();
                true
            }
            _ => false,
        }
    })
    .unwrap_or(false)
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own: callers may be
/// inside a runtime they must not block on (a test's, or a `Drop` running in one).
fn on_private_runtime<F>(fut: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        Some(rt.block_on(fut))
    })
    .join()
    .ok()
    .flatten()
}

/// The directory holding `initdb` and `pg_ctl`: `pg_config --bindir` (if it has them; Debian's
/// `pg_config` may belong to a client-only install), else the newest `/usr/lib/postgresql/*/bin`
/// (Debian and Ubuntu), else the first directory on `PATH` that has them.
fn find_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    from_pg_config
        .filter(|dir| has_server_binaries(dir))
        .or_else(|| newest_versioned_bindir(Path::new("/usr/lib/postgresql")))
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).find(|dir| has_server_binaries(dir))
        })
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// `root/<version>/bin` with the highest version (compared numerically: 9.6 < 15 < 16) that
/// has the server binaries.
fn newest_versioned_bindir(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server_binaries(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// PostgreSQL refuses to run as root; the tests often do (containers, CI). Then the cluster's
/// directory belongs to, and its commands run as, the `postgres` system user.
fn is_root() -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::process::geteuid().is_root()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The watchdog: `sh -c WATCHDOG sh DIR BINDIR [RUNAS...]`. It waits for end-of-file on its
/// stdin, a pipe whose only write end this process holds, then stops the cluster and removes
/// its directory. The pipe closes when the [`Cluster`] is dropped or this process exits for any
/// reason (end of the tests, a panic, a signal, SIGKILL), as the kernel closes the descriptors
/// of a process that ends; a test process has no global destructor to do this. Not
/// PR_SET_PDEATHSIG: it fires when the spawning *thread* ends (a test thread, long before the
/// process), and needs `pre_exec` (unsafe). The watchdog ignores the terminal's signals and has
/// its own process group, so a Ctrl-C, or a signal sent to the tests' process group, ends the
/// tests but not the cleanup.
const WATCHDOG: &str = r#"trap '' HUP INT QUIT TERM PIPE
dir=$1 bin=$2
shift 2
cat >/dev/null
if [ -f "$dir/data/postmaster.pid" ]; then
  "$@" "$bin/pg_ctl" stop -D "$dir/data" -m immediate -w -t 30 >/dev/null 2>&1
  if [ -f "$dir/data/postmaster.pid" ]; then
    kill -KILL "$(head -n 1 "$dir/data/postmaster.pid")" 2>/dev/null
    sleep 1
  fi
fi
rm -rf "$dir"
"#;

/// A private PostgreSQL cluster in a temporary directory (`data/` inside it, the Unix socket
/// and the server log beside it), trust authentication for the `postgres` superuser, listening
/// on 127.0.0.1 only. Dropping it stops the cluster and removes the directory, and so does
/// the end of this process (see [`WATCHDOG`]).
#[derive(Debug)]
struct Cluster {
    /// Superuser connection to the `postgres` database, over TCP.
    url: String,
    dir: PathBuf,
    /// The write end of the watchdog's stdin; closing it stops the cluster.
    watchdog_stdin: Option<ChildStdin>,
    watchdog: Child,
    bindir: PathBuf,
    /// The command prefix that runs a PostgreSQL program as the postgres user (empty unless
    /// this process is root).
    run_as: Vec<OsString>,
}

impl Cluster {
    fn start(bindir: &Path) -> anyhow::Result<Self> {
        let run_as: Vec<OsString> = if is_root() {
            ["runuser", "-u", "postgres", "--"]
                .into_iter()
                .map(OsString::from)
                .collect()
        } else {
            Vec::new()
        };
        let dir = std::env::temp_dir().join(format!(
            "usher-test-pg-{}-{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Watched from here on: if anything below fails, dropping `cluster` removes the directory
        // (and the end of this process would, too).
        let mut watchdog = Command::new("sh");
        watchdog
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&dir)
            .arg(bindir)
            .args(&run_as)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
        let mut watchdog = watchdog
            .spawn()
            .context("starting the cluster's watchdog (sh)")?;
        let mut cluster = Self {
            url: String::new(),
            dir,
            watchdog_stdin: watchdog.stdin.take(),
            watchdog,
            bindir: bindir.to_path_buf(),
            run_as: run_as.clone(),
        };
        cluster.init_and_start(bindir, &run_as)?;
        Ok(cluster)
    }

    fn init_and_start(&mut self, bindir: &Path, run_as: &[OsString]) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        if !run_as.is_empty() {
            run(Command::new("chown").arg("postgres:").arg(&self.dir))
                .context("running as root: giving the cluster's directory to the postgres user")?;
        }
        let data = self.dir.join("data");
        let locale = if cfg!(target_os = "linux") {
            "--locale=C.UTF-8"
        } else {
            "--locale=C"
        };
        run(command(run_as, &bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                locale,
                "--no-sync",
            ]))
        .context("initdb")?;

        let socket_dir = self.dir.to_string_lossy().replace('\'', "''");
        let log = self.dir.join("postgres.log");
        let mut last_error = None;
        // A free port may be taken by someone else before the server binds it: try a few.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            // Later settings win: a retry's `port` replaces the previous one.
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))?;
            writeln!(
                conf,
                "\n# Private test cluster\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
                 unix_socket_directories = '{socket_dir}'"
            )?;
            drop(conf);
            let started = run(command(run_as, &bindir.join("pg_ctl"))
                .args(["start", "-w", "-t", "60", "-s", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(&log));
            match started {
                Ok(()) => {
                    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !answers(&url) {
                        anyhow::ensure!(
                            Instant::now() < deadline,
                            "the private cluster started but does not answer at {url}"
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    self.url = url;
                    return Ok(());
                }
                Err(e) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    last_error =
                        Some(e.context(format!("pg_ctl start; its log:\n{}", tail.join("\n"))));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("pg_ctl start")))
    }
}

/// A private PostgreSQL cluster owned by one test, which may stop and start it (the fault tests:
/// a database that crashes or goes away under a running server). Same set-up as the private
/// cluster of [`admin_url`] (trust authentication for `postgres`, 127.0.0.1 only), never shared;
/// dropping it stops the cluster and removes its directory.
#[derive(Debug)]
pub struct PrivateCluster(Cluster);

impl PrivateCluster {
    /// `initdb` and `pg_ctl start` from the PostgreSQL binaries on the machine. Blocks.
    pub fn start() -> anyhow::Result<Self> {
        let bindir = find_bindir().context(
            "no PostgreSQL server binaries (initdb, pg_ctl): `apt-get install postgresql`",
        )?;
        Ok(Self(Cluster::start(&bindir)?))
    }

    /// Superuser connection to its `postgres` database, over TCP.
    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// `pg_ctl stop -m immediate`: every server process quits without a checkpoint, as in a
    /// crash; the next start recovers from the WAL. Blocks until it is down.
    pub fn stop_immediate(&self) -> anyhow::Result<()> {
        let c = &self.0;
        run(command(&c.run_as, &c.bindir.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-t", "60", "-s", "-D"])
            .arg(c.dir.join("data")))
        .context("pg_ctl stop -m immediate")
    }

    /// `pg_ctl start` on the same data directory and port; returns once it answers.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let c = &self.0;
        run(command(&c.run_as, &c.bindir.join("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-s", "-D"])
            .arg(c.dir.join("data"))
            .arg("-l")
            .arg(c.dir.join("postgres.log")))
        .context("pg_ctl start")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !answers(&c.url) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster restarted but does not answer at {}",
                c.url
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// [`Self::stop_immediate`], then [`Self::start_again`].
    pub fn restart_immediate(&self) -> anyhow::Result<()> {
        self.stop_immediate()?;
        self.start_again()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // End-of-file for the watchdog, which stops the cluster and removes the directory.
        drop(self.watchdog_stdin.take());
        let _ = self.watchdog.wait();
    }
}

/// `program`, run as the postgres user when this process is root.
fn command(run_as: &[OsString], program: &Path) -> Command {
    let mut cmd = match run_as.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    // The postgres user may not be allowed into this process's working directory.
    cmd.current_dir("/");
    cmd
}

/// Runs `cmd` to completion; a failure carries its output.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed ({}): {}{}",
        cmd.get_program(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    match query {
        Some(q) => format!("{}/{name}?{q}", &base[..host_end]),
        None => format!("{}/{name}", &base[..host_end]),
    }
}

/// A fresh database on the [`admin_url`] server, dropped (`WITH (FORCE)`) when this is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
    /// The connection URL of this database.
    pub url: String,
    /// The superuser connection it was created with, and is dropped with.
    admin: String,
}

impl PgDatabase {
    /// Creates `{prefix}_{random}`. Tests that need PostgreSQL are never skipped: the error
    /// says what to install or start.
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        Self::create_on(&admin_url()?, prefix).await
    }

    /// Creates `{prefix}_{random}` on the server of the superuser connection `admin` (a
    /// [`PrivateCluster`]'s, say).
    pub async fn create_on(admin: &str, prefix: &str) -> anyhow::Result<Self> {
        let admin = admin.to_owned();
        let mut conn = sqlx::PgConnection::connect(&admin).await.with_context(|| {
            if std::env::var_os(ENV_URL).is_some() {
                format!(
                    "PostgreSQL is not reachable at {admin}, the server {ENV_URL} names. Tests \
                     that need it are never skipped: start that server, or unset {ENV_URL} to \
                     use the local server or a private cluster"
                )
            } else {
                format!("PostgreSQL is not reachable at {admin}")
            }
        })?;
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .context("CREATE DATABASE")?;
        conn.close().await.ok();
        let url = with_database(&admin, &name);
        Ok(Self { name, url, admin })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        on_private_runtime(async move {
            let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .ok()?;
            conn.close().await.ok()
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Cluster, ENV_URL, answers, find_bindir, newest_versioned_bindir, with_database};

    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?host=/run/pg", "x"),
            "postgres://u@h/x?host=/run/pg"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
    }

    #[test]
    fn the_newest_version_with_server_binaries_wins() {
        let root = tempfile::tempdir().unwrap();
        let install = |version: &str, binaries: &[&str]| {
            let bin = root.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            for b in binaries {
                std::fs::write(bin.join(b), "").unwrap();
            }
        };
        assert_eq!(newest_versioned_bindir(root.path()), None);
        install("9.6", &["initdb", "pg_ctl"]);
        install("15", &["initdb", "pg_ctl"]);
        install("16", &["psql"]); // client only
        install("common", &["initdb", "pg_ctl"]); // not a version
        assert_eq!(
            newest_versioned_bindir(root.path()),
            Some(root.path().join("15/bin"))
        );
        install("17", &["initdb", "pg_ctl"]);
        assert_eq!(
            newest_versioned_bindir(root.path()),
            Some(root.path().join("17/bin"))
        );
        assert_eq!(newest_versioned_bindir(&root.path().join("absent")), None);
    }

    /// CI starts the system PostgreSQL, so the other tests never reach the private cluster:
    /// this one starts one itself. Skipped only when `USHER_TEST_DATABASE_URL` names a server,
    /// as the binaries are then not required.
    #[test]
    fn a_private_cluster_answers_and_is_gone_when_dropped() {
        if std::env::var_os(ENV_URL).is_some() {
            eprintln!("{ENV_URL} is set: the PostgreSQL binaries are not required, not tested");
            return;
        }
        let bindir =
            find_bindir().expect("PostgreSQL server binaries (apt-get install postgresql)");
        let cluster = Cluster::start(&bindir).unwrap();
        assert!(answers(&cluster.url), "{}", cluster.url);
        let (url, dir) = (cluster.url.clone(), cluster.dir.clone());
        assert!(dir.join("data/PG_VERSION").is_file());
        drop(cluster); // returns once the watchdog is done
        assert!(!dir.exists(), "{} left behind", dir.display());
        let deadline = Instant::now() + Duration::from_secs(5);
        while answers(&url) {
            assert!(Instant::now() < deadline, "still answering at {url}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
