//! A check-in shown as admitted survives kill -9: a real `gate-agent run` process scanning
//! 1,000 tickets from a piped scanner is killed with SIGKILL at random moments and restarted.
//! Every decision it reported is in the outbox afterwards, exactly once, and no ticket is
//! admitted twice across the restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use gate_agent::replica::Replica;
use sync_protocol::wire::Decision;

const TICKETS: u64 = 1_000;

#[derive(Debug, Clone)]
struct Reported {
    id: String,
    serial: Option<u64>,
    decision: String,
}

/// Index of the first ticket with no reported decision. A ticket committed but killed before
/// its line was printed is re-presented and then reported as `already_inside`: processed.
fn first_unprocessed(reported: &[Reported]) -> usize {
    let seen: HashSet<u64> = reported.iter().filter_map(|r| r.serial).collect();
    (1..=TICKETS).take_while(|s| seen.contains(s)).count()
}

#[test]
fn every_reported_admission_survives_sigkill_and_none_is_admitted_twice() {
    let f = fixture(TICKETS, |g| g.allow_reentry = false);
    let tickets: Vec<String> = (1..=TICKETS).map(|s| f.ticket(s).encode()).collect();
    let mut reported: Vec<Reported> = Vec::new();
    let mut next = 0usize; // first ticket not yet reported
    let mut kills = 0;
    // xorshift for reproducible "random" kill moments
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };

    while next < tickets.len() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gate-agent"))
            .args([
                "run",
                "--no-sync",
                "--no-ui",
                "--dedupe-ms",
                "0",
                "--data-dir",
            ])
            .arg(f.dir.path())
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gate-agent run");
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<Reported>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
                let _ = tx.send(Reported {
                    id: v["id"].as_str().unwrap_or_default().to_string(),
                    serial: v["ticket_serial"].as_u64(),
                    decision: v["decision"].as_str().unwrap_or_default().to_string(),
                });
            }
        });
        // Re-present a few tickets that were already admitted: they must be rejected.
        let mut feed: Vec<String> = Vec::new();
        if !reported.is_empty() {
            for _ in 0..3 {
                let r = &reported[rnd(reported.len() as u64) as usize];
                if let Some(s) = r.serial {
                    feed.push(tickets[(s - 1) as usize].clone());
                }
            }
        }
        feed.extend(tickets[next..].iter().cloned());
        let kill_after = Duration::from_millis(3 + rnd(40));
        let writer = std::thread::spawn(move || {
            for t in feed {
                if writeln!(stdin, "{t}").is_err() {
                    break;
                }
            }
            stdin
        });
        let started = Instant::now();
        let last_run = kills >= 12;
        let mut got_this_run = 0usize;
        loop {
            let timeout = if last_run {
                Duration::from_secs(30)
            } else {
                kill_after.saturating_sub(started.elapsed())
            };
            match rx.recv_timeout(timeout) {
                Ok(r) => {
                    got_this_run += 1;
                    reported.push(r);
                    if first_unprocessed(&reported) >= tickets.len() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let _ = writer.join();
        let _ = reader.join();
        // Lines that were already in the pipe when the process died count as reported.
        while let Ok(r) = rx.try_recv() {
            got_this_run += 1;
            reported.push(r);
        }
        kills += 1;
        assert!(got_this_run > 0 || !last_run, "the gate made no progress");
        assert!(kills < 200, "too many restarts");
        next = first_unprocessed(&reported);
    }
    assert!(kills >= 5, "the process was killed only {kills} times");

    let replica = Replica::open(&f.path()).unwrap();
    let log = replica.all_checkins().unwrap();
    let by_id: HashMap<String, &gate_agent::replica::OutboxRow> =
        log.iter().map(|r| (r.checkin.id.to_string(), r)).collect();
    assert_eq!(by_id.len(), log.len(), "no check-in id stored twice");
    for r in &reported {
        let stored = by_id
            .get(&r.id)
            .unwrap_or_else(|| panic!("reported {} ({}) is not in the outbox", r.id, r.decision));
        assert_eq!(
            stored.checkin.decision == Decision::Admit,
            r.decision == "admit"
        );
    }
    let mut admits: HashMap<u64, usize> = HashMap::new();
    for row in &log {
        if row.checkin.decision == Decision::Admit {
            *admits
                .entry(row.checkin.ticket_serial.unwrap())
                .or_default() += 1;
        }
    }
    assert_eq!(admits.len() as u64, TICKETS, "every ticket admitted");
    assert!(
        admits.values().all(|&n| n == 1),
        "a ticket was admitted twice"
    );
    let seqs: Vec<u64> = log.iter().map(|r| r.checkin.seq).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "dense seq"
    );
    eprintln!(
        "{kills} kills, {} decisions reported, {} stored",
        reported.len(),
        log.len()
    );
}
