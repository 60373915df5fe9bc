//! Wallet passes against the test keys in `testdata/wallet/`: the `.pkpass` is unzipped, every
//! manifest hash recomputed, the CMS signature verified in Rust against the test certificates
//! (and with `openssl cms -verify` where the command exists); the Google Wallet save link's JWT
//! is verified with the service account's public key and its claims read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use cms::content_info::ContentInfo;
use cms::signed_data::{CertificateSet, SignedData, SignerIdentifier};
use rsa::pkcs8::DecodePublicKey;
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::asn1::OctetString;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, DecodePem, Encode};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, spawn_app_with};

const ID_DATA: &str = "1.2.840.113549.1.7.1";
const ID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";

fn wallet_file(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/../testdata/wallet/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// A server with both wallets configured with the test keys.
async fn wallet_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.wallet_pass_type_id = Some("pass.org.usher.test".into());
        s.wallet_team_id = Some("USHERTEST1".into());
        s.wallet_cert = Some(wallet_file("pass.pem"));
        s.wallet_key = Some(wallet_file("pass.key"));
        s.wallet_wwdr = Some(wallet_file("wwdr.pem"));
        s.wallet_organization = "Usher Test Events".into();
        s.google_wallet_key = Some(wallet_file("google-service-account.json"));
        s.google_wallet_issuer_id = Some("3388000000012345678".into());
    })
    .await
}

macro_rules! wallet_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::wallet_app($crate::helpers::Backend::Sqlite).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(super::wallet_app($crate::helpers::Backend::Postgres).await).await;
                }
            }
        )*
    };
}

wallet_tests!(
    the_pkpass_is_signed_and_every_manifest_hash_matches,
    the_google_save_link_is_an_rs256_jwt_holding_the_credential,
);
backend_tests!(wallet_endpoints_answer_409_naming_the_settings_when_unconfigured);

/// An event with a venue location and one participant; returns (event id, participant JSON).
async fn ticket_holder(app: &TestApp) -> (String, Value) {
    let r = app
        .post(
            Some(&app.admin),
            "/api/v1/events",
            json!({"name": "Rust Conf", "starts_at": "2026-12-01T09:00:00Z",
                   "ends_at": "2026-12-01T18:00:00Z", "venue": "Hall A",
                   "settings": {"venue_location": {"latitude": 52.52, "longitude": 13.405}}}),
        )
        .await;
    let ev = r.assert_status(201)["id"].as_str().unwrap().to_owned();
    let p = app
        .create_participant(
            &ev,
            json!({"name": "Minji Kim", "organization": "Ferris Ltd", "ticket_type": "Speaker"}),
        )
        .await;
    (ev, p)
}

fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        files.insert(f.name().unwrap().into_owned(), data);
    }
    files
}

fn pem_cert(name: &str) -> Certificate {
    Certificate::from_pem(std::fs::read(wallet_file(name)).unwrap()).unwrap()
}

fn rsa_public(cert: &Certificate) -> rsa::PublicKey {
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap();
    rsa::PublicKey::from_public_key_der(&spki).unwrap()
}

