//! `lark-sink transform test`: runs the configured transform chain over records read from a file
//! or stdin (JSON lines) and shows what the connector would do with each: the envelopes it would
//! send and their validation result, a dropped record, or the error it would dead-letter.
//!
//! No Kafka and no Lark are involved. The steps are the sink's own, [`prepare::record`] (decode,
//! the chain, split, validate); this module only reads the input and renders what it returns.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use lark_sink_transforms::{Chain, RecordMeta};
use serde_json::Value;

use crate::config::{ConfigError, ConnectorConfig};
use crate::envelope::prepare::{self, Prepared};
use crate::envelope::validate::{EnvelopeValidator, SchemaError};
use crate::source::Topics;

/// Why a `transform test` run could not run at all (per-record failures are part of the report).
#[derive(Debug, thiserror::Error)]
pub enum TransformTestError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("reading input or writing the report: {0}")]
    Io(#[from] std::io::Error),
    /// `--input` could not be opened.
    #[error("reading {}", path.display())]
    Input {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How input lines are read.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Each line is `{"value": ..., "topic": ..., "partition": ..., "offset": ..., "key": ...,
    /// "headers": {...}, "timestamp": ...}` instead of a bare record value.
    pub with_meta: bool,
}

/// What happened to the records of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub records: usize,
    /// Records whose every message is a valid envelope.
    pub ok: usize,
    /// Records the chain turned into nothing.
    pub dropped: usize,
    /// Records that would be dead-lettered, whole or in part.
    pub failed: usize,
    pub messages: usize,
    pub invalid_messages: usize,
}

impl Summary {
    pub fn success(&self) -> bool {
        self.failed == 0
    }
}

/// Runs `cfg`'s chain over every non-blank line of `input`, writing one block per record to `out`.
pub fn run(
    cfg: &ConnectorConfig,
    input: impl BufRead,
    options: &TestOptions,
    out: &mut impl Write,
) -> Result<Summary, TransformTestError> {
    let mut chain = cfg.transform_chain()?;
    let validator = EnvelopeValidator::with_webhooks(cfg.lark.webhooks.keys().cloned().collect())?;
    let topic = match &cfg.topics {
        Topics::List(list) => list.first().cloned().unwrap_or_default(),
        Topics::Regex(_) => String::new(),
    };
    if chain.is_empty() {
        writeln!(
            out,
            "note: no transforms configured; records are validated as they are"
        )?;
    } else {
        writeln!(out, "transforms: {}", chain.names().join(" → "))?;
    }
    let mut summary = Summary::default();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        summary.records += 1;
        let line_no = i + 1;
        let default_meta = RecordMeta {
            topic: topic.clone(),
            partition: 0,
            offset: i as i64,
            ..RecordMeta::default()
        };
        let (raw, meta) = if options.with_meta {
            match meta_line(&line, default_meta) {
                Ok(v) => v,
                Err(e) => {
                    summary.failed += 1;
                    writeln!(out, "\nline {line_no}: ✗ [input] {e}")?;
                    continue;
                }
            }
        } else {
            (line.clone(), default_meta)
        };
        write!(out, "\nline {line_no}")?;
        if options.with_meta {
            write!(out, " ({}-{}@{})", meta.topic, meta.partition, meta.offset)?;
        }
        write!(out, ": ")?;
        one_record(&mut chain, &validator, &raw, &meta, &mut summary, out)?;
    }
    writeln!(
        out,
        "\n{} record(s): {} ok, {} dropped, {} failed; {} message(s), {} invalid",
        summary.records,
        summary.ok,
        summary.dropped,
        summary.failed,
        summary.messages,
        summary.invalid_messages
    )?;
    Ok(summary)
}

