//! End to end: script transforms inside the real connector, between a real broker and the Lark
//! emulator. For each engine: records dropped, turned into one or many messages, metadata read by
//! the script; an exception, an infinite loop and a memory bomb dead-lettered (stage
//! TRANSFORMATION, with the script's name, message and line) while the records after them are
//! still delivered; and a shipped example run from its file.

use std::path::Path;
use std::time::Duration;

use lark_sink_e2e::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

const JS: &str = r#"// e2e transform
function process(r, meta) {
  if (r.drop) return null;
  if (r.boom) {
    throw new Error('boom ' + r.id);
  }
  if (r.loop) { while (true) {} }
  if (r.bomb) { const a = []; for (;;) a.push('x'.repeat(4096) + a.length); }
  if (r.fanout) return r.fanout.map(id => lark.text('user', id, 'fan ' + id));
  if (r.meta) {
    return lark.text('chat', meta.headers.chat, 'meta ' + meta.topic.length + ' ' + meta.partition +
      ' ' + meta.offset + ' ' + meta.key + ' ' + (meta.timestamp > 0));
  }
  return {receiveType: 'email', receiveId: r.user_email, contentType: 'text',
          content: JSON.stringify({text: '[' + r.level + '] ' + r.host + ': ' + r.msg})};
}
"#;

