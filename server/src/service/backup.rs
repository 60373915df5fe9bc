//! `server backup DEST` and `server restore SRC`: a backup is a directory holding a consistent
//! snapshot of the SQLite database (`usher.db`, taken while the server runs) and, when the
//! master key lives in the data directory, a copy of it (`master.key`, mode 0600): without the
//! key the sealed event keys in the snapshot cannot be opened. PostgreSQL deployments use
//! `pg_dump`/`pg_restore` instead (the command says so).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::settings::Settings;
use crate::store::{self, Db};

const DB_FILE: &str = "usher.db";
const KEY_FILE: &str = "master.key";

/// What a backup holds.
#[derive(Debug)]
pub struct Summary {
    pub dir: PathBuf,
    pub checkins: i64,
    /// Whether the master key is in the backup (it is not when it comes from `USHER_MASTER_KEY`).
    pub with_key: bool,
}

/// Snapshots the running server's database into the new directory `dest`.
pub async fn backup(settings: &Settings, dest: &Path) -> anyhow::Result<Summary> {
    if settings.database_url.is_some() {
        bail!(
            "DATABASE_URL is set: this server runs on PostgreSQL; back it up with \
             `pg_dump --format=custom --file=usher.dump \"$DATABASE_URL\"` and restore with \
             `pg_restore --dbname=\"$NEW_DATABASE_URL\" usher.dump` (see deploy/README.md)"
        );
    }
    let source = settings.data_dir.join(DB_FILE);
    if !source.exists() {
        bail!(
            "no database at {}: pass the server's --data-dir (or USHER_DATA_DIR)",
            source.display()
        );
    }
    if dest.exists()
        && dest
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty: name a new directory",
            dest.display()
        );
    }
    create_private_dir(dest)?;
    let db = Db::connect(settings).await?;
    let snapshot = dest.join(DB_FILE);
    store::backup::snapshot_into(&db, &snapshot)
        .await
        .context("the snapshot failed")?;
    db.close().await;
    restrict(&snapshot)?;
    let key = settings.data_dir.join(KEY_FILE);
    let with_key = settings.master_key.is_none() && key.exists();
    if with_key {
        copy_private(&key, &dest.join(KEY_FILE))?;
    }
    let copy = Db::open_file(&snapshot).await?;
    let checkins = store::backup::count_checkins(&copy).await?;
    copy.close().await;
    Ok(Summary {
        dir: dest.to_owned(),
        checkins,
        with_key,
    })
}

/// Restores a backup directory into a data directory that has no database yet.
pub async fn restore(settings: &Settings, src: &Path) -> anyhow::Result<Summary> {
    if settings.database_url.is_some() {
        bail!("DATABASE_URL is set: restore PostgreSQL backups with pg_restore");
    }
    let snapshot = src.join(DB_FILE);
    if !snapshot.exists() {
        bail!(
            "{} has no {DB_FILE}: name a directory `server backup` wrote",
            src.display()
        );
    }
    let target = settings.data_dir.join(DB_FILE);
    if target.exists() {
        bail!(
            "{} already has a database: restore into a new --data-dir",
            settings.data_dir.display()
        );
    }
    {
        let check = Db::open_file(&snapshot).await?;
        let verdict = store::backup::integrity(&check).await?;
        check.close().await;
        if verdict != "ok" {
            bail!("the backup's database is damaged: {verdict}");
        }
    }
    create_private_dir(&settings.data_dir)?;
    copy_private(&snapshot, &target)?;
    let key = src.join(KEY_FILE);
    let with_key = key.exists();
    if with_key {
        copy_private(&key, &settings.data_dir.join(KEY_FILE))?;
    } else if settings.master_key.is_none() {
        bail!(
            "the backup has no master key (it came from USHER_MASTER_KEY): set USHER_MASTER_KEY \
             to the same key to restore"
        );
    }
    // Opening it runs any newer migrations.
    let db = Db::connect(settings).await?;
    let checkins = store::backup::count_checkins(&db).await?;
    db.close().await;
    Ok(Summary {
        dir: settings.data_dir.clone(),
        checkins,
        with_key,
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn restrict(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    Ok(())
}

/// Copies a file to a new one only its owner can read.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(to)
        .with_context(|| format!("cannot create {}", to.display()))?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    Ok(())
}