/// One record through the sink's steps ([`prepare::record`]), and its report.
fn one_record(
    chain: &mut Chain,
    validator: &EnvelopeValidator,
    raw: &str,
    meta: &RecordMeta,
    summary: &mut Summary,
    out: &mut impl Write,
) -> Result<(), TransformTestError> {
    let transform = (!chain.is_empty()).then_some(|v| chain.apply(v, meta));
    let messages = match prepare::record(validator, Some(raw.as_bytes()), transform) {
        Prepared::Failed(dl) => {
            summary.failed += 1;
            writeln!(out, "✗ [{}] {}", dl.class, dl.reason)?;
            return Ok(());
        }
        Prepared::Messages(m) if m.is_empty() => {
            summary.dropped += 1;
            writeln!(out, "dropped (the transforms returned nothing)")?;
            return Ok(());
        }
        Prepared::Messages(m) => m,
    };
    writeln!(out, "{} message(s)", messages.len())?;
    let mut bad = 0;
    for (index, message) in messages.iter().enumerate() {
        summary.messages += 1;
        match message {
            Ok(env) => writeln!(
                out,
                "  [{index}] ✓ {} {} {}",
                env.receiver.describe(),
                env.msg_type,
                env.content
            )?,
            Err(dl) => {
                bad += 1;
                writeln!(out, "  [{index}] ✗ [{}] {}", dl.class, dl.reason)?;
            }
        }
    }
    summary.invalid_messages += bad;
    if bad == 0 {
        summary.ok += 1;
    } else {
        summary.failed += 1;
    }
    Ok(())
}

/// Reads a `--with-meta` line: the value (re-serialised for the decoder) and its metadata.
fn meta_line(line: &str, mut meta: RecordMeta) -> Result<(String, RecordMeta), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err(
            "with --with-meta each line must be an object {\"value\": ..., \"topic\": ...}".into(),
        );
    };
    let mut value = None;
    for (k, v) in obj {
        let bad = |what: &str| format!("'{k}' must be {what}");
        match k.as_str() {
            "value" => value = Some(v),
            "topic" => meta.topic = v.as_str().ok_or_else(|| bad("a string"))?.to_string(),
            "partition" => {
                meta.partition = v
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                    .ok_or_else(|| bad("a number"))?
            }
            "offset" => meta.offset = v.as_i64().ok_or_else(|| bad("a number"))?,
            "key" => meta.key = v.as_str().map(str::to_string),
            "timestamp" => meta.timestamp = v.as_i64(),
            "headers" => {
                let h = v.as_object().ok_or_else(|| bad("an object of strings"))?;
                meta.headers = h
                    .iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                        (k.clone(), v)
                    })
                    .collect::<BTreeMap<_, _>>();
            }
            other => return Err(format!("unknown field '{other}' (expected value, topic, partition, offset, key, headers, timestamp)")),
        }
    }
    let value = value.ok_or("missing 'value'")?;
    Ok((value.to_string(), meta))
}

/// The command line of `lark-sink transform test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connector config file whose `transforms*` keys define the chain.
    #[arg(long, short)]
    pub config: std::path::PathBuf,
    /// Records, one JSON value per line (default: stdin).
    #[arg(long, short)]
    pub input: Option<std::path::PathBuf>,
    /// Each line is {"value": ..., "topic", "partition", "offset", "key", "headers", "timestamp"}.
    #[arg(long)]
    pub with_meta: bool,
}

