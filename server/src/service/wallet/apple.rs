//! Apple Wallet passes (`.pkpass`): a zip of `pass.json`, the images, `manifest.json` (the SHA-1
//! of every other file) and `signature`, a detached CMS SignedData over `manifest.json` made with
//! the organizer's Pass Type ID certificate and key, the issuing WWDR certificate included.
//!
//! The signature is what `openssl smime -sign -binary -outform DER -certfile wwdr.pem` makes, in
//! pure Rust: SHA-256 digest, RSA PKCS#1 v1.5, signed attributes (content type, signing time,
//! message digest), the signer named by issuer and serial number.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::der::asn1::{OctetString, SetOfVec, UtcTime};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Any, DecodePem, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::service::ticket_doc::TicketDoc;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ATTR_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ATTR_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ATTR_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");

/// The organizer's pass signing material, loaded and checked once at start.
pub struct AppleSigner {
    pass_type_id: String,
    team_id: String,
    organization: String,
    key: rsa::PrivateKey,
    cert: Certificate,
    wwdr: Certificate,
}

impl std::fmt::Debug for AppleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppleSigner")
            .field("pass_type_id", &self.pass_type_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

fn read_pem(setting: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))
}

impl AppleSigner {
    /// Reads the certificate, key and WWDR certificate; a key that does not belong to the
    /// certificate, or a certificate the WWDR certificate did not issue, stops the start.
    pub fn load(
        pass_type_id: String,
        team_id: String,
        organization: String,
        cert: &Path,
        key: &Path,
        wwdr: &Path,
    ) -> anyhow::Result<Self> {
        let cert = Certificate::from_pem(read_pem("USHER_WALLET_CERT", cert)?.as_bytes())
            .context("USHER_WALLET_CERT is not a PEM certificate")?;
        let wwdr = Certificate::from_pem(read_pem("USHER_WALLET_WWDR", wwdr)?.as_bytes())
            .context("USHER_WALLET_WWDR is not a PEM certificate")?;
        let key =
            rsa::PrivateKey::from_pkcs8_pem(&read_pem("USHER_WALLET_KEY", key)?).map_err(|e| {
                anyhow::anyhow!("USHER_WALLET_KEY is not an unencrypted PKCS#8 PEM RSA key: {e}")
            })?;
        let public = public_key(&cert).context("USHER_WALLET_CERT has no RSA public key")?;
        if public != key.to_public_key() {
            bail!("USHER_WALLET_KEY is not the key of the certificate in USHER_WALLET_CERT");
        }
        if cert.tbs_certificate().issuer() != wwdr.tbs_certificate().subject() {
            bail!(
                "USHER_WALLET_WWDR did not issue USHER_WALLET_CERT (its issuer is {})",
                cert.tbs_certificate().issuer()
            );
        }
        Ok(Self {
            pass_type_id,
            team_id,
            organization,
            key,
            cert,
            wwdr,
        })
    }

    /// The `.pkpass` of one ticket.
    pub fn pass(&self, doc: &TicketDoc, now: OffsetDateTime) -> anyhow::Result<Vec<u8>> {
        let pass_json = serde_json::to_vec_pretty(&self.pass_json(doc))?;
        let icon = super::images::icon(29)?;
        let icon2 = super::images::icon(58)?;
        let icon3 = super::images::icon(87)?;
        let logo = super::images::logo(160, 50)?;
        let logo2 = super::images::logo(320, 100)?;
        let files: [(&str, &[u8]); 6] = [
            ("pass.json", &pass_json),
            ("icon.png", &icon),
            ("icon@2x.png", &icon2),
            ("icon@3x.png", &icon3),
            ("logo.png", &logo),
            ("logo@2x.png", &logo2),
        ];
        let mut manifest = serde_json::Map::new();
        for (name, bytes) in files {
            manifest.insert(name.into(), Value::String(hex::encode(Sha1::digest(bytes))));
        }
        let manifest = serde_json::to_vec_pretty(&Value::Object(manifest))?;
        let signature = self.sign(&manifest, now)?;

        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in files.into_iter().chain([
            ("manifest.json", manifest.as_slice()),
            ("signature", signature.as_slice()),
        ]) {
            zip.start_file(name, options)?;
            zip.write_all(bytes)?;
        }
        Ok(zip.finish()?.into_inner())
    }

