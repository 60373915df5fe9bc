//! Replays every file of the fuzz corpus (`fuzz/corpus/<target>/`) through the same target
//! functions the libFuzzer binaries run (`fuzz/targets/mod.rs`), on the stable toolchain: every
//! `cargo test --workspace` exercises the seeds and each input a fuzz run once crashed on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/targets/mod.rs"]
mod targets;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn files_of(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus of {target} ({}): {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut total = 0;
    for (name, target) in targets::TARGETS {
        let files = files_of(name);
        assert!(
            files.len() >= 3,
            "target {name} has {} seed files, want at least 3",
            files.len()
        );
        for path in &files {
            let data = std::fs::read(path).unwrap();
            // A panic names the file: the failure message of the test shows which input.
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} crashes it", path.display());
        }
        eprintln!("{name}: {} files", files.len());
        total += files.len();
    }
    eprintln!("{total} corpus files replayed");
}

#[test]
fn every_corpus_directory_is_a_target() {
    let dirs: BTreeSet<String> = std::fs::read_dir(corpus_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let names: BTreeSet<String> = targets::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    assert_eq!(
        dirs, names,
        "fuzz/corpus/ directories and the targets differ"
    );
    // And each target has its libFuzzer binary.
    for name in &names {
        let bin = corpus_root().join(format!("../fuzz_targets/{name}.rs"));
        assert!(bin.is_file(), "no {}", bin.display());
    }
}

/// The credential seeds include real tickets signed with the test key (so the fuzzer starts
/// from inputs that pass verification and reach the gate's checks), and a forged one that
/// decodes but does not verify.
#[test]
fn the_credential_seeds_include_real_and_forged_tickets() {
    let mut signed = 0;
    let mut forged = 0;
    for path in files_of("credentials") {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if targets::is_test_signed(&text) {
            signed += 1;
        } else if sync_protocol::SignedTicket::decode(&text).is_ok() {
            forged += 1;
        }
    }
    assert!(signed >= 3, "{signed} test-signed tickets in the corpus");
    assert!(forged >= 1, "{forged} forged tickets in the corpus");
}