/// Runs the chain over `--input` (or stdin) with the report on stdout; exit code 1 if any record
/// fails.
pub fn command(args: Args) -> Result<std::process::ExitCode, TransformTestError> {
    let cfg = ConnectorConfig::from_file(&args.config)?;
    let options = TestOptions {
        with_meta: args.with_meta,
    };
    let mut out = std::io::stdout().lock();
    let summary = match &args.input {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|source| TransformTestError::Input {
                path: path.clone(),
                source,
            })?;
            run(&cfg, std::io::BufReader::new(file), &options, &mut out)?
        }
        None => run(&cfg, std::io::stdin().lock(), &options, &mut out)?,
    };
    Ok(match summary.success() {
        true => std::process::ExitCode::SUCCESS,
        false => std::process::ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(transforms: &[(&str, &str)]) -> ConnectorConfig {
        let mut c = json!({
            "name": "t",
            "config": {
                "topics": "alerts",
                "kafka.bootstrap.servers": "127.0.0.1:1",
                "lark.app.id": "cli_x",
                "lark.app.secret": "s",
            }
        });
        for (k, v) in transforms {
            c["config"][*k] = json!(v);
        }
        ConnectorConfig::from_json(&c).unwrap()
    }

    fn run_text(cfg: &ConnectorConfig, input: &str, options: &TestOptions) -> (Summary, String) {
        let mut out = Vec::new();
        let s = run(cfg, input.as_bytes(), options, &mut out).unwrap();
        (s, String::from_utf8(out).unwrap())
    }

    #[test]
    fn reports_messages_drops_and_failures() {
        let cfg = config(&[
            ("transforms", "a"),
            ("transforms.a.type", "javascript"),
            (
                "transforms.a.source",
                "function process(r, m) {\n  if (r.drop) return null;\n  if (r.boom) throw new Error('boom');\n  return r.to.map(id => lark.text('user', id, r.msg + ' @' + m.topic));\n}",
            ),
        ]);
        let input = r#"{"to": ["ou_a", "ou_b"], "msg": "hi"}
{"drop": true}

{"boom": true}
{"to": [""], "msg": "x"}
not json
"#;
        let (s, text) = run_text(&cfg, input, &TestOptions::default());
        assert_eq!(
            s,
            Summary {
                records: 5,
                ok: 1,
                dropped: 1,
                failed: 3,
                messages: 3,
                invalid_messages: 1
            },
            "{text}"
        );
        assert!(!s.success());
        assert!(text.contains("transforms: a"), "{text}");
        assert!(
            text.contains(r#"line 1: 2 message(s)"#)
                && text.contains(r#"[1] ✓ open_id:ou_b text {"text":"hi @alerts"}"#),
            "{text}"
        );
        assert!(text.contains("line 2: dropped"), "{text}");
        assert!(
            text.contains("line 4: ✗ [transform] transform 'a' failed: Error: boom (line 3)"),
            "{text}"
        );
        assert!(text.contains("[0] ✗ [schema] /receiveId"), "{text}");
        assert!(
            text.contains("line 6: ✗ [decode] record value is not JSON"),
            "{text}"
        );
    }

    #[test]
    fn with_meta_lines_carry_kafka_metadata() {
        let cfg = config(&[
            ("transforms", "a"),
            ("transforms.a.type", "lua"),
            (
                "transforms.a.source",
                "function process(r, m) return lark.text('chat', m.headers.chat, m.key .. ' ' .. m.offset) end",
            ),
        ]);
        let input = r#"{"value": {}, "topic": "logs", "partition": 2, "offset": 42, "key": "k1", "headers": {"chat": "oc_x"}}"#;
        let (s, text) = run_text(&cfg, input, &TestOptions { with_meta: true });
        assert!(s.success(), "{text}");
        assert!(text.contains("line 1 (logs-2@42): 1 message(s)"), "{text}");
        assert!(
            text.contains(r#"chat_id:oc_x text {"text":"k1 42"}"#),
            "{text}"
        );
        let (s, text) = run_text(&cfg, r#"{"valeu": {}}"#, &TestOptions { with_meta: true });
        assert_eq!(s.failed, 1);
        assert!(text.contains("unknown field 'valeu'"), "{text}");
    }

    #[test]
    fn without_transforms_records_are_validated_as_they_are() {
        let cfg = config(&[]);
        let (s, text) = run_text(
            &cfg,
            r#"[{"receiveId": "ou_a", "content": {"text": "x"}}, {"receiveId": "ou_b", "content": {}}]"#,
            &TestOptions::default(),
        );
        assert_eq!((s.ok, s.failed, s.invalid_messages), (0, 1, 1), "{text}");
        assert!(text.contains("[1] ✗ [schema] /1/content"), "{text}");
    }
}