    /// `pass.json`: an event ticket whose QR is the `U1:` credential.
    pub fn pass_json(&self, doc: &TicketDoc) -> Value {
        let rfc3339 = |t: OffsetDateTime| crate::domain::mail::rfc3339(t);
        let mut secondary = Vec::new();
        if let Some(name) = doc.name.as_ref().filter(|v| !v.is_empty()) {
            secondary.push(json!({"key": "name", "label": "NAME", "value": name}));
        }
        if let Some(t) = doc.ticket_type.as_ref().filter(|v| !v.is_empty()) {
            secondary.push(json!({"key": "ticket_type", "label": "TICKET", "value": t}));
        }
        let mut auxiliary = vec![json!({"key": "starts", "label": "STARTS",
            "value": rfc3339(doc.starts_at), "dateStyle": "PKDateStyleMedium",
            "timeStyle": "PKDateStyleShort"})];
        if let Some(v) = doc.venue.as_ref().filter(|v| !v.is_empty()) {
            auxiliary.push(json!({"key": "venue", "label": "VENUE", "value": v}));
        }
        let mut back = vec![
            json!({"key": "short_code", "label": "Code", "value": doc.short_code}),
            json!({"key": "when", "label": "When", "value": doc.when()}),
        ];
        if let Some(o) = doc.organization.as_ref().filter(|v| !v.is_empty()) {
            back.push(json!({"key": "organization", "label": "Organization", "value": o}));
        }
        let barcode = json!({
            "format": "PKBarcodeFormatQR",
            "message": doc.credential,
            "messageEncoding": "iso-8859-1",
            "altText": doc.short_code,
        });
        let mut pass = json!({
            "formatVersion": 1,
            "passTypeIdentifier": self.pass_type_id,
            "teamIdentifier": self.team_id,
            "organizationName": self.organization,
            "serialNumber": format!("{}-{}", doc.event_id, doc.serial),
            "description": format!("Ticket for {}", doc.event_name),
            "logoText": doc.event_name,
            "foregroundColor": "rgb(255, 255, 255)",
            "backgroundColor": "rgb(17, 24, 39)",
            "labelColor": "rgb(156, 163, 175)",
            "relevantDate": rfc3339(doc.starts_at),
            "expirationDate": rfc3339(doc.valid_until),
            "barcodes": [barcode.clone()],
            "barcode": barcode,
            "eventTicket": {
                "primaryFields": [{"key": "event", "label": "EVENT", "value": doc.event_name}],
                "secondaryFields": secondary,
                "auxiliaryFields": auxiliary,
                "backFields": back,
            },
        });
        if let Some((latitude, longitude)) = doc.location {
            pass["locations"] = json!([{
                "latitude": latitude,
                "longitude": longitude,
                "relevantText": format!("Your ticket for {}", doc.event_name),
            }]);
        }
        pass
    }

    /// The DER `ContentInfo` of a detached SignedData over `content`.
    pub fn sign(&self, content: &[u8], now: OffsetDateTime) -> anyhow::Result<Vec<u8>> {
        let sha256 = AlgorithmIdentifierOwned {
            oid: ID_SHA256,
            parameters: None,
        };
        let attr = |oid: ObjectIdentifier, value: Any| -> anyhow::Result<Attribute> {
            Ok(Attribute {
                oid,
                values: SetOfVec::try_from(vec![value])?,
            })
        };
        let seconds = u64::try_from(now.unix_timestamp()).context("signing time before 1970")?;
        let signing_time = x509_cert::time::Time::UtcTime(UtcTime::from_unix_duration(
            Duration::from_secs(seconds),
        )?);
        let digest = OctetString::new(Sha256::digest(content).to_vec())?;
        let signed_attrs = SetOfVec::try_from(vec![
            attr(ATTR_CONTENT_TYPE, Any::encode_from(&ID_DATA)?)?,
            attr(ATTR_SIGNING_TIME, Any::encode_from(&signing_time)?)?,
            attr(ATTR_MESSAGE_DIGEST, Any::encode_from(&digest)?)?,
        ])?;
        // The signature covers the attributes' DER as a SET (RFC 5652 §5.4).
        let to_sign = signed_attrs.to_der()?;
        let signature = self
            .key
            .pkcs1v15_sign::<Sha256>(&to_sign)
            .map_err(|e| anyhow::anyhow!("RSA signing failed: {e}"))?;
        let tbs = self.cert.tbs_certificate();
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: sha256.clone(),
            signed_attrs: Some(signed_attrs),
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            signature: OctetString::new(signature)?,
            unsigned_attrs: None,
        };
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: None,
            },
            certificates: Some(CertificateSet(SetOfVec::try_from(vec![
                CertificateChoices::Certificate(self.cert.clone()),
                CertificateChoices::Certificate(self.wwdr.clone()),
            ])?)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer])?),
        };
        let info = ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed)?,
        };
        Ok(info.to_der()?)
    }
}

/// The RSA public key of a certificate.
pub fn public_key(cert: &Certificate) -> anyhow::Result<rsa::PublicKey> {
    let spki = cert.tbs_certificate().subject_public_key_info().to_der()?;
    rsa::PublicKey::from_public_key_der(&spki).map_err(|e| anyhow::anyhow!("not an RSA key: {e}"))
}