/// Verifies a detached CMS signature over `content` as a pass reader would: the message digest
/// attribute equals SHA-256 of the content, the signer's certificate is the test pass
/// certificate, its RSA signature over the signed attributes verifies, and the test WWDR
/// certificate signed it.
fn verify_cms(signature: &[u8], content: &[u8]) -> Result<(), String> {
    let info = ContentInfo::from_der(signature).map_err(|e| e.to_string())?;
    if info.content_type != ObjectIdentifier::new_unwrap(ID_SIGNED_DATA) {
        return Err("not SignedData".into());
    }
    let signed: SignedData = info
        .content
        .decode_as::<SignedData>()
        .map_err(|e| e.to_string())?;
    if signed.encap_content_info.econtent.is_some() {
        return Err("the signature is not detached".into());
    }
    let pass = pem_cert("pass.pem");
    let wwdr = pem_cert("wwdr.pem");
    let CertificateSet(certs) = signed.certificates.ok_or("no certificates")?;
    let ders: Vec<Vec<u8>> = certs.iter().map(|c| c.to_der().unwrap()).collect();
    for (what, cert) in [("pass", &pass), ("WWDR", &wwdr)] {
        if !ders.contains(&cert.to_der().unwrap()) {
            return Err(format!("the {what} certificate is not included"));
        }
    }
    let signers: Vec<_> = signed.signer_infos.0.iter().collect();
    if signers.len() != 1 {
        return Err(format!("{} signers", signers.len()));
    }
    let signer = signers[0];
    match &signer.sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            if isn.issuer != *pass.tbs_certificate().issuer()
                || isn.serial_number != *pass.tbs_certificate().serial_number()
            {
                return Err("the signer is not the pass certificate".into());
            }
        }
        SignerIdentifier::SubjectKeyIdentifier(_) => return Err("signer by key id".into()),
    }
    let attrs = signer.signed_attrs.as_ref().ok_or("no signed attributes")?;
    let find = |oid: &str| {
        attrs
            .iter()
            .find(|a| a.oid == ObjectIdentifier::new_unwrap(oid))
            .and_then(|a| a.values.iter().next().cloned())
    };
    let content_type: ObjectIdentifier = find("1.2.840.113549.1.9.3")
        .ok_or("no content type attribute")?
        .decode_as::<ObjectIdentifier>()
        .map_err(|e| e.to_string())?;
    if content_type != ObjectIdentifier::new_unwrap(ID_DATA) {
        return Err("content type is not data".into());
    }
    find("1.2.840.113549.1.9.5").ok_or("no signing time")?;
    let digest: OctetString = find("1.2.840.113549.1.9.4")
        .ok_or("no message digest")?
        .decode_as::<OctetString>()
        .map_err(|e| e.to_string())?;
    if digest.as_bytes() != Sha256::digest(content).as_slice() {
        return Err("the message digest does not match the manifest".into());
    }
    rsa_public(&pass)
        .pkcs1v15_verify::<Sha256>(
            &attrs.to_der().map_err(|e| e.to_string())?,
            signer.signature.as_bytes(),
        )
        .map_err(|e| format!("RSA signature: {e}"))?;
    rsa_public(&wwdr)
        .pkcs1v15_verify::<Sha256>(
            &pass.tbs_certificate().to_der().unwrap(),
            pass.signature().raw_bytes(),
        )
        .map_err(|e| format!("the WWDR certificate did not sign the pass certificate: {e}"))?;
    Ok(())
}

