//! The official Python SDK (lark-oapi, pinned in scripts/sdk.sh) against the emulator: token, a
//! send for every receive_id_type, reply, urgent, batch_get_id, custom-bot webhooks and error
//! answers, each read the way the SDK reads it (tests/sdk/python_sdk.py has the checks); and,
//! where node is, the Node SDK for sends and an error answer (tests/sdk/node_sdk.js).
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

/// The path `scripts/sdk.sh <what>` prints (`python`, `node-dir`).
fn sdk_path(what: &str) -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/sdk.sh"))
        .arg(what)
        .output()
        .expect("run scripts/sdk.sh");
    assert!(
        out.status.success(),
        "scripts/sdk.sh {what} failed: {out:?}"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Whether the SDK tests are skipped on purpose (`LARK_SINK_SKIP_SDK=1`).
fn skipped() -> bool {
    let skip = std::env::var("LARK_SINK_SKIP_SDK").as_deref() == Ok("1");
    if skip {
        eprintln!("LARK_SINK_SKIP_SDK=1: the SDK test is skipped");
    }
    skip
}

/// Fails, saying how to install it, when `path` (part of an SDK install) is missing.
fn require_installed(what: &str, path: &Path) {
    assert!(
        path.exists(),
        "the {what} is not installed ({} is missing): run scripts/sdk.sh install \
         (or set LARK_SINK_SKIP_SDK=1 to skip this test on purpose)",
        path.display()
    );
}

/// Runs one SDK script against a fresh emulator with the demo app's credentials and fails with
/// every check it failed.
async fn run_against_emulator(mut cmd: tokio::process::Command, script: &str) {
    let lark = start_emulator_with(EmulatorConfig::default()).await;
    let app = &EmulatorConfig::default().directory.apps[0];
    let out = cmd
        .arg(root().join("tests/sdk").join(script))
        .arg(lark.base_url())
        .arg(&app.app_id)
        .arg(&app.app_secret)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run tests/sdk/{script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success(),
        "{script}: the SDK read the emulator unlike Lark ({}):\n{}\n{stderr}",
        out.status,
        failures.join("\n")
    );
    assert!(
        stdout.contains("\"failures\": []") || stdout.contains("\"failures\":[]"),
        "{script} did not finish: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_reads_the_emulator_like_lark() {
    if skipped() {
        return;
    }
    let python = sdk_path("python");
    require_installed("Python SDK", &python);
    run_against_emulator(tokio::process::Command::new(python), "python_sdk.py").await;
}

/// The Node SDK is optional (installed only where `node` is): without `node` this test says so and
/// passes; with `node` but no SDK it fails like the Python one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_reads_the_emulator_like_lark() {
    if skipped() {
        return;
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no node on PATH: the Node SDK test is skipped (the Node SDK is optional)");
        return;
    }
    let modules = sdk_path("node-dir").join("node_modules");
    require_installed(
        "Node SDK",
        &modules.join("@larksuiteoapi/node-sdk/package.json"),
    );
    let mut node = tokio::process::Command::new("node");
    node.env("NODE_PATH", modules);
    run_against_emulator(node, "node_sdk.js").await;
}
