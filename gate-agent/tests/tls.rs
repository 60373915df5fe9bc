//! HTTPS end to end: a venue CA and a server certificate made in the test (rcgen), the real
//! server serving HTTPS with them (`--tls-cert`/`--tls-key`), a real `gate-agent` enrolling and
//! pushing a scan over HTTPS because it trusts the venue CA (`--ca-cert`), and refusing the server
//! without it. The same run checks that enrollment registers each gate's own mesh key and that
//! deactivating a gate takes its key out of the configurations the other gates pull (DESIGN §8).
//!
//! Real processes, real TLS over loopback, real PostgreSQL; see `e2e_support`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod e2e_support;

use std::path::{Path, PathBuf};
use std::process::Output;

use e2e_support::*;
use gate_agent::replica::Replica;
use reqwest::Method;
use serde_json::{Value, json};

/// A venue CA and a server certificate for 127.0.0.1 and localhost it issued, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Venue test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "usher test server");
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            dir,
        }
    }
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

async fn agent(dir: &Path, args: &[&str], ca: Option<&Path>) -> Output {
    let mut cmd = tokio::process::Command::new(agent_bin());
    cmd.args(args).arg("--data-dir").arg(dir);
    if let Some(ca) = ca {
        cmd.arg("--ca-cert").arg(ca);
    }
    cmd.env_remove("USHER_CA_CERT");
    cmd.output().await.expect("run gate-agent")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The gate configuration `of` as the replica in `dir` holds it.
fn config_in(dir: &Path, of: &str) -> sync_protocol::wire::GateConfig {
    let r = Replica::open(&dir.join("replica.db")).unwrap();
    r.gate_config(uuid::Uuid::parse_str(of).unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("no configuration of gate {of} in {}", dir.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_enrolls_and_pushes_over_https_only_when_it_trusts_the_venue_ca() {
    let pki = Pki::new();
    let pg = PgDatabase::create("usher_tls")
        .await
        .expect("a fresh PostgreSQL database");
    let server_dir = tempfile::tempdir().unwrap();
    let (cert, key) = (pki.cert(), pki.key());
    let server = Server::start_with(server_dir.path(), &pg.url, free_port(), |s| {
        s.tls_cert = Some(cert);
        s.tls_key = Some(key);
    })
    .await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let password = server.initial_admin_password.clone().unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let api = Api::login_with(client, &server.base, ADMIN_EMAIL, &password).await;
    let event = api.create_event("HTTPS e2e").await;
    let ada = api.create_participant(&event, "Ada Lovelace").await;
    let north = api.create_gate(&event, "North").await;
    let south = api.create_gate(&event, "South").await;

    // TLS 1.3 by default; a client that offers TLS 1.2 only is served too.
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let ca_pem = pki.ca_pem.clone();
    let versions = tokio::task::spawn_blocking(move || {
        [
            &[&rustls::version::TLS13, &rustls::version::TLS12][..],
            &[&rustls::version::TLS12][..],
        ]
        .map(|offered| handshake(port, &ca_pem, offered))
    })
    .await
    .unwrap();
    assert_eq!(
        versions,
        [
            rustls::ProtocolVersion::TLSv1_3,
            rustls::ProtocolVersion::TLSv1_2
        ]
    );

    // Plain HTTP to the HTTPS listener gets no answer.
    let plain = reqwest::Client::new()
        .get(server.base.replace("https://", "http://") + "/healthz")
        .send()
        .await;
    assert!(
        plain.as_ref().map(|r| r.status().is_success()).ok() != Some(true),
        "{plain:?}"
    );

    // Without the venue CA the gate does not connect, and says why.
    let code = api.enrollment_code(&event, &north).await;
    let north_dir = tempfile::tempdir().unwrap();
    let enroll = ["enroll", "--server", &server.base, "--code", &code];
    let out = agent(north_dir.path(), &enroll, None).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("certificate") && err.contains("unknownissuer"),
        "{}",
        text(&out)
    );

    // With it, the same code works (the refused attempt never reached the server).
    let out = agent(north_dir.path(), &enroll, Some(&pki.ca())).await;
    assert!(out.status.success(), "{}", text(&out));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["gate_id"], json!(north));

    // A scan at the door, pushed over HTTPS.
    let out = agent(north_dir.path(), &["scan", &ada.credential], None).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = agent(north_dir.path(), &["sync"], None).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        text(&out)
    );
    let out = agent(north_dir.path(), &["sync"], Some(&pki.ca())).await;
    assert!(out.status.success(), "{}", text(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["pushed"], 1, "{stats}");
    let checkins = api.checkins(&event).await;
    assert_eq!(checkins.len(), 1, "{checkins:?}");
    assert_eq!(checkins[0]["ticket_serial"], json!(ada.serial));
    assert_eq!(checkins[0]["gate_id"], json!(north));

    // The second gate enrolls; each gate's own mesh key reaches the other's replica.
    let south_dir = tempfile::tempdir().unwrap();
    let code = api.enrollment_code(&event, &south).await;
    let out = agent(
        south_dir.path(),
        &["enroll", "--server", &server.base, "--code", &code],
        Some(&pki.ca()),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = agent(north_dir.path(), &["sync"], Some(&pki.ca())).await;
    assert!(out.status.success(), "{}", text(&out));
    let key_of = |dir: &Path| {
        Replica::open(&dir.join("replica.db"))
            .unwrap()
            .mesh_public_key_hex()
    };
    let south_key = key_of(south_dir.path());
    let north_key = key_of(north_dir.path());
    assert_ne!(south_key, north_key);
    let seen_by_north = config_in(north_dir.path(), &south);
    assert_eq!(seen_by_north.mesh_public_key.as_deref(), Some(&*south_key));
    assert_eq!(seen_by_north.mesh_key, None, "no shared mesh key");
    let seen_by_south = config_in(south_dir.path(), &north);
    assert_eq!(seen_by_south.mesh_public_key.as_deref(), Some(&*north_key));

    // Deactivating south takes its key out of the configuration north pulls.
    api.call(
        Method::PATCH,
        &format!("/api/v1/events/{event}/gates/{south}"),
        Some(json!({"is_active": false})),
    )
    .await
    .expect_status(200);
    let out = agent(north_dir.path(), &["sync"], Some(&pki.ca())).await;
    assert!(out.status.success(), "{}", text(&out));
    let seen_by_north = config_in(north_dir.path(), &south);
    assert!(!seen_by_north.is_active);
    assert_eq!(seen_by_north.mesh_public_key, None);

    // A bad mesh key at enrollment is refused, naming the field.
    let code = api.enrollment_code(&event, &north).await;
    let reply = api
        .call(
            Method::POST,
            "/sync/v1/enroll",
            Some(json!({"code": code, "device_name": "x", "mesh_public_key": "zz"})),
        )
        .await;
    let body = reply.expect_status(422);
    assert!(body.to_string().contains("mesh_public_key"), "{body}");

    // The replica never holds the server credential in plain text, and its files are private.
    let credential = Replica::open(&north_dir.path().join("replica.db"))
        .unwrap()
        .require_enrollment()
        .unwrap()
        .credential;
    assert!(credential.len() >= 20);
    assert_private_and_without(north_dir.path(), credential.as_bytes());
    server.stop().await;
}

/// Completes a TLS handshake with the server on `port` offering `versions`, trusting the CA in
/// `ca_pem` only; the version agreed.
fn handshake(
    port: u16,
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ProtocolVersion {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::io::Write;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    tls.flush().unwrap();
    conn.protocol_version().unwrap()
}

/// Every replica file in `dir` (database, WAL, shared memory) and the key file are 0600, and
/// none of the replica files holds `secret`.
fn assert_private_and_without(dir: &Path, secret: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("replica.db") || name == "gate.key") {
            continue;
        }
        seen += 1;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        if name.starts_with("replica.db") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{name} holds the credential in plain text"
            );
        }
    }
    assert!(seen >= 2, "no replica files in {}", dir.display());
}

