//! `lark-sink check`: the connection test to run before going live.
//!
//! Tapdata and Kafka Connect users expect a "test connection" button; this is that, with the
//! fix for each failure spelt out. It loads the config exactly as `run` does, then asks the
//! broker and Lark, each with a short timeout, and reports one line per check:
//!
//! | id | what is asked |
//! |---|---|
//! | `broker` | a metadata request; librdkafka's own reason on failure (refused, TLS, SASL) |
//! | `topic` | each source topic (or the `topics.regex` matches) exists, with partition counts |
//! | `dlq` | the dead-letter topic exists (`errors.tolerance=all` only) |
//! | `dlq-write` | the dead-letter topic accepts a record (a marked probe, see below) |
//! | `state` | `lark.state.topic` exists compacted with the source's partition count, or will be created |
//! | `credentials` | a tenant token is minted (lark-api.md §1.4: 10003 app id, 10014 secret) |
//! | `send-scope` | the send API accepts the app's scopes (§2.1, 99991672) |
//! | `bot` | the bot ability is on (§3: 230006) |
//! | `contact-scope` | `contact:user.id:readonly`, needed by `receiveType: "phone"` (§5) |
//! | `webhook` | each custom-bot webhook's token and signature (§8), without posting |
//! | `events` | `lark.events.*`: the long connection's endpoint accepts the app, or (http mode) a signed self-test and the challenge are answered by the listener (`events.rs`) |
//!
//! Nothing is delivered to anyone. Three decisions make that true:
//!
//! - **Bot ability and sending scope** are probed with a send to an open_id that cannot exist
//!   (`ou_` + characters no real open_id has; real ones are 32 hex digits). The gateway checks
//!   scopes first (99991672), the IM service then refuses a disabled bot (230006, "Bot ability
//!   is not activated", §3) before it resolves the receiver, and a working bot gets the receiver
//!   refused (230001 `ext=invalid receive_id`, 230034, or 99992351). lark-api.md does not
//!   document this order; the emulator models it, and any other answer is reported as a
//!   warning, never as a pass.
//! - **Webhooks** get a body without `msg_type`: Lark checks the token (19001) and the
//!   signature (19021) before the message (19002 "msg_type need"), so 19002 proves both without
//!   posting. Because §8 does not document that order either, a signed webhook gets a second,
//!   control probe with a wrong signature: only if Lark refuses *that* one with 19021 is the
//!   first answer proof that the secret is right; otherwise the signature is reported as not
//!   verified (a warning). Keyword checks (19024) come after the message check and cannot be
//!   tested without posting.
//! - **DLQ writability** can only be proven by writing. The probe is one small record, marked
//!   with the header `lark-sink.check: probe` and key `lark-sink-check`, whose value says what it
//!   is; DLQ readers and replay tools should skip it (documented in docs/operations.md).
//!   `--no-write` skips the write and only checks that the topic exists.
//!
//! Secrets never reach the output: webhooks are named, not shown (their URL holds the token),
//! and Lark and librdkafka answers carry no credentials.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::ConnectorConfig;

mod events;
mod kafka;
mod lark;

/// The check ids, in report order (also the values `--skip` accepts).
pub const CHECK_IDS: &[&str] = &[
    "broker",
    "topic",
    "dlq",
    "dlq-write",
    "state",
    "credentials",
    "send-scope",
    "bot",
    "contact-scope",
    "events",
    "webhook",
];

/// The open_id of the bot probe: `ou_` and characters (`-`, letters past `f`) that no real
/// open_id (`ou_` + 32 hex digits) contains, so the probe can never reach anyone.
pub const PROBE_OPEN_ID: &str = "ou_lark-sink-check-no-such-user";
/// The mobile of the contact-scope probe: a NANP number reserved for fiction (555-0100).
/// batch_get_id is read-only and outside the monthly quota (lark-api.md §4, §5).
pub const PROBE_MOBILE: &str = "+12025550100";
/// Header (and value) marking the DLQ probe record.
pub const PROBE_HEADER: &str = "lark-sink.check";

/// The command line of `lark-sink check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connector config file (see docs/configuration.md).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Time limit of each check, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Do not write the probe record that proves the dead-letter topic is writable.
    #[arg(long)]
    pub no_write: bool,
    /// Checks not to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(CHECK_IDS))]
    pub skip: Vec<String>,
}

/// Prints the report and returns its exit code: 0 if nothing failed, 1 if a check failed, 2 if
/// the config itself is invalid (printed here, so nothing is left for the caller to report).
pub async fn command(args: Args) -> ExitCode {
    // The config is loaded as `run` loads it, so its errors read the same; exit code 2 tells
    // them apart from a failed check.
    let cfg = match ConnectorConfig::from_file(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "lark-sink check: connector '{}' ({})",
        cfg.name,
        args.config.display()
    );
    let opts = CheckOptions {
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        write_probe: !args.no_write,
        skip: args.skip,
    };
    let report = run(&cfg, &opts, |f| println!("{f}")).await;
    println!("{}", report.summary());
    match report.passed() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Per check (each Lark request, the broker metadata, the probe write).
    pub timeout: Duration,
    /// Write the probe record to the DLQ (`--no-write` turns it off).
    pub write_probe: bool,
    /// Check ids not to run (reported as SKIP).
    pub skip: Vec<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            timeout: Duration::from_secs(10),
            write_probe: true,
            skip: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The answer was unexpected or only partly conclusive; does not fail the run.
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One line of the report (and, for failures, the fix).
#[derive(Debug, Clone)]
pub struct Finding {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<5} {:<14} {}",
            self.status.label(),
            self.id,
            self.detail
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "\n{:<20} fix: {fix}", "")?;
        }
        Ok(())
    }
}