/// `openssl cms -verify` of a detached signature; `None` without the command.
fn openssl_verify(signature: &[u8], content: &[u8]) -> Option<bool> {
    let openssl = std::path::Path::new("/usr/bin/openssl");
    if !openssl.exists() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signature"), signature).unwrap();
    std::fs::write(dir.path().join("manifest.json"), content).unwrap();
    let status = std::process::Command::new(openssl)
        .current_dir(dir.path())
        .args([
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "signature",
        ])
        .args([
            "-content",
            "manifest.json",
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ])
        .arg("-CAfile")
        .arg(wallet_file("wwdr.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    Some(status.success())
}

async fn the_pkpass_is_signed_and_every_manifest_hash_matches(app: TestApp) {
    let (ev, p) = ticket_holder(&app).await;
    let id = p["id"].as_str().unwrap();
    let credential = p["ticket"]["credential"].as_str().unwrap();
    let short_code = p["ticket"]["short_code"].as_str().unwrap();

    let path = format!("/api/v1/events/{ev}/participants/{id}/ticket.pkpass");
    let resp = app
        .client
        .get(app.url(&path))
        .bearer_auth(&app.staff)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.apple.pkpass"
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let files = unzip(&resp.bytes().await.unwrap());

    for required in [
        "pass.json",
        "manifest.json",
        "signature",
        "icon.png",
        "logo.png",
    ] {
        assert!(files.contains_key(required), "{required} is in the pass");
    }
    let manifest: BTreeMap<String, String> =
        serde_json::from_slice(&files["manifest.json"]).unwrap();
    let listed: Vec<&String> = manifest.keys().collect();
    let present: Vec<&String> = files
        .keys()
        .filter(|n| *n != "manifest.json" && *n != "signature")
        .collect();
    assert_eq!(
        listed, present,
        "the manifest lists every file but itself and the signature"
    );
    for (name, hash) in &manifest {
        assert_eq!(
            hex::encode(Sha1::digest(&files[name])),
            *hash,
            "SHA-1 of {name}"
        );
    }
    for icon in ["icon.png", "icon@2x.png"] {
        let img = image::load_from_memory(&files[icon]).expect("the icon is a PNG");
        assert_eq!(img.width(), img.height());
    }

    let pass: Value = serde_json::from_slice(&files["pass.json"]).unwrap();
    assert_eq!(pass["formatVersion"], 1);
    assert_eq!(pass["passTypeIdentifier"], "pass.org.usher.test");
    assert_eq!(pass["teamIdentifier"], "USHERTEST1");
    assert_eq!(pass["organizationName"], "Usher Test Events");
    assert_eq!(
        pass["serialNumber"],
        format!("{ev}-{}", p["ticket"]["serial"])
    );
    assert_eq!(pass["relevantDate"], "2026-12-01T09:00:00Z");
    assert_eq!(pass["barcodes"][0]["format"], "PKBarcodeFormatQR");
    assert_eq!(pass["barcodes"][0]["message"], credential);
    assert_eq!(pass["barcodes"][0]["altText"], short_code);
    assert_eq!(pass["locations"][0]["latitude"], 52.52);
    assert_eq!(pass["locations"][0]["longitude"], 13.405);
    let ticket = &pass["eventTicket"];
    assert_eq!(ticket["primaryFields"][0]["value"], "Rust Conf");
    let values: Vec<&Value> = ["secondaryFields", "auxiliaryFields", "backFields"]
        .iter()
        .flat_map(|k| ticket[*k].as_array().unwrap())
        .map(|f| &f["value"])
        .collect();
    for want in ["Minji Kim", "Speaker", "Ferris Ltd", "Hall A", short_code] {
        assert!(values.contains(&&json!(want)), "{want} in {values:?}");
    }

    let signature = &files["signature"];
    let manifest_bytes = &files["manifest.json"];
    verify_cms(signature, manifest_bytes).expect("the signature verifies");
    let mut tampered = manifest_bytes.clone();
    tampered[5] ^= 1;
    assert!(
        verify_cms(signature, &tampered).is_err(),
        "a changed manifest fails verification"
    );
    if let Some(ok) = openssl_verify(signature, manifest_bytes) {
        assert!(ok, "openssl cms -verify accepts the signature");
        assert_eq!(
            openssl_verify(signature, &tampered),
            Some(false),
            "openssl refuses a changed manifest"
        );
    }
}

async fn the_google_save_link_is_an_rs256_jwt_holding_the_credential(app: TestApp) {
    let (ev, p) = ticket_holder(&app).await;
    let id = p["id"].as_str().unwrap();
    let credential = p["ticket"]["credential"].as_str().unwrap();
    let r = app
        .get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}/wallet/google"),
        )
        .await;
    let url = r.assert_status(200)["url"].as_str().unwrap().to_owned();
    let jwt = url
        .strip_prefix("https://pay.google.com/gp/v/save/")
        .expect("a save URL");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "0123456789abcdef0123456789abcdef01234567");
    let public = rsa::PublicKey::from_public_key_pem(
        &std::fs::read_to_string(wallet_file("google.pub.pem")).unwrap(),
    )
    .unwrap();
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    let signature = B64.decode(parts[2]).unwrap();
    public
        .pkcs1v15_verify::<Sha256>(signing_input.as_bytes(), &signature)
        .expect("RS256 verifies with the service account's public key");
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    let forged = B64.encode(serde_json::to_vec(&json!({"iss": "someone-else"})).unwrap());
    assert!(
        public
            .pkcs1v15_verify::<Sha256>(format!("{}.{forged}", parts[0]).as_bytes(), &signature)
            .is_err(),
        "other claims do not verify under this signature"
    );

    assert_eq!(
        claims["iss"],
        "usher-wallet@usher-test.iam.gserviceaccount.com"
    );
    assert_eq!(claims["aud"], "google");
    assert_eq!(claims["typ"], "savetowallet");
    assert!(claims["iat"].as_i64().unwrap() > 1_700_000_000);
    let class = &claims["payload"]["eventTicketClasses"][0];
    let object = &claims["payload"]["eventTicketObjects"][0];
    assert_eq!(class["id"], format!("3388000000012345678.usher-{ev}"));
    assert_eq!(class["eventName"]["defaultValue"]["value"], "Rust Conf");
    assert_eq!(object["classId"], class["id"]);
    assert!(
        object["id"]
            .as_str()
            .unwrap()
            .starts_with("3388000000012345678.")
    );
    assert_eq!(object["state"], "ACTIVE");
    assert_eq!(object["barcode"]["type"], "QR_CODE");
    assert_eq!(object["barcode"]["value"], credential);
    assert_eq!(object["ticketHolderName"], "Minji Kim");
    assert_eq!(object["ticketType"]["defaultValue"]["value"], "Speaker");
    assert_eq!(object["ticketNumber"], p["ticket"]["short_code"]);
}

async fn wallet_endpoints_answer_409_naming_the_settings_when_unconfigured(app: TestApp) {
    let event = app.create_event("E").await;
    let ev = event["id"].as_str().unwrap();
    let p = app.create_participant(ev, json!({"name": "A"})).await;
    let id = p["id"].as_str().unwrap();
    let pkpass = format!("/api/v1/events/{ev}/participants/{id}/ticket.pkpass");
    let google = format!("/api/v1/events/{ev}/participants/{id}/wallet/google");
    for (path, setting) in [
        (&pkpass, "USHER_WALLET_CERT"),
        (&google, "USHER_GOOGLE_WALLET_KEY"),
    ] {
        app.get(None, path).await.assert_problem(401, None);
        let r = app.get(Some(&app.admin), path).await;
        r.assert_problem(409, None);
        assert!(
            r.body["detail"].as_str().unwrap().contains(setting),
            "{}",
            r.body
        );
    }
}

