//! Throughput of each engine on the reference script (issue 4): an alert
//! `{level, host, msg, user_email}` becomes one text message to that email.
//!
//! `cargo bench -p lark-sink-transforms` (release profile). For each engine: a correctness check
//! on 50 records, a one-second warm-up, then 1000 distinct records cycled for `BENCH_SECONDS`
//! (default 3) on one thread through `Chain::apply`, exactly as a connector worker calls it
//! (value conversion in and out included). Prints records/s per engine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lark_sink_transforms::{Chain, RecordMeta};
use serde_json::{json, Value};

const JS: &str = r#"
function process(r, meta) {
  return {receiveType: 'email', receiveId: r.user_email, contentType: 'text',
          content: JSON.stringify({text: '[' + r.level + '] ' + r.host + ': ' + r.msg})};
}
"#;

const JS_HELPER: &str = r#"
function process(r, meta) {
  return lark.text('email', r.user_email, '[' + r.level + '] ' + r.host + ': ' + r.msg);
}
"#;

const LUA: &str = r#"
function process(r, meta)
  return {receiveType = "email", receiveId = r.user_email, contentType = "text",
          content = lark.json_encode({text = "[" .. r.level .. "] " .. r.host .. ": " .. r.msg})}
end
"#;

const LUA_HELPER: &str = r#"
function process(r, meta)
  return lark.text("email", r.user_email, "[" .. r.level .. "] " .. r.host .. ": " .. r.msg)
end
"#;

fn chain(engine: &str, source: &str) -> Chain {
    let cfg: BTreeMap<String, String> = [
        ("transforms", "bench"),
        ("transforms.bench.type", engine),
        ("transforms.bench.source", source),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Chain::from_config(&cfg).expect("bench config").0
}

fn record(i: usize) -> Value {
    let levels = ["P1", "P2", "P3", "P4"];
    json!({
        "level": levels[i % 4],
        "host": format!("host-{i:04}.prod.example.com"),
        "msg": format!("5xx rate {}% on \"/api/v1/orders\"", i % 100),
        "user_email": format!("oncall{}@example.com", i % 17),
    })
}

fn expected_text(r: &Value) -> String {
    format!(
        "[{}] {}: {}",
        r["level"].as_str().unwrap(),
        r["host"].as_str().unwrap(),
        r["msg"].as_str().unwrap()
    )
}

fn check(name: &str, chain: &mut Chain, records: &[Value], meta: &RecordMeta) {
    for r in records.iter().take(50) {
        let out = chain.apply(r.clone(), meta).expect(name);
        assert_eq!(out.len(), 1, "{name}");
        let m = &out[0];
        assert_eq!(m["receiveType"], "email", "{name}");
        assert_eq!(m["receiveId"], r["user_email"], "{name}");
        assert_eq!(m["contentType"], "text", "{name}");
        let content = match &m["content"] {
            Value::String(s) => serde_json::from_str::<Value>(s).unwrap(),
            other => other.clone(),
        };
        assert_eq!(content, json!({"text": expected_text(r)}), "{name}");
    }
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let records: Vec<Value> = (0..1000).map(record).collect();
    let meta = RecordMeta {
        topic: "alerts".into(),
        partition: 0,
        offset: 123_456,
        key: Some("k".into()),
        headers: BTreeMap::new(),
        timestamp: Some(1_700_000_000_000),
    };
    println!("reference script, 1000 distinct records, {seconds} s per engine, one thread");
    println!("{:<34} {:>12} {:>10}", "engine", "records/s", "µs/record");
    let engines: [(&str, &str, &str); 5] = [
        ("identity (baseline: clone only)", "identity", ""),
        ("javascript (JSON.stringify)", "javascript", JS),
        ("javascript (lark.text helper)", "javascript", JS_HELPER),
        ("lua (lark.json_encode)", "lua", LUA),
        ("lua (lark.text helper)", "lua", LUA_HELPER),
    ];
    for (label, engine, source) in engines {
        let mut c = if engine == "identity" {
            let cfg: BTreeMap<String, String> =
                [("transforms", "b"), ("transforms.b.type", "identity")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            Chain::from_config(&cfg).unwrap().0
        } else {
            let mut c = chain(engine, source);
            check(label, &mut c, &records, &meta);
            c
        };
        // Warm-up, then cycle all 1000 records.
        let _ = run_all(&mut c, &records, &meta, Duration::from_secs(1));
        let (n, took) = run_all(&mut c, &records, &meta, Duration::from_secs_f64(seconds));
        let per_s = n as f64 / took.as_secs_f64();
        println!("{label:<34} {per_s:>12.0} {:>10.2}", 1e6 / per_s);
    }
}

fn run_all(
    chain: &mut Chain,
    records: &[Value],
    meta: &RecordMeta,
    time: Duration,
) -> (u64, Duration) {
    let start = Instant::now();
    let mut n = 0u64;
    'outer: loop {
        for r in records {
            let out = chain.apply(std::hint::black_box(r.clone()), meta).unwrap();
            std::hint::black_box(out);
            n += 1;
            if n % 256 == 0 && start.elapsed() >= time {
                break 'outer;
            }
        }
    }
    (n, start.elapsed())
}
