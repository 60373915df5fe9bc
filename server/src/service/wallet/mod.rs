//! Wallet passes: Apple Wallet `.pkpass` files ([`apple`]) and Google Wallet save links
//! ([`google`]), each available when its keys are configured.
//!
//! # Layout
//! - this file: [`Config`], read from the settings at start (a half-configured wallet stops the
//!   start with a message naming what is missing), and the 409 a request gets without it.
//! - [`apple`]: `pass.json`, the manifest, the CMS signature, the zip.
//! - [`google`]: the RS256 "save to wallet" JWT.
//! - [`images`]: the icon and logo a pass carries.
//!
//! Ticket e-mail carries wallet links an attendee opens without an account: the Google one is
//! the save link itself; the Apple one is `<USHER_PUBLIC_URL>/wallet/v1/apple/<token>`, where
//! the token names (event, participant, ticket serial) under an HMAC of a key derived from the
//! master key, so it opens exactly the ticket it was made for, until that ticket is reissued or
//! revoked.

pub mod apple;
pub mod google;
pub mod images;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::domain::Error;
use crate::domain::crypto::MasterKey;
use crate::settings::Settings;

/// The wallet signers this server has (none by default).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub apple: Option<Arc<apple::AppleSigner>>,
    pub google: Option<Arc<google::GoogleSigner>>,
    /// `USHER_PUBLIC_URL` without a trailing slash.
    pub public_url: Option<String>,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;
/// Bytes of the link token's MAC.
const LINK_MAC: usize = 16;

fn link_mac(master: &MasterKey, body: &[u8]) -> Result<[u8; 32], Error> {
    let mut mac = HmacSha256::new_from_slice(master.wallet_link_key())
        .map_err(|e| Error::Internal(anyhow::anyhow!("HMAC key: {e}")))?;
    mac.update(body);
    Ok(mac.finalize().into_bytes().into())
}

/// The token of an e-mailed Apple Wallet link: event id ‖ participant id ‖ serial ‖ MAC.
pub fn link_token(
    master: &MasterKey,
    event_id: Uuid,
    participant_id: Uuid,
    serial: u64,
) -> Result<String, Error> {
    let mut body = Vec::with_capacity(40 + LINK_MAC);
    body.extend_from_slice(event_id.as_bytes());
    body.extend_from_slice(participant_id.as_bytes());
    body.extend_from_slice(&serial.to_be_bytes());
    let mac = link_mac(master, &body)?;
    body.extend_from_slice(&mac[..LINK_MAC]);
    Ok(B64.encode(body))
}

/// What a link token names, or `None` for a token this server did not make.
pub fn open_link_token(master: &MasterKey, token: &str) -> Option<(Uuid, Uuid, u64)> {
    let bytes = B64.decode(token).ok()?;
    if bytes.len() != 40 + LINK_MAC {
        return None;
    }
    let (body, tag) = bytes.split_at(40);
    let mac = link_mac(master, body).ok()?;
    if !bool::from(mac[..LINK_MAC].ct_eq(tag)) {
        return None;
    }
    let event = Uuid::from_slice(&body[..16]).ok()?;
    let participant = Uuid::from_slice(&body[16..32]).ok()?;
    let serial = u64::from_be_bytes(body[32..40].try_into().ok()?);
    Some((event, participant, serial))
}