/// The same routes on a configured server refuse a revoked ticket and another event's path.
async fn revoked_tickets_get_no_wallet_pass(app: TestApp) {
    let (ev, p) = ticket_holder(&app).await;
    let id = p["id"].as_str().unwrap();
    let other = app.create_event("Other").await;
    let other = other["id"].as_str().unwrap();
    for suffix in ["ticket.pkpass", "wallet/google"] {
        app.get(
            Some(&app.staff),
            &format!("/api/v1/events/{other}/participants/{id}/{suffix}"),
        )
        .await
        .assert_problem(404, None);
    }
    app.post_empty(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}/ticket/revoke"),
    )
    .await
    .assert_status(200);
    for suffix in ["ticket.pkpass", "wallet/google"] {
        app.get(
            Some(&app.staff),
            &format!("/api/v1/events/{ev}/participants/{id}/{suffix}"),
        )
        .await
        .assert_problem(409, None);
    }
}

wallet_tests!(revoked_tickets_get_no_wallet_pass);

/// The ticket e-mail carries both wallet links; the Apple one opens the pass with no account,
/// only for that ticket and only until it is reissued.
async fn ticket_mail_links_open_the_wallet_passes(backend: Backend) {
    let sink = crate::smtp_sink::SmtpSink::start().await;
    let url = sink.url();
    let app = spawn_app_with(backend, |s| {
        s.smtp_url = Some(server::settings::Secret::new(url));
        s.public_url = Some("https://tickets.usher.test/".into());
        s.wallet_pass_type_id = Some("pass.org.usher.test".into());
        s.wallet_team_id = Some("USHERTEST1".into());
        s.wallet_cert = Some(wallet_file("pass.pem"));
        s.wallet_key = Some(wallet_file("pass.key"));
        s.wallet_wwdr = Some(wallet_file("wwdr.pem"));
        s.google_wallet_key = Some(wallet_file("google-service-account.json"));
        s.google_wallet_issuer_id = Some("3388000000012345678".into());
    })
    .await;
    let (ev, p) = ticket_holder(&app).await;
    let id = p["id"].as_str().unwrap();
    let credential = p["ticket"]["credential"].as_str().unwrap();
    app.patch(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}"),
        json!({"email": "minji@example.org"}),
    )
    .await
    .assert_status(200);
    app.post_empty(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/tickets/send"),
    )
    .await
    .assert_status(202);
    let mut text = None;
    for _ in 0..600 {
        if let Some(m) = sink.messages().first() {
            let msg = mail_parser::MessageParser::default()
                .parse(&m.data)
                .unwrap();
            text = Some(msg.body_text(0).unwrap().into_owned());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let text = text.expect("the ticket e-mail arrived");
    let link = |label: &str| -> String {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("{label} in {text}"));
        line.trim().to_owned()
    };
    let apple = link("Add to Apple Wallet:");
    let google = link("Add to Google Wallet:");

    let path = apple
        .strip_prefix("https://tickets.usher.test")
        .expect("the link is on the public address");
    assert!(path.starts_with("/wallet/v1/apple/"), "{path}");
    let r = app.get(None, path).await;
    assert_eq!(r.status.as_u16(), 200, "no account needed");
    assert_eq!(r.content_type, "application/vnd.apple.pkpass");
    let files = unzip(&r.bytes);
    verify_cms(&files["signature"], &files["manifest.json"]).expect("signed");
    let pass: Value = serde_json::from_slice(&files["pass.json"]).unwrap();
    assert_eq!(pass["barcodes"][0]["message"], credential);
    // A changed token opens nothing.
    let mut forged: Vec<char> = path.chars().collect();
    let mid = path.len() - 30;
    forged[mid] = if forged[mid] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    app.get(None, &forged).await.assert_problem(404, None);

    let jwt = google
        .strip_prefix("https://pay.google.com/gp/v/save/")
        .unwrap();
    let claims: Value =
        serde_json::from_slice(&B64.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(
        claims["payload"]["eventTicketObjects"][0]["barcode"]["value"],
        credential
    );

    // After a reissue the old link is dead.
    app.post_empty(
        Some(&app.staff),
        &format!("/api/v1/events/{ev}/participants/{id}/ticket"),
    )
    .await
    .assert_status(201);
    app.get(None, path).await.assert_problem(404, None);
}

mod ticket_mail_links_open_the_wallet_passes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::ticket_mail_links_open_the_wallet_passes(crate::helpers::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::ticket_mail_links_open_the_wallet_passes(crate::helpers::Backend::Postgres).await;
    }
}
