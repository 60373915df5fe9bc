//! Secrets at rest and key derivation.
//!
//! One 32-byte master key (from `USHER_MASTER_KEY`, or generated once into
//! `<data dir>/master.key` with mode 0600) is the root. Everything else is derived from it with
//! HKDF-SHA256 under a distinct label, so several server processes sharing one database and one
//! master key agree on every derived key:
//! - the sealing key: ChaCha20-Poly1305 for event signing keys, BLE secrets and mesh keys
//!   (random 96-bit nonce per message, AAD binding the ciphertext to its row);
//! - the session key: HS256 for the organizer API's bearer tokens ([`crate::domain::jwt`]).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::settings::Settings;

const NONCE_LEN: usize = 12;

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| anyhow::anyhow!("OS random generator failed: {e}"))?;
    Ok(out)
}

/// A uniformly random `u64` below `bound` (rejection sampling, no modulo bias).
pub fn random_below(bound: u64) -> anyhow::Result<u64> {
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let v = u64::from_be_bytes(random_bytes::<8>()?);
        if v < zone {
            return Ok(v % bound);
        }
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The server's root secret and the keys derived from it.
#[derive(Clone)]
pub struct MasterKey {
    seal: [u8; 32],
    session: [u8; 32],
    check: [u8; 32],
    wallet_link: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"usher-master-v1"), master);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit; expand cannot fail.
    if hk.expand(label, &mut out).is_err() {
        unreachable!("HKDF output length is constant and valid");
    }
    out
}

/// Parses 32 bytes given as hex (64 characters) or base64 (standard or URL-safe).
pub fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .context("not hex or base64")?
    };
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the key is {len} bytes long, expected 32"))
}

impl MasterKey {
    pub fn from_bytes(master: [u8; 32]) -> Self {
        Self {
            seal: derive(&master, b"usher-seal-v1"),
            session: derive(&master, b"usher-session-jwt-v1"),
            check: derive(&master, b"usher-key-check-v1"),
            wallet_link: derive(&master, b"usher-wallet-link-v1"),
        }
    }

    /// From `USHER_MASTER_KEY`, else `<data dir>/master.key`, created (0600) on first start.
    pub fn load(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(text) = &settings.master_key {
            let key = parse_key(text.expose()).context(
                "USHER_MASTER_KEY must be 32 bytes as hex (64 characters) or base64; \
                 generate one with `openssl rand -hex 32`",
            )?;
            return Ok(Self::from_bytes(key));
        }
        let path = settings.data_dir.join("master.key");
        Self::load_or_create_file(&path)
    }

    fn load_or_create_file(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = parse_key(&text).with_context(|| {
                    format!(
                        "{} is damaged: it must hold 32 bytes as hex. Restore it from a backup \
                         (without it sealed event secrets cannot be read)",
                        path.display()
                    )
                })?;
                Ok(Self::from_bytes(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random_bytes::<32>()?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options
                    .open(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                file.write_all(hex::encode(key).as_bytes())?;
                file.write_all(b"\n")?;
                file.sync_all()?;
                tracing::info!(path = %path.display(), "generated a new master key");
                Ok(Self::from_bytes(key))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// A value that tells this key from another without revealing it (hex of a key derived
    /// for nothing else): stored with the data on first start, compared on every start.
    pub fn check_value(&self) -> String {
        hex::encode(self.check)
    }

    /// The HMAC key of the wallet links in ticket e-mail.
    pub fn wallet_link_key(&self) -> &[u8; 32] {
        &self.wallet_link
    }

    /// The HS256 key for bearer tokens.
    pub fn session_key(&self) -> &[u8; 32] {
        &self.session
    }

    /// Encrypts `plaintext`, bound to `aad` (which row it belongs to). Output: nonce ‖ ciphertext.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let cipher = ChaCha20Poly1305::new_from_slice(&self.seal)
            .map_err(|_| anyhow::anyhow!("bad seal key length"))?;
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let nonce = Nonce::from(nonce_bytes);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`seal`](Self::seal) produced for the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            bail!("sealed value is truncated");
        }
        let cipher = ChaCha20Poly1305::new_from_slice(&self.seal)
            .map_err(|_| anyhow::anyhow!("bad seal key length"))?;
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(&sealed[..NONCE_LEN]);
        cipher
            .decrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: &sealed[NONCE_LEN..],
                    aad,
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt a sealed secret: the master key differs from the one that \
                     sealed it (check USHER_MASTER_KEY / master.key)"
                )
            })
    }

    /// [`open`](Self::open) into a fixed-size array.
    pub fn open_32(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<[u8; 32]> {
        let v = self.open(aad, sealed)?;
        v.try_into()
            .map_err(|_| anyhow::anyhow!("sealed secret has the wrong length"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_its_aad() {
        let key = MasterKey::from_bytes([7; 32]);
        let sealed = key.seal(b"event-1", b"secret").unwrap();
        assert_eq!(key.open(b"event-1", &sealed).unwrap(), b"secret");
        assert!(key.open(b"event-2", &sealed).is_err());
        let other = MasterKey::from_bytes([8; 32]);
        assert!(other.open(b"event-1", &sealed).is_err());
        assert!(key.open(b"event-1", &sealed[..5]).is_err());
        // A fresh nonce each time.
        assert_ne!(key.seal(b"a", b"x").unwrap(), key.seal(b"a", b"x").unwrap());
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let hex_key = "ab".repeat(32);
        assert_eq!(parse_key(&hex_key).unwrap(), [0xab; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode([0xab; 32]);
        assert_eq!(parse_key(&b64).unwrap(), [0xab; 32]);
        assert!(parse_key("abcd").is_err());
    }

    #[test]
    fn master_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = MasterKey::load_or_create_file(&path).unwrap();
        let b = MasterKey::load_or_create_file(&path).unwrap();
        assert_eq!(a.session_key(), b.session_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn random_below_stays_below() {
        for _ in 0..1000 {
            assert!(random_below(10).unwrap() < 10);
        }
    }
}
