//! The soak's books, balanced once every valid message reached Lark: commits at the end of every
//! partition, no message lost or delivered twice (by the record number in each text), every
//! invalid record in the DLQ, and the connector's CPU and peak RSS over all its instances.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lark_emulator::AcceptedMessage;
use lark_sink_e2e::{read_topic_on, try_committed_on, watermarks_on};
use serde_json::Value;

use super::{Drive, Soak, INVALID_EVERY, PARTITIONS};
use crate::common::{produce_rate_row, row, throttles};
use crate::Options;

/// Waits for the commits, stops the connector, counts, and prints the figures.
pub(super) async fn balance(
    soak: &Soak<'_>,
    drive: Drive,
    group: &str,
    dlq: &str,
    n: usize,
    produce_rate: f64,
) {
    let o = soak.o;
    // Commits reach the end of every partition (the connector keeps running until they do).
    let commits_done = commits_reach_end(o, group, &soak.topic).await;
    let cpu = drive.cpu + drive.sink.cpu_seconds();
    let rss = drive.rss.max(drive.sink.peak_rss_mib());
    drive.sink.stop();
    let (lost, duplicated) = lost_and_duplicated(&soak.lark.messages(), n);
    let (dead, dlq_total) = dead_letters(o, dlq);
    let invalid = n / INVALID_EVERY;
    let valid = n - invalid;
    let stats = soak.lark.stats();
    row(
        "records (valid / invalid)",
        format!("{valid} / {invalid}"),
        "-",
    );
    produce_rate_row(produce_rate);
    row("messages lost", lost.to_string(), "0");
    row("messages delivered twice", duplicated.to_string(), "0");
    row(
        "invalid records in the DLQ (distinct / DLQ records)",
        format!("{dead} / {dlq_total}"),
        &format!("{invalid} / ≥ {invalid}"),
    );
    row(
        "commits at the end of every partition",
        commits_done.to_string(),
        "true",
    );
    let secs = drive.secs;
    row(
        "wall time (s) / messages per second",
        format!("{secs:.0} / {:.0}", valid as f64 / secs),
        "-",
    );
    row("SIGKILLs", drive.kills.to_string(), "-");
    row(
        "connector peak RSS, any instance (MiB)",
        format!("{rss:.1}"),
        "≤ 64",
    );
    row(
        "connector CPU seconds per 1000 messages",
        format!("{:.3}", cpu / valid as f64 * 1000.0),
        "-",
    );
    row(
        "faults injected / token rejections / uuid replays absorbed",
        format!(
            "{} / {} / {}",
            stats.faults_injected, stats.token_rejections, stats.duplicates_absorbed
        ),
        "-",
    );
    row(
        "throttles beyond the injected ones",
        throttles(&soak.lark).to_string(),
        "0",
    );
}

/// Whether `group`'s commits reach the end of every partition of `topic` within two minutes.
async fn commits_reach_end(o: &Options, group: &str, topic: &str) -> bool {
    let ends: Vec<i64> = watermarks_on(&o.kafka, topic)
        .iter()
        .map(|(_, high)| *high)
        .collect();
    // A failed look-up counts as not there yet.
    let committed = || try_committed_on(&o.kafka, group, topic, PARTITIONS).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed() != ends && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    committed() == ends
}

/// (valid records that never reached Lark, records that reached it more than once), by the
/// record number `m<i>` in each text.
fn lost_and_duplicated(msgs: &[AcceptedMessage], n: usize) -> (usize, usize) {
    let mut seen = vec![0u8; n];
    for m in msgs {
        let i = m
            .content
            .get("text")
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix('m'))
            .and_then(|t| t.parse::<usize>().ok());
        if let Some(i) = i.filter(|i| *i < n) {
            seen[i] = seen[i].saturating_add(1);
        }
    }
    let valid_index = |i: usize| i % INVALID_EVERY != INVALID_EVERY - 1;
    let lost = (0..n).filter(|&i| valid_index(i) && seen[i] == 0).count();
    let duplicated = seen.iter().filter(|&&c| c > 1).count();
    (lost, duplicated)
}

/// (distinct records dead-lettered, records in the DLQ): every invalid record should be there
/// at least once (kills replay what was not yet committed).
fn dead_letters(o: &Options, dlq: &str) -> (usize, i64) {
    let total: i64 = watermarks_on(&o.kafka, dlq)
        .iter()
        .map(|(low, high)| high - low)
        .sum();
    if total <= 0 {
        return (0, total);
    }
    let dead: BTreeSet<(String, String)> =
        read_topic_on(&o.kafka, dlq, total as usize, Duration::from_secs(120))
            .iter()
            .map(|r| {
                (
                    r.header("__connect.errors.partition").to_string(),
                    r.header("__connect.errors.offset").to_string(),
                )
            })
            .collect();
    (dead.len(), total)
}