pub(super) fn finding(id: &'static str, status: Status, detail: impl Into<String>) -> Finding {
    Finding {
        id,
        status,
        detail: detail.into(),
        fix: None,
    }
}

/// A WARN line: an answer that does not fail the run but is not a pass either.
pub(super) fn warn(id: &'static str, detail: impl Into<String>) -> Finding {
    finding(id, Status::Warn, detail)
}

impl Finding {
    /// The same line, with what to do about it.
    pub(super) fn with_fix(self, fix: impl Into<String>) -> Finding {
        Finding {
            fix: Some(fix.into()),
            ..self
        }
    }
}

pub(super) fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        id,
        status: Status::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// All findings of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }
    pub fn passed(&self) -> bool {
        self.count(Status::Fail) == 0
    }
    pub fn summary(&self) -> String {
        format!(
            "{} ok, {} failed, {} warnings, {} skipped",
            self.count(Status::Ok),
            self.count(Status::Fail),
            self.count(Status::Warn),
            self.count(Status::Skip)
        )
    }
}

/// Runs every check in order; `emit` is called with each finding as soon as it is known.
pub async fn run(cfg: &ConnectorConfig, opts: &CheckOptions, emit: impl FnMut(&Finding)) -> Report {
    let mut checks = Checks {
        skip: &opts.skip,
        report: Report::default(),
        emit,
    };
    kafka::checks(&mut checks, cfg, opts).await;
    // Lark: the app (token, scopes, bot), then each webhook.
    lark::app_checks(&mut checks, cfg, opts).await;
    lark::webhook_checks(&mut checks, cfg, opts).await;
    checks.report
}

/// A run in progress: the findings so far, the `--skip` list, and the rule that decides whether
/// a check runs, in one place instead of one hand-written branch per check.
pub(super) struct Checks<'a, E: FnMut(&Finding)> {
    /// The check ids `--skip` names.
    skip: &'a [String],
    report: Report,
    /// Called with each finding as it is pushed, so the report streams.
    emit: E,
}

impl<E: FnMut(&Finding)> Checks<'_, E> {
    pub(super) fn push(&mut self, f: Finding) {
        (self.emit)(&f);
        self.report.findings.push(f);
    }

    /// The `--skip` gate of check `id`, for a gate list.
    pub(super) fn flag(&self, id: &str) -> Result<(), String> {
        needs(!self.skip.iter().any(|s| s == id), "skipped (--skip)")
    }

    /// Pushes `f` unless `--skip` names it (then its SKIP line instead).
    pub(super) fn push_unless_flagged(&mut self, f: Finding) {
        match self.flag(f.id) {
            Ok(()) => self.push(f),
            Err(why) => self.push(finding(f.id, Status::Skip, why)),
        }
    }

    /// The SKIP line of check `id` if one of `gates` (checked in order) stops it; `None` if it
    /// is to run.
    pub(super) fn gate<const N: usize>(
        &self,
        id: &'static str,
        gates: [Result<(), String>; N],
    ) -> Option<Finding> {
        let why = gates.into_iter().find_map(Result::err)?;
        Some(finding(id, Status::Skip, why))
    }

    /// Whether check `id` runs; if a gate stops it, its SKIP line is reported here.
    pub(super) fn step<const N: usize>(
        &mut self,
        id: &'static str,
        gates: [Result<(), String>; N],
    ) -> bool {
        match self.gate(id, gates) {
            Some(skip) => {
                self.push(skip);
                false
            }
            None => true,
        }
    }
}

/// A gate: `Ok` if `ok`, else the reason the check is not run.
pub(super) fn needs(ok: bool, reason: &str) -> Result<(), String> {
    match ok {
        true => Ok(()),
        false => Err(reason.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_open_id_cannot_be_a_real_one() {
        // Real open_ids are `ou_` + 32 lowercase hex digits.
        let rest = PROBE_OPEN_ID.strip_prefix("ou_").unwrap_or_default();
        assert!(!rest.chars().all(|c| c.is_ascii_hexdigit()) || rest.len() != 32);
    }

    #[test]
    fn lines_show_status_id_detail_and_fix() {
        let f = fail("bot", "Lark code 230006", "enable the Bot feature");
        let text = f.to_string();
        assert!(text.starts_with("FAIL  bot "), "{text}");
        assert!(text.contains("\n") && text.contains("fix: enable the Bot feature"));
        let r = Report {
            findings: vec![f, finding("broker", Status::Ok, "up")],
        };
        assert!(!r.passed());
        assert_eq!(r.summary(), "1 ok, 1 failed, 0 warnings, 0 skipped");
    }
}