#[tokio::test]
async fn a_bad_certificate_or_key_stops_the_start_naming_the_option() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let start = |cert: Option<PathBuf>, key: Option<PathBuf>| {
        let mut s = server::Settings::for_test(dir.path().to_path_buf(), None);
        s.tls_cert = cert;
        s.tls_key = key;
        async move {
            match server::build(s).await {
                Ok(_) => panic!("the server started"),
                Err(e) => format!("{e:#}"),
            }
        }
    };
    let missing = dir.path().join("missing.pem");
    let err = start(Some(missing.clone()), Some(pki.key())).await;
    assert!(
        err.contains("--tls-cert") && err.contains("missing.pem"),
        "{err}"
    );
    let err = start(Some(pki.cert()), Some(missing)).await;
    assert!(err.contains("--tls-key"), "{err}");
    // A certificate file holding a key, and a key file holding a certificate.
    let err = start(Some(pki.key()), Some(pki.key())).await;
    assert!(err.contains("--tls-cert"), "{err}");
    let err = start(Some(pki.cert()), Some(pki.cert())).await;
    assert!(err.contains("--tls-key"), "{err}");
    // A key that is not the certificate's.
    let other = rcgen::KeyPair::generate().unwrap();
    let other_path = dir.path().join("other.key");
    std::fs::write(&other_path, other.serialize_pem()).unwrap();
    let err = start(Some(pki.cert()), Some(other_path)).await;
    assert!(err.contains("--tls-key"), "{err}");
    let err = start(Some(pki.cert()), None).await;
    assert!(err.contains("--tls-key"), "{err}");
}
