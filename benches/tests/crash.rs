//! The crash test (see `rag_benches::crash`): 30 SIGKILLs of a writing child
//! process, each followed by recovery and a check against the model of the
//! acknowledged writes. The report binary `durability` runs 300 and more.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    missing_docs
)]

use std::process::Command;

use rag_benches::crash;

/// The child: only does something when the parent set its environment.
#[test]
#[ignore = "run by acknowledged_writes_survive_sigkill as its child process"]
fn crash_child() {
    if std::env::var_os(crash::ENV_DIR).is_some() {
        crash::child().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let report = crash::run(dir.path(), 30, 20261201, 400, || {
        let mut c = Command::new(&exe);
        c.args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ]);
        c
    })
    .unwrap();
    println!("{report:?}");
    assert_eq!(report.kills, 30);
    assert!(
        report.acknowledged > 100,
        "too few writes to mean anything: {report:?}"
    );
    assert_eq!(report.violations, 0, "{:?}", report.failures);
}
