//! The official Python SDK (lark-oapi, pinned in scripts/sdk.sh) against the emulator: token, a
//! send for every receive_id_type, reply, urgent, batch_get_id, custom-bot webhooks and error
//! answers, each read the way the SDK reads it (tests/sdk/python_sdk.py has the checks).
//!
//! Why: the emulator is written from lark-api.md, and lark-sink's own client is written from the
//! same text, so a misreading of Lark would be shared by both and no other test would see it. The
//! SDK is an independent reader of the real platform: a header it looks up by its exact name, a
//! field it expects elsewhere, a code it reads differently shows up here.
//!
//! The SDK is installed by `scripts/sdk.sh install` (scripts/test.sh runs it). Without it this
//! test fails and says so; `LARK_SINK_SKIP_SDK=1` skips it on purpose.

use std::path::{Path, PathBuf};

use lark_sink_e2e::*;

/// The repository root (this package lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The virtualenv's python, as scripts/sdk.sh names it; `None` when skipped on purpose.
fn sdk_python() -> Option<PathBuf> {
    if std::env::var("LARK_SINK_SKIP_SDK").as_deref() == Ok("1") {
        eprintln!("LARK_SINK_SKIP_SDK=1: the SDK test is skipped");
        return None;
    }
    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/sdk.sh"))
        .arg("python")
        .output()
        .expect("run scripts/sdk.sh python");
    assert!(
        out.status.success(),
        "scripts/sdk.sh python failed: {out:?}"
    );
    let python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        python.exists(),
        "the Python SDK is not installed ({} is missing): run scripts/sdk.sh install \
         (or set LARK_SINK_SKIP_SDK=1 to skip this test on purpose)",
        python.display()
    );
    Some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_reads_the_emulator_like_lark() {
    let Some(python) = sdk_python() else {
        return;
    };
    let lark = start_emulator_with(EmulatorConfig::default()).await;
    let app = &EmulatorConfig::default().directory.apps[0];
    let out = tokio::process::Command::new(&python)
        .arg(root().join("tests/sdk/python_sdk.py"))
        .arg(lark.base_url())
        .arg(&app.app_id)
        .arg(&app.app_secret)
        .output()
        .await
        .expect("run tests/sdk/python_sdk.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success(),
        "the SDK read the emulator unlike Lark ({}):\n{}\n{stderr}",
        out.status,
        failures.join("\n")
    );
    assert!(
        stdout.contains("\"failures\": []"),
        "the script did not finish: {stdout}"
    );
}
