//! The gate's own secret: 32 random bytes in `gate.key` beside the replica (mode 0600), made
//! on first open. Two keys are derived from it (HMAC-SHA256 with a purpose label):
//!
//! - the sealing key of what the replica must not hold in plain text (the gate's server
//!   credential): ChaCha20-Poly1305, bound to what the value belongs to, so a copied replica
//!   file alone does not give the credential away;
//! - the seed of the gate's ed25519 mesh key (DESIGN §8). Its public half goes to the server
//!   at enrollment; the private half never leaves this device.
//!
//! The replica and its `-wal`/`-shm` files are kept 0600 as well (see [`restrict`]).

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::Mac;

use super::{ReplicaError, Result, corrupt};

/// The key file's name, in the replica's directory.
pub const KEY_FILE: &str = "gate.key";
const NONCE_LEN: usize = 12;

/// The gate's secret (never printed).
#[derive(Clone)]
pub struct GateSecret([u8; 32]);

impl std::fmt::Debug for GateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GateSecret([redacted])")
    }
}

impl GateSecret {
    /// A secret that lives as long as the process (in-memory replicas).
    pub fn ephemeral() -> Self {
        Self(rand::random())
    }

    /// Reads `path`, or creates it with a fresh secret (0600) when missing. Creation is atomic
    /// (written aside, then linked into place without replacing): two processes opening a new
    /// data dir at once end up with the same secret.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => return Self::from_file_bytes(path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_file_error(path, e)),
        }
        let secret: [u8; 32] = rand::random();
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        write_private(&tmp, hex::encode(secret).as_bytes()).map_err(|e| key_file_error(&tmp, e))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    // The new name is durable before anything is sealed with it.
                    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                }
                Ok(Self(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(path).map_err(|e| key_file_error(path, e))?;
                Self::from_file_bytes(path, &bytes)
            }
            Err(e) => Err(key_file_error(path, e)),
        }
    }

    fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes).unwrap_or("").trim();
        let secret: [u8; 32] = hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                corrupt(
                    "gate key file",
                    format!("{} does not hold 64 hex digits", path.display()),
                )
            })?;
        restrict(path);
        Ok(Self(secret))
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// This gate's ed25519 mesh key.
    pub fn mesh_signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.derive(b"usher-gate mesh ed25519 v1"))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&self.derive(b"usher-gate seal v1").into())
    }

    /// Encrypts `plaintext` bound to `aad`; hex of nonce ‖ ciphertext.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<String> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let ct = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| corrupt("sealed value", "encryption failed"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        Ok(hex::encode(out))
    }

    /// Decrypts what [`seal`](Self::seal) made for the same `aad`.
    pub fn open(&self, aad: &[u8], sealed_hex: &str, what: &'static str) -> Result<Vec<u8>> {
        let sealed = hex::decode(sealed_hex).map_err(|e| corrupt(what, e))?;
        if sealed.len() < NONCE_LEN {
            return Err(corrupt(what, "truncated"));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| corrupt(what, "truncated"))?;
        self.cipher()
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map_err(|_| ReplicaError::Corrupt {
                what,
                detail: format!(
                    "cannot be opened with this data directory's {KEY_FILE} (the replica was \
                     copied without it, or the key file was replaced): enroll the gate again"
                ),
            })
    }
}

fn key_file_error(path: &Path, e: std::io::Error) -> ReplicaError {
    corrupt("gate key file", format!("{}: {e}", path.display()))
}

/// Writes a new file readable by its owner only, fsynced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes `path` readable and writable by its owner only, if it exists (best effort: a file
/// owned by someone else keeps its mode, and opening still works).
pub fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o777 != 0o600
        {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Creates the replica file (empty, 0600) when missing, so that SQLite, which gives its `-wal`
/// and `-shm` files the database file's mode, makes them 0600 too; tightens existing ones.
pub fn prepare_replica_files(db: &Path) -> std::io::Result<()> {
    if !db.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(db)?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        restrict(Path::new(&name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_secret_and_aad() {
        let a = GateSecret::ephemeral();
        let b = GateSecret::ephemeral();
        let sealed = a.seal(b"gate 1", b"bearer").unwrap();
        assert!(!sealed.contains(&hex::encode(b"bearer")));
        assert_eq!(a.open(b"gate 1", &sealed, "x").unwrap(), b"bearer");
        assert!(a.open(b"gate 2", &sealed, "x").is_err());
        assert!(b.open(b"gate 1", &sealed, "x").is_err());
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let first = GateSecret::load_or_create(&path).unwrap();
        let again = GateSecret::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, "not hex").unwrap();
        assert!(GateSecret::load_or_create(&path).is_err());
    }
}

#[cfg(test)]
mod replica_tests {
    use super::super::{Enrollment, Replica};
    use uuid::Uuid;

    fn raw_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|e| {
            let path = e.unwrap().path();
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("replica.db"))
                && std::fs::read(&path)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
        })
    }

    #[test]
    fn a_plain_credential_of_an_older_replica_is_sealed_on_open_and_needs_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica.db");
        let gate_id = Uuid::now_v7();
        let credential = "usher-gate-credential-in-plain-text";
        {
            let r = Replica::open(&path).unwrap();
            for (k, v) in [
                ("server_url", "http://127.0.0.1:9".to_string()),
                ("gate_id", gate_id.to_string()),
                ("event_id", Uuid::now_v7().to_string()),
                ("credential", credential.to_string()),
            ] {
                r.set_meta(k, &v).unwrap();
            }
        }
        let r = Replica::open(&path).unwrap();
        assert_eq!(r.require_enrollment().unwrap().credential, credential);
        assert_eq!(r.meta("credential").unwrap(), None);
        r.checkpoint().unwrap();
        drop(r);
        let r = Replica::open(&path).unwrap();
        r.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(r);
        assert!(
            !raw_contains(dir.path(), credential.as_bytes()),
            "the plain credential is still in the replica's files"
        );
        // The replica copied without gate.key: the credential does not open.
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&path, copy.path().join("replica.db")).unwrap();
        let copied = Replica::open(&copy.path().join("replica.db")).unwrap();
        assert!(copied.require_enrollment().is_err());
    }

    #[test]
    fn a_new_enrollment_is_stored_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica.db");
        let mut r = Replica::open(&path).unwrap();
        let e = Enrollment {
            server_url: "https://gate.example".into(),
            gate_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            credential: "fresh-bearer-secret-0123456789".into(),
        };
        r.store_enrollment(&e).unwrap();
        assert_eq!(r.enrollment().unwrap(), Some(e.clone()));
        let secure_delete: i64 = r
            .conn
            .query_row("PRAGMA secure_delete", [], |row| row.get(0))
            .unwrap();
        assert_eq!(secure_delete, 1);
        drop(r);
        assert!(!raw_contains(dir.path(), e.credential.as_bytes()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let path = entry.unwrap().path();
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
            }
        }
    }
}