impl Config {
    pub fn from_settings(s: &Settings) -> anyhow::Result<Self> {
        let apple = {
            let parts = [
                ("USHER_WALLET_PASS_TYPE_ID", s.wallet_pass_type_id.is_some()),
                ("USHER_WALLET_TEAM_ID", s.wallet_team_id.is_some()),
                ("USHER_WALLET_CERT", s.wallet_cert.is_some()),
                ("USHER_WALLET_KEY", s.wallet_key.is_some()),
                ("USHER_WALLET_WWDR", s.wallet_wwdr.is_some()),
            ];
            match (
                &s.wallet_pass_type_id,
                &s.wallet_team_id,
                &s.wallet_cert,
                &s.wallet_key,
                &s.wallet_wwdr,
            ) {
                (Some(id), Some(team), Some(cert), Some(key), Some(wwdr)) => {
                    Some(Arc::new(apple::AppleSigner::load(
                        id.clone(),
                        team.clone(),
                        s.wallet_organization.clone(),
                        cert,
                        key,
                        wwdr,
                    )?))
                }
                _ if parts.iter().any(|(_, set)| *set) => {
                    let missing: Vec<&str> = parts
                        .iter()
                        .filter(|(_, set)| !set)
                        .map(|(name, _)| *name)
                        .collect();
                    anyhow::bail!(
                        "Apple Wallet is half configured: set {} too (or unset the others)",
                        missing.join(", ")
                    );
                }
                _ => None,
            }
        };
        let google = match (&s.google_wallet_key, &s.google_wallet_issuer_id) {
            (Some(key), Some(issuer)) => {
                Some(Arc::new(google::GoogleSigner::load(key, issuer.clone())?))
            }
            (Some(_), None) => {
                anyhow::bail!(
                    "USHER_GOOGLE_WALLET_KEY is set: set USHER_GOOGLE_WALLET_ISSUER_ID too"
                )
            }
            (None, Some(_)) => {
                anyhow::bail!(
                    "USHER_GOOGLE_WALLET_ISSUER_ID is set: set USHER_GOOGLE_WALLET_KEY too"
                )
            }
            (None, None) => None,
        };
        let public_url = match &s.public_url {
            Some(text) => {
                let url = url::Url::parse(text).map_err(|e| {
                    anyhow::anyhow!(
                        "USHER_PUBLIC_URL is not a URL (https://tickets.example.org): {e}"
                    )
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    anyhow::bail!("USHER_PUBLIC_URL must be an http:// or https:// address");
                }
                Some(text.trim_end_matches('/').to_owned())
            }
            None => None,
        };
        Ok(Self {
            apple,
            google,
            public_url,
        })
    }

    /// The Apple Wallet link for an e-mail, when passes and the public address are configured.
    pub fn apple_link(
        &self,
        master: &MasterKey,
        event_id: Uuid,
        participant_id: Uuid,
        serial: u64,
    ) -> Result<Option<String>, Error> {
        match (&self.apple, &self.public_url) {
            (Some(_), Some(base)) => Ok(Some(format!(
                "{base}/wallet/v1/apple/{}",
                link_token(master, event_id, participant_id, serial)?
            ))),
            _ => Ok(None),
        }
    }

    /// The Apple signer, or a 409 saying what to configure.
    pub fn require_apple(&self) -> Result<&apple::AppleSigner, Error> {
        self.apple.as_deref().ok_or_else(|| {
            Error::Conflict(
                "Apple Wallet passes are not configured on this server: set \
                 USHER_WALLET_PASS_TYPE_ID, USHER_WALLET_TEAM_ID, USHER_WALLET_CERT (the Pass \
                 Type ID certificate, PEM), USHER_WALLET_KEY (its key, PKCS#8 PEM) and \
                 USHER_WALLET_WWDR (Apple's WWDR certificate, PEM)"
                    .into(),
            )
        })
    }

    /// The Google signer, or a 409 saying what to configure.
    pub fn require_google(&self) -> Result<&google::GoogleSigner, Error> {
        self.google.as_deref().ok_or_else(|| {
            Error::Conflict(
                "Google Wallet is not configured on this server: set USHER_GOOGLE_WALLET_KEY \
                 (the service account's JSON key file) and USHER_GOOGLE_WALLET_ISSUER_ID"
                    .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_open_only_unchanged_and_under_the_same_key() {
        let master = MasterKey::from_bytes([7; 32]);
        let (e, p) = (Uuid::now_v7(), Uuid::now_v7());
        let token = link_token(&master, e, p, 42).unwrap();
        assert_eq!(open_link_token(&master, &token), Some((e, p, 42)));
        let other = MasterKey::from_bytes([8; 32]);
        assert_eq!(open_link_token(&other, &token), None);
        let mut bytes = B64.decode(&token).unwrap();
        bytes[33] ^= 1;
        assert_eq!(open_link_token(&master, &B64.encode(&bytes)), None);
        assert_eq!(open_link_token(&master, "not a token"), None);
        assert_eq!(open_link_token(&master, ""), None);
    }

    fn testdata(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!(
            "{}/../testdata/wallet/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
    }

    #[test]
    fn half_or_wrong_wallet_settings_stop_the_start_with_a_reason() {
        let mut s = Settings::for_test("/tmp/x".into(), None);
        assert!(Config::from_settings(&s).unwrap().apple.is_none());
        s.wallet_cert = Some(testdata("pass.pem"));
        let e = Config::from_settings(&s).unwrap_err().to_string();
        assert!(
            e.contains("USHER_WALLET_KEY") && e.contains("USHER_WALLET_WWDR"),
            "{e}"
        );
        s.wallet_pass_type_id = Some("pass.org.usher.test".into());
        s.wallet_team_id = Some("USHERTEST1".into());
        s.wallet_wwdr = Some(testdata("wwdr.pem"));
        // The CA's key is not the pass certificate's.
        s.wallet_key = Some(testdata("wwdr.key"));
        let e = Config::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("is not the key"), "{e}");
        s.wallet_key = Some(testdata("pass.key"));
        assert!(Config::from_settings(&s).unwrap().apple.is_some());
        s.google_wallet_key = Some(testdata("google-service-account.json"));
        let e = Config::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("USHER_GOOGLE_WALLET_ISSUER_ID"), "{e}");
        s.google_wallet_issuer_id = Some("3388000000012345678".into());
        assert!(Config::from_settings(&s).unwrap().google.is_some());
        s.public_url = Some("ftp://x".into());
        assert!(Config::from_settings(&s).is_err());
    }
}
