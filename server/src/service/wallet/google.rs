//! Google Wallet "save" links: `https://pay.google.com/gp/v/save/<jwt>`, where the JWT is RS256
//! over `{iss: service account, aud: "google", typ: "savetowallet", payload: {eventTicketClasses,
//! eventTicketObjects}}`, signed with the service account's key. The class (one per event) and
//! the object (one per ticket) travel inside the JWT, so Google creates them when the attendee
//! saves the pass; nothing is called from here.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rsa::pkcs8::DecodePrivateKey;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::service::ticket_doc::TicketDoc;

/// Where a save link points.
pub const SAVE_URL: &str = "https://pay.google.com/gp/v/save/";

/// The fields of a service account's JSON key file that signing needs.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

/// The service account and issuer, loaded and checked once at start.
pub struct GoogleSigner {
    issuer_id: String,
    client_email: String,
    key_id: Option<String>,
    key: rsa::PrivateKey,
}

impl std::fmt::Debug for GoogleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleSigner")
            .field("issuer_id", &self.issuer_id)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl GoogleSigner {
    pub fn load(key_file: &Path, issuer_id: String) -> anyhow::Result<Self> {
        if issuer_id.is_empty() || !issuer_id.chars().all(|c| c.is_ascii_digit()) {
            anyhow::bail!(
                "USHER_GOOGLE_WALLET_ISSUER_ID must be the issuer's number from the Google Pay & \
                 Wallet console"
            );
        }
        let text = std::fs::read_to_string(key_file).with_context(|| {
            format!(
                "USHER_GOOGLE_WALLET_KEY: cannot read {}",
                key_file.display()
            )
        })?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "USHER_GOOGLE_WALLET_KEY is not a service-account JSON key file \
                 (client_email, private_key): {e}"
            )
        })?;
        let key = rsa::PrivateKey::from_pkcs8_pem(&file.private_key).map_err(|e| {
            anyhow::anyhow!("USHER_GOOGLE_WALLET_KEY: private_key is not a PKCS#8 RSA key: {e}")
        })?;
        Ok(Self {
            issuer_id,
            client_email: file.client_email,
            key_id: file.private_key_id,
            key,
        })
    }

    /// The link that adds the ticket to Google Wallet.
    pub fn save_url(&self, doc: &TicketDoc, now: OffsetDateTime) -> anyhow::Result<String> {
        Ok(format!("{SAVE_URL}{}", self.jwt(doc, now)?))
    }

    /// The signed JWT of one ticket.
    pub fn jwt(&self, doc: &TicketDoc, now: OffsetDateTime) -> anyhow::Result<String> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = Value::String(kid.clone());
        }
        let signing_input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header)?),
            B64.encode(serde_json::to_vec(&self.claims(doc, now))?)
        );
        let signature = self
            .key
            .pkcs1v15_sign::<Sha256>(signing_input.as_bytes())
            .map_err(|e| anyhow::anyhow!("RSA signing failed: {e}"))?;
        Ok(format!("{signing_input}.{}", B64.encode(signature)))
    }

    /// The claims Google's "save to wallet" JWT carries.
    pub fn claims(&self, doc: &TicketDoc, now: OffsetDateTime) -> Value {
        let text = |s: &str| json!({"defaultValue": {"language": "en", "value": s}});
        let rfc3339 = crate::domain::mail::rfc3339;
        let class_id = format!("{}.usher-{}", self.issuer_id, doc.event_id);
        let mut class = json!({
            "id": class_id,
            "issuerName": "Usher",
            "reviewStatus": "UNDER_REVIEW",
            "eventName": text(&doc.event_name),
            "dateTime": {"start": rfc3339(doc.starts_at), "end": rfc3339(doc.ends_at)},
        });
        if let Some(venue) = doc.venue.as_ref().filter(|v| !v.is_empty()) {
            class["venue"] = json!({"name": text(venue), "address": text(venue)});
        }
        let mut object = json!({
            "id": format!("{class_id}-{}", doc.serial),
            "classId": class_id,
            "state": "ACTIVE",
            "barcode": {
                "type": "QR_CODE",
                "value": doc.credential,
                "alternateText": doc.short_code,
            },
            "ticketNumber": doc.short_code,
            "validTimeInterval": {
                "start": {"date": rfc3339(doc.valid_from)},
                "end": {"date": rfc3339(doc.valid_until)},
            },
        });
        if let Some(name) = doc.name.as_ref().filter(|v| !v.is_empty()) {
            object["ticketHolderName"] = Value::String(name.clone());
        }
        if let Some(t) = doc.ticket_type.as_ref().filter(|v| !v.is_empty()) {
            object["ticketType"] = text(t);
        }
        if let Some((latitude, longitude)) = doc.location {
            object["locations"] = json!([{"latitude": latitude, "longitude": longitude}]);
        }
        json!({
            "iss": self.client_email,
            "aud": "google",
            "typ": "savetowallet",
            "iat": now.unix_timestamp(),
            "origins": [],
            "payload": {
                "eventTicketClasses": [class],
                "eventTicketObjects": [object],
            },
        })
    }
}
