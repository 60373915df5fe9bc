//! Secrets at rest and key derivation.
//!
//! One 32-byte master key (from `USHER_MASTER_KEY`, or generated once into
//! `<data dir>/master.key` with mode 0600) is the root. Everything else is derived from it with
//! HKDF-SHA256 under a distinct label, so several server processes sharing one database and one
//! master key agree on every derived key:
//! - the sealing key: ChaCha20-Poly1305 for event signing keys, BLE secrets and mesh keys
//!   (random 96-bit nonce per message, AAD binding the ciphertext to its row);
//! - the session key: HS256 for the organizer API's bearer tokens ([`crate::domain::jwt`]);
//! - the personal-data keys ([`PersonalKeys`]): AES-256-GCM for participants' names, e-mails,
//!   phones, organisations, attention notes and metadata, and HMAC-SHA256 for the blind indexes
//!   that let the server find a participant by e-mail, phone or name words without storing them
//!   readable. Both carry a key version (see `docs/personal-data.md` for rotation).

use std::io::Write;
use std::path::Path;

use aes_gcm::Aes256Gcm;
use anyhow::{Context, bail};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

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
    personal: PersonalKeys,
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
            personal: PersonalKeys::derive(&master, PERSONAL_KEY_VERSION),
        }
    }

    /// The keys of participants' personal data.
    pub fn personal(&self) -> &PersonalKeys {
        &self.personal
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

/// The version of the personal-data keys this build derives: the first byte of every sealed
/// field. A rotation that changes how the keys are derived bumps it, so a value sealed under an
/// older derivation is recognised (and refused with a clear message) rather than misread.
pub const PERSONAL_KEY_VERSION: u8 = 1;

/// Length of a blind index (truncated HMAC-SHA256): 128 bits make accidental collisions between
/// two different values of one event negligible while keeping the index small.
pub const BLIND_LEN: usize = 16;

/// AES-256-GCM for personal fields and the HMAC key of their blind indexes, both derived from
/// the master key under their own label and version.
#[derive(Clone)]
pub struct PersonalKeys {
    version: u8,
    field: Aes256Gcm,
    index: [u8; 32],
}

impl PersonalKeys {
    fn derive(master: &[u8; 32], version: u8) -> Self {
        let field_key = derive(
            master,
            format!("usher-personal-field-v{version}").as_bytes(),
        );
        let index = derive(
            master,
            format!("usher-personal-index-v{version}").as_bytes(),
        );
        Self {
            version,
            field: Aes256Gcm::new(&field_key.into()),
            index,
        }
    }

    /// The key version sealed values of these keys start with.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Encrypts a text field bound to `aad` (the row and column it belongs to). Output:
    /// URL-safe base64 (no padding) of version ‖ 96-bit random nonce ‖ ciphertext ‖ tag, so
    /// the value fits the text columns of both backends.
    pub fn seal_field(&self, aad: &[u8], plaintext: &str) -> anyhow::Result<String> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let ct = self
            .field
            .encrypt(
                &nonce_bytes.into(),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(self.version);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts what [`seal_field`](Self::seal_field) produced for the same `aad`.
    pub fn open_field(&self, aad: &[u8], sealed: &str) -> anyhow::Result<String> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| anyhow::anyhow!("a sealed personal field is not base64"))?;
        let Some((&version, rest)) = bytes.split_first() else {
            bail!("a sealed personal field is empty");
        };
        if version != self.version {
            bail!(
                "a personal field is sealed under key version {version}, this server derives \
                 version {}: finish the key rotation (see docs/personal-data.md)",
                self.version
            );
        }
        if rest.len() < NONCE_LEN {
            bail!("a sealed personal field is truncated");
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let plain = self
            .field
            .decrypt(&nonce_bytes.into(), Payload { msg: ct, aad })
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot decrypt a participant's personal data: the master key differs from \
                     the one that sealed it, or the value was moved to another row"
                )
            })?;
        String::from_utf8(plain).context("a sealed personal field is not UTF-8")
    }

    /// The blind index of `value` in `domain` (what kind of value: e-mail, phone, word), scoped
    /// to one event so the same person is not linkable across events by their index.
    pub fn blind(&self, domain: &[u8], event_id: Uuid, value: &str) -> [u8; BLIND_LEN] {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.index)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(domain);
        mac.update(&[0]);
        mac.update(event_id.as_bytes());
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; BLIND_LEN];
        out.copy_from_slice(&tag[..BLIND_LEN]);
        out
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
    fn personal_fields_round_trip_bound_to_their_row_and_version() {
        let key = MasterKey::from_bytes([7; 32]);
        let p = key.personal();
        let sealed = p.seal_field(b"row-1/email", "ada@example.org").unwrap();
        assert!(!sealed.contains("ada"));
        assert_eq!(
            p.open_field(b"row-1/email", &sealed).unwrap(),
            "ada@example.org"
        );
        // Another row or column, another master key, a damaged value: refused.
        assert!(p.open_field(b"row-2/email", &sealed).is_err());
        assert!(p.open_field(b"row-1/phone", &sealed).is_err());
        let other = MasterKey::from_bytes([8; 32]);
        assert!(
            other
                .personal()
                .open_field(b"row-1/email", &sealed)
                .is_err()
        );
        assert!(p.open_field(b"row-1/email", &sealed[..10]).is_err());
        // The first byte is the key version; another version is named in the error.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sealed)
            .unwrap();
        assert_eq!(raw[0], PERSONAL_KEY_VERSION);
        raw[0] = 9;
        let bumped = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let err = p
            .open_field(b"row-1/email", &bumped)
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 9"), "{err}");
        assert_ne!(
            p.seal_field(b"a", "x").unwrap(),
            p.seal_field(b"a", "x").unwrap()
        );
    }

    #[test]
    fn blind_indexes_are_keyed_scoped_and_stable() {
        let key = MasterKey::from_bytes([7; 32]);
        let (e1, e2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let p = key.personal();
        assert_eq!(
            p.blind(b"email", e1, "a@b.c"),
            p.blind(b"email", e1, "a@b.c")
        );
        assert_ne!(
            p.blind(b"email", e1, "a@b.c"),
            p.blind(b"email", e2, "a@b.c")
        );
        assert_ne!(
            p.blind(b"email", e1, "a@b.c"),
            p.blind(b"phone", e1, "a@b.c")
        );
        let other = MasterKey::from_bytes([8; 32]);
        assert_ne!(
            p.blind(b"email", e1, "a@b.c"),
            other.personal().blind(b"email", e1, "a@b.c")
        );
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