const LUA: &str = r#"-- e2e transform
function process(r, meta)
  if r.drop then return nil end
  if r.boom then
    error('boom ' .. r.id)
  end
  if r.loop then while true do end end
  if r.bomb then local a = {} while true do a[#a + 1] = string.rep('x', 4096) .. #a end end
  if r.fanout then
    local out = {}
    for i, id in ipairs(r.fanout) do out[i] = lark.text('user', id, 'fan ' .. id) end
    return out
  end
  if r.meta then
    return lark.text('chat', meta.headers.chat, 'meta ' .. #meta.topic .. ' ' .. meta.partition ..
      ' ' .. meta.offset .. ' ' .. meta.key .. ' ' .. tostring(meta.timestamp > 0))
  end
  return {receiveType = 'email', receiveId = r.user_email, contentType = 'text',
          content = lark.json_encode({text = '[' .. r.level .. '] ' .. r.host .. ': ' .. r.msg})}
end
"#;

fn alert(i: usize) -> Value {
    json!({"level": "P1", "host": format!("h{i}"), "msg": "5xx \"rate\"", "user_email": "alice@example.com"})
}

/// The script in a file of its own, removed when dropped.
struct ScriptFile(std::path::PathBuf);

impl ScriptFile {
    fn new(ext: &str, source: &str) -> ScriptFile {
        let dir = std::env::temp_dir().join(unique("lark-sink-e2e-script"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("transform.{ext}")), source).unwrap();
        ScriptFile(dir.join(format!("transform.{ext}")))
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn engine_end_to_end(engine: &str, ext: &str, source: &str, boom_line: u32) {
    let s = Scenario::new(&format!("tf-{engine}"), 1).await;
    let mut cfg = s.config();
    cfg["config"]["transforms"] = json!("shape");
    cfg["config"]["transforms.shape.type"] = json!(engine);
    let script = ScriptFile::new(ext, source);
    cfg["config"]["transforms.shape.file"] = json!(script.0);
    // Wall-clock limit: 2 s, far above what a good record needs even on a loaded 2-core CI machine
    // (at 200 ms a throwing record once timed out under load), and still quick for the endless loop.
    cfg["config"]["transforms.shape.timeout.ms"] = json!("2000");
    cfg["config"]["transforms.shape.memory.limit.bytes"] = json!("16777216");

    // In Kafka order: good, drop, fan-out, boom, good, loop, good, bomb, meta, good.
    s.send(&alert(0)).await;
    s.send(&json!({"drop": true})).await;
    s.send(&json!({"fanout": ["ou_alice", "ou_bob"]})).await;
    let (_, boom_offset) = s.send(&json!({"boom": true, "id": 42})).await;
    s.send(&alert(1)).await;
    let (_, loop_offset) = s.send(&json!({"loop": true})).await;
    s.send(&alert(2)).await;
    let (_, bomb_offset) = s.send(&json!({"bomb": true})).await;
    let (_, meta_offset) = s
        .send_raw(Some("key-7"), br#"{"meta": true}"#, &[("chat", "oc_ops")])
        .await;
    s.send(&alert(3)).await;

    let _c = Connector::start(&cfg);
    // 4 alerts + 2 fan-out + 1 meta.
    wait_until("7 messages in the emulator", WAIT, || {
        s.lark.messages().len() >= 7
    })
    .await;
    let dead = s.dead_letters(3, WAIT);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let texts = s.texts();
    assert_eq!(texts.len(), 7, "{texts:#?}");
    for i in 0..4 {
        assert!(
            texts.contains(&format!("[P1] h{i}: 5xx \"rate\"")),
            "{engine}: alert {i} missing from {texts:#?}"
        );
    }
    let msgs = s.lark.messages();
    let alert0 = msgs
        .iter()
        .find(|m| m.content["text"] == "[P1] h0: 5xx \"rate\"")
        .unwrap();
    assert_eq!(
        (alert0.receive_id_type.as_str(), alert0.receive_id.as_str()),
        ("email", "alice@example.com")
    );
    assert!(
        texts.contains(&"fan ou_alice".to_string()) && texts.contains(&"fan ou_bob".to_string())
    );
    // Metadata as the script saw it: topic length, partition, offset, key, timestamp present.
    let meta_text = format!("meta {} 0 {meta_offset} key-7 true", s.topic.len());
    let meta_msg = msgs
        .iter()
        .find(|m| m.content["text"] == meta_text.as_str())
        .unwrap_or_else(|| panic!("{engine}: no '{meta_text}' in {texts:#?}"));
    assert_eq!(meta_msg.receive_id, "oc_ops");

    // Three dead letters: the exception with its line, the loop and the bomb with their limits.
    assert_eq!(dead.len(), 3, "{engine}: {dead:#?}");
    let by_offset = |o: i64| {
        dead.iter()
            .find(|d| d.header("__connect.errors.offset") == o.to_string())
            .unwrap_or_else(|| panic!("{engine}: no dead letter for offset {o}: {dead:#?}"))
    };
    for d in &dead {
        assert_eq!(d.header("__connect.errors.stage"), "TRANSFORMATION");
        assert_eq!(d.header("__connect.errors.class.name"), "transform");
    }
    let boom = by_offset(boom_offset).header("__connect.errors.exception.message");
    assert!(
        boom.starts_with("transform 'shape' failed: ")
            && boom.contains("boom 42")
            && boom.ends_with(&format!("(line {boom_line})")),
        "{engine}: {boom}"
    );
    let looped = by_offset(loop_offset).header("__connect.errors.exception.message");
    assert!(
        looped.contains("timed out after 2000 ms (transforms.shape.timeout.ms)"),
        "{engine}: {looped}"
    );
    let bomb = by_offset(bomb_offset).header("__connect.errors.exception.message");
    assert!(
        bomb.contains(
            "memory limit of 16777216 bytes exceeded (transforms.shape.memory.limit.bytes)"
        ),
        "{engine}: {bomb}"
    );
    // The dropped record and the failures are finished too: everything is committed.
    wait_until("all offsets committed", WAIT, || {
        s.committed() == vec![meta_offset + 2]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_transform_end_to_end() {
    engine_end_to_end("javascript", "js", JS, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_transform_end_to_end() {
    engine_end_to_end("lua", "lua", LUA, 5).await;
}

/// A shipped example, from its file, through broker and emulator: one card per alert (its
/// fingerprint is the `messageKey`), turned from red or orange to green in place when the alert
/// resolves. The firing notifications go first and the resolved ones once their cards are in
/// Lark, so each resolution is an update of its card (versions waiting together would coalesce).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_example_updates_one_card_per_alert() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("deploy/examples/transforms");
    let s = Scenario::new("tf-alertmanager", 2).await;
    let mut cfg = s.config();
    cfg["config"]["transforms"] = json!("alerts");
    cfg["config"]["transforms.alerts.type"] = json!("javascript");
    cfg["config"]["transforms.alerts.file"] =
        json!(dir.join("alertmanager-to-card.js").canonicalize().unwrap());
    cfg["config"]["lark.state.topic"] = json!(format!("{}-state", s.topic));
    let samples = std::fs::read_to_string(dir.join("alertmanager-to-card.jsonl")).unwrap();
    let notifications: Vec<(&str, Value)> = samples
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (l, serde_json::from_str(l).unwrap()))
        .collect();
    // Keyed by groupKey, as a bridge from Alertmanager should: an alert's notifications share a
    // partition.
    let produce = |status: &'static str| {
        let batch: Vec<_> = notifications
            .iter()
            .filter(|(_, n)| n["status"] == status)
            .cloned()
            .collect();
        let s = &s;
        async move {
            for (line, n) in batch {
                s.send_raw(n["groupKey"].as_str(), line.as_bytes(), &[])
                    .await;
            }
        }
    };
    produce("firing").await;
    let _c = Connector::start(&cfg);
    wait_until("3 alert cards in the emulator", WAIT, || {
        s.lark.messages().len() >= 3
    })
    .await;
    produce("resolved").await;
    let colours = |id: &str| -> Vec<String> {
        let view = s
            .lark
            .message_view(id)
            .expect("the emulator knows the card");
        view.versions
            .iter()
            .map(|v| {
                v.content["header"]["template"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    wait_until("every alert card turned green", WAIT, || {
        s.lark
            .messages()
            .iter()
            .all(|m| colours(&m.message_id).last().map(String::as_str) == Some("green"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let msgs = s.lark.messages();
    assert_eq!(msgs.len(), 3, "one card per alert: {msgs:#?}");
    let mut cards: Vec<(String, Vec<String>)> = msgs
        .iter()
        .map(|m| {
            assert_eq!(
                (m.msg_type.as_str(), m.receive_id.as_str()),
                ("interactive", "oc_ops")
            );
            let view = s.lark.message_view(&m.message_id).unwrap();
            (
                view.content["header"]["title"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                colours(&m.message_id),
            )
        })
        .collect();
    cards.sort();
    let card = |title: &str, first: &str| {
        (
            title.to_string(),
            vec![first.to_string(), "green".to_string()],
        )
    };
    assert_eq!(
        cards,
        [
            card("[RESOLVED] DiskFull on db-1", "orange"),
            card("[RESOLVED] HighErrorRate on api-1:8080", "red"),
            card("[RESOLVED] HighErrorRate on api-2:8080", "red"),
        ],
        "each card was sent once and updated once, in place"
    );
    assert!(s.dead_letters(1, Duration::from_secs(2)).is_empty());
}
