//! `systemd-analyze verify` accepts the server's unit in `deploy/systemd/` (the gate agent's unit,
//! the alert rules and the Prometheus scrape are checked in `gate-agent/tests/ops_kit.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

#[test]
fn systemd_accepts_the_server_unit() {
    // The unit names /usr/local/bin/usher-server; verify it with that path pointing at the
    // binary this build produced (systemd-analyze checks that the command exists).
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_server"), bin.join("usher-server")).unwrap();
    let unit = std::fs::read_to_string(deploy.join("usher-server.service")).unwrap();
    assert!(unit.contains("Restart=on-failure") && unit.contains("User=usher"));
    assert!(unit.contains("StateDirectoryMode=0700"));
    let path = dir.path().join("usher-server.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/", &format!("{}/", bin.display())),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
