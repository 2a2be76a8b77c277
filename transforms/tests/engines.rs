//! Every script engine against the same behaviours: drop / one / many outputs, metadata, errors
//! with their line, the time and memory limits (and that the engine keeps working after them),
//! and the sandbox (no file, network or process access).
//!
//! Each test runs the JavaScript and the Lua version of the same script.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lark_sink_transforms::{Chain, RecordMeta, TransformError};
use serde_json::{json, Value};

/// Builds a one-transform chain of `engine` from an inline script, with extra options.
fn chain_with(engine: &str, source: &str, options: &[(&str, &str)]) -> Chain {
    let mut cfg: BTreeMap<String, String> = BTreeMap::new();
    cfg.insert("transforms".into(), "t".into());
    cfg.insert("transforms.t.type".into(), engine.into());
    cfg.insert("transforms.t.source".into(), source.into());
    for (k, v) in options {
        cfg.insert(format!("transforms.t.{k}"), v.to_string());
    }
    Chain::from_config(&cfg)
        .unwrap_or_else(|e| panic!("{engine}: {e}"))
        .0
}

/// The same script in both engines.
fn both(js: &str, lua: &str) -> Vec<(&'static str, Chain)> {
    both_with(js, lua, &[])
}

fn both_with(js: &str, lua: &str, options: &[(&str, &str)]) -> Vec<(&'static str, Chain)> {
    vec![
        ("javascript", chain_with("javascript", js, options)),
        ("lua", chain_with("lua", lua, options)),
    ]
}

fn meta() -> RecordMeta {
    RecordMeta {
        topic: "alerts".into(),
        partition: 3,
        offset: 4_812_000_000,
        key: Some("host-1".into()),
        headers: [("trace".to_string(), "abc".to_string())].into(),
        timestamp: Some(1_700_000_000_123),
    }
}

fn alert(i: usize) -> Value {
    json!({"level": "P1", "host": format!("h{i}"), "msg": "5xx \"rate\" 12%", "user_email": "ann@example.com"})
}

const REF_JS: &str = r#"
function process(r, meta) {
  return {receiveType: 'email', receiveId: r.user_email, contentType: 'text',
          content: JSON.stringify({text: '[' + r.level + '] ' + r.host + ': ' + r.msg})};
}
"#;

const REF_LUA: &str = r#"
function process(r, meta)
  return {receiveType = "email", receiveId = r.user_email, contentType = "text",
          content = lark.json_encode({text = "[" .. r.level .. "] " .. r.host .. ": " .. r.msg})}
end
"#;

fn expected_ref(i: usize) -> Value {
    json!({"receiveType": "email", "receiveId": "ann@example.com", "contentType": "text",
           "content": format!("{{\"text\":\"[P1] h{i}: 5xx \\\"rate\\\" 12%\"}}")})
}

#[test]
fn reference_script_gives_one_message() {
    for (engine, mut chain) in both(REF_JS, REF_LUA) {
        for i in 0..3 {
            let out = chain.apply(alert(i), &meta()).unwrap();
            assert_eq!(out, vec![expected_ref(i)], "{engine}");
        }
    }
}

#[test]
fn null_nothing_and_empty_array_drop_the_record() {
    let js =
        "function process(r) { if (r.k === 'null') return null; if (r.k === 'empty') return []; }";
    let lua = "function process(r) if r.k == 'null' then return lark.null end if r.k == 'empty' then return lark.array({}) end end";
    for (engine, mut chain) in both(js, lua) {
        for k in ["null", "empty", "nothing"] {
            let out = chain.apply(json!({"k": k}), &meta()).unwrap();
            assert!(out.is_empty(), "{engine} {k}: {out:?}");
        }
    }
}

#[test]
fn an_array_gives_one_output_per_element() {
    let js = "function process(r) { return r.to.map(id => lark.text('user', id, r.msg)); }";
    let lua = "function process(r) local out = {} for i, id in ipairs(r.to) do out[i] = lark.text('user', id, r.msg) end return out end";
    for (engine, mut chain) in both(js, lua) {
        let out = chain
            .apply(
                json!({"to": ["ou_a", "ou_b", "ou_c"], "msg": "hi"}),
                &meta(),
            )
            .unwrap();
        let ids: Vec<&str> = out
            .iter()
            .map(|v| v["receiveId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["ou_a", "ou_b", "ou_c"], "{engine}");
        assert_eq!(
            out[0],
            json!({"receiveType": "user", "receiveId": "ou_a", "contentType": "text", "content": {"text": "hi"}}),
            "{engine}"
        );
    }
}

#[test]
fn metadata_is_visible() {
    let js = "function process(r, m) { return {topic: m.topic, partition: m.partition, offset: m.offset, key: m.key, trace: m.headers.trace, ts: m.timestamp}; }";
    let lua = "function process(r, m) return {topic = m.topic, partition = m.partition, offset = m.offset, key = m.key, trace = m.headers.trace, ts = m.timestamp} end";
    for (engine, mut chain) in both(js, lua) {
        let out = chain.apply(json!({}), &meta()).unwrap();
        assert_eq!(
            out,
            vec![
                json!({"topic": "alerts", "partition": 3, "offset": 4_812_000_000i64, "key": "host-1",
                        "trace": "abc", "ts": 1_700_000_000_123i64})
            ],
            "{engine}"
        );
        // Absent key and timestamp.
        let out = chain.apply(json!({}), &RecordMeta::default()).unwrap();
        assert_eq!(
            out,
            vec![json!({"topic": "", "partition": 0, "offset": 0})]
                .into_iter()
                .map(|mut v| {
                    if engine == "javascript" {
                        v["key"] = Value::Null;
                        v["ts"] = Value::Null;
                    }
                    v
                })
                .collect::<Vec<_>>(),
            "{engine}"
        );
    }
}

#[test]
fn an_exception_names_the_transform_message_and_line() {
    let js = "function process(r) {\n  if (r.bad) {\n    throw new Error('bad record ' + r.id);\n  }\n  return r.missing.field;\n}";
    let lua = "function process(r)\n  if r.bad then\n    error('bad record ' .. r.id)\n  end\n  return r.missing.field\nend";
    for (engine, mut chain) in both(js, lua) {
        let e = chain
            .apply(json!({"bad": true, "id": 7}), &meta())
            .unwrap_err();
        assert_eq!(e.transform, "t", "{engine}");
        assert!(e.message.contains("bad record 7"), "{engine}: {e}");
        assert_eq!(e.line, Some(3), "{engine}: {e}");
        assert!(e.to_string().starts_with("transform 't' failed: "), "{e}");
        // A runtime error of the language itself.
        let e = chain.apply(json!({}), &meta()).unwrap_err();
        assert_eq!(e.line, Some(5), "{engine}: {e}");
        // The engine goes on.
        let out = chain
            .apply(json!({"missing": {"field": {"a": 1}}}), &meta())
            .unwrap();
        assert_eq!(out, vec![json!({"a": 1})], "{engine}");
    }
}

#[test]
fn a_result_that_is_not_an_envelope_shape_is_an_error() {
    let js = "function process(r) { return r.v; }";
    let lua = "function process(r) return r.v end";
    for (engine, mut chain) in both(js, lua) {
        let e = chain.apply(json!({"v": "text"}), &meta()).unwrap_err();
        assert!(e.message.contains("returned a string"), "{engine}: {e}");
        let e = chain
            .apply(json!({"v": [{"a": 1}, 2]}), &meta())
            .unwrap_err();
        assert!(e.message.contains("element 1 is a number"), "{engine}: {e}");
    }
}

fn assert_limit(engine: &str, e: &TransformError, what: &str, started: Instant) {
    assert!(e.message.contains(what), "{engine}: {e}");
    // A sanity bound, not a performance assertion: the call was stopped rather than left running.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{engine}: took {:?}",
        started.elapsed()
    );
}

#[test]
fn an_infinite_loop_is_stopped_and_later_records_flow() {
    let js = "function process(r) {\n  if (r.loop) {\n    while (true) {}\n  }\n  return lark.text('user', 'ou_a', 'ok ' + r.i);\n}";
    let lua = "function process(r)\n  if r.loop then\n    while true do end\n  end\n  return lark.text('user', 'ou_a', 'ok ' .. r.i)\nend";
    for (engine, mut chain) in both_with(js, lua, &[("timeout.ms", "50")]) {
        for i in 0..3 {
            let started = Instant::now();
            let e = chain.apply(json!({"loop": true}), &meta()).unwrap_err();
            assert_limit(
                engine,
                &e,
                "timed out after 50 ms (transforms.t.timeout.ms)",
                started,
            );
            // Where the loop was interrupted (QuickJS may attribute the loop's jump to line 2).
            assert!(matches!(e.line, Some(2 | 3)), "{engine}: {e}");
            let out = chain.apply(json!({"i": i}), &meta()).unwrap();
            assert_eq!(out[0]["content"]["text"], format!("ok {i}"), "{engine}");
        }
    }
}

#[test]
fn a_timeout_cannot_be_caught_by_the_script() {
    let js = "function process(r) { for (;;) { try { while (true) {} } catch (e) {} } }";
    let lua = "function process(r) while true do pcall(function() while true do end end) end end";
    for (engine, mut chain) in both_with(js, lua, &[("timeout.ms", "50")]) {
        let started = Instant::now();
        let e = chain.apply(json!({}), &meta()).unwrap_err();
        assert_limit(engine, &e, "timed out", started);
    }
}

#[test]
fn a_memory_bomb_is_stopped_and_later_records_flow() {
    let js = "function process(r) {\n  if (r.bomb) {\n    const a = [];\n    while (true) { a.push('x'.repeat(1024) + a.length); }\n  }\n  return lark.text('user', 'ou_a', 'ok');\n}";
    let lua = "function process(r)\n  if r.bomb then\n    local a = {}\n    while true do a[#a + 1] = string.rep('x', 1024) .. #a end\n  end\n  return lark.text('user', 'ou_a', 'ok')\nend";
    // A generous time limit, so it is the memory limit that stops the bomb.
    let opts = [("memory.limit.bytes", "8388608"), ("timeout.ms", "10000")];
    for (engine, mut chain) in both_with(js, lua, &opts) {
        for _ in 0..3 {
            let started = Instant::now();
            let e = chain.apply(json!({"bomb": true}), &meta()).unwrap_err();
            assert_limit(
                engine,
                &e,
                "memory limit of 8388608 bytes exceeded (transforms.t.memory.limit.bytes)",
                started,
            );
            let out = chain.apply(json!({}), &meta()).unwrap();
            assert_eq!(out.len(), 1, "{engine}");
        }
    }
}

#[test]
fn one_huge_allocation_is_stopped() {
    let js = "function process(r) { return {s: 'x'.repeat(200 * 1024 * 1024)}; }";
    let lua = "function process(r) return {s = string.rep('x', 200 * 1024 * 1024)} end";
    for (engine, mut chain) in both(js, lua) {
        let e = chain.apply(json!({}), &meta()).unwrap_err();
        assert!(e.message.contains("memory limit"), "{engine}: {e}");
    }
}

#[test]
fn deep_recursion_is_an_error_not_a_crash() {
    let js = "function f(n) { return f(n + 1) + 1; }\nfunction process(r) { return f(0); }";
    let lua = "local function f(n) return f(n + 1) + 1 end\nfunction process(r) return f(0) end";
    // A generous time limit: a million Lua frames take a while in a debug build on a busy machine.
    for (engine, mut chain) in both_with(js, lua, &[("timeout.ms", "20000")]) {
        let e = chain.apply(json!({}), &meta()).unwrap_err();
        assert!(
            e.message.to_lowercase().contains("stack") || e.message.contains("memory"),
            "{engine}: {e}"
        );
        let ok = chain_with(
            engine,
            if engine == "lua" {
                "function process(r) return r end"
            } else {
                "function process(r) { return r; }"
            },
            &[],
        )
        .apply(json!({"a": 1}), &meta())
        .unwrap();
        assert_eq!(ok, vec![json!({"a": 1})]);
    }
}

#[test]
fn no_file_network_or_process_access() {
    // Every name that could reach outside the interpreter is absent.
    let js = r#"
function process(r) {
  const names = ['require', 'std', 'os', 'fetch', 'XMLHttpRequest', 'WebSocket', 'process',
                 'Deno', 'Bun', 'module', 'exports', 'scriptArgs', 'print', 'setTimeout', 'Worker'];
  const present = names.filter(n => n !== 'process' && typeof globalThis[n] !== 'undefined');
  let imported = 'no';
  try { const p = import('/etc/passwd'); imported = typeof p; } catch (e) { imported = 'threw'; }
  let evalRead = 'no';
  try { eval("std.loadFile('/etc/passwd')"); evalRead = 'read'; } catch (e) { evalRead = e.name; }
  return {present, imported, evalRead};
}
"#;
    let lua = r#"
function process(r)
  local present = {}
  for _, n in ipairs({"io", "require", "package", "debug", "dofile", "loadfile", "load",
                      "loadstring", "module", "collectgarbage", "coroutine"}) do
    if _G[n] ~= nil then present[#present + 1] = n end
  end
  for _, n in ipairs({"execute", "exit", "getenv", "remove", "rename", "tmpname", "setlocale"}) do
    if os[n] ~= nil then present[#present + 1] = "os." .. n end
  end
  if string.dump ~= nil then present[#present + 1] = "string.dump" end
  return {present = lark.array(present), has_date = (os.date ~= nil)}
end
"#;
    let mut js_chain = chain_with("javascript", js, &[]);
    let out = js_chain.apply(json!({}), &meta()).unwrap();
    // A dynamic import only yields a promise that is never run: no module loader is installed.
    assert_eq!(
        out,
        vec![json!({"present": [], "imported": "object", "evalRead": "ReferenceError"})]
    );
    let mut lua_chain = chain_with("lua", lua, &[]);
    let out = lua_chain.apply(json!({}), &meta()).unwrap();
    assert_eq!(out, vec![json!({"present": [], "has_date": true})]);
}

#[test]
fn a_script_file_is_read_and_errors_name_it() {
    // A long path: Lua cuts source names to 60 characters, the line must still be found.
    let dir = std::env::temp_dir()
        .join(format!("lark-sink-transforms-{}", std::process::id()))
        .join("a-directory-name-long-enough-to-exceed-what-lua-keeps-of-a-source-name");
    std::fs::create_dir_all(&dir).unwrap();
    for (engine, ext, src) in [
        (
            "javascript",
            "js",
            "// comment\nfunction process(r) {\n  return r.x.y;\n}\n",
        ),
        (
            "lua",
            "lua",
            "-- comment\nfunction process(r)\n  return r.x.y\nend\n",
        ),
    ] {
        let path = dir.join(format!("script.{ext}"));
        std::fs::write(&path, src).unwrap();
        let cfg: BTreeMap<String, String> = [
            ("transforms", "f"),
            ("transforms.f.type", engine),
            ("transforms.f.file", path.to_str().unwrap()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (mut chain, used) = Chain::from_config(&cfg).unwrap();
        assert_eq!(used.len(), 3);
        let e = chain.apply(json!({}), &meta()).unwrap_err();
        assert_eq!(
            (e.transform.as_str(), e.line),
            ("f", Some(3)),
            "{engine}: {e}"
        );
    }
    std::fs::remove_dir_all(dir.parent().unwrap()).ok();
}

#[test]
fn config_errors_name_the_key() {
    let cfg = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for engine in ["javascript", "lua"] {
        let e = Chain::from_config(&cfg(&[("transforms", "a"), ("transforms.a.type", engine)]))
            .err()
            .unwrap();
        assert_eq!(e.key, "transforms.a.file", "{engine}: {e}");
        let e = Chain::from_config(&cfg(&[
            ("transforms", "a"),
            ("transforms.a.type", engine),
            ("transforms.a.file", "no/such/script"),
        ]))
        .err()
        .unwrap();
        assert_eq!(e.key, "transforms.a.file", "{engine}: {e}");
        assert!(
            e.message.contains("cannot read script 'no/such/script'"),
            "{e}"
        );
        let e = Chain::from_config(&cfg(&[
            ("transforms", "a"),
            ("transforms.a.type", engine),
            ("transforms.a.source", "\n\nfunction process(r) {{{ end"),
        ]))
        .err()
        .unwrap();
        assert_eq!(e.key, "transforms.a.source", "{engine}: {e}");
        assert!(
            e.message.contains("does not load") && e.message.contains("(line 3)"),
            "{engine}: {e}"
        );
        let e = Chain::from_config(&cfg(&[
            ("transforms", "a"),
            ("transforms.a.type", engine),
            ("transforms.a.source", "x = 1"),
        ]))
        .err()
        .unwrap();
        assert!(e.message.contains("no function 'process"), "{engine}: {e}");
        let e = Chain::from_config(&cfg(&[
            ("transforms", "a"),
            ("transforms.a.type", engine),
            ("transforms.a.source", "x = 1"),
            ("transforms.a.timeout", "5"),
        ]))
        .err()
        .unwrap();
        assert_eq!(e.key, "transforms.a.timeout");
        assert!(
            e.message
                .contains("known: file, source, timeout.ms, memory.limit.bytes"),
            "{e}"
        );
    }
    // A script whose top level never ends fails at load, not at the first record.
    let e = Chain::from_config(&cfg(&[
        ("transforms", "a"),
        ("transforms.a.type", "javascript"),
        (
            "transforms.a.source",
            "while (true) {}\nfunction process(r) { return r; }",
        ),
    ]))
    .err()
    .unwrap();
    assert!(e.message.contains("top level timed out"), "{e}");
}

#[test]
fn engines_chain_and_move_between_threads() {
    let cfg: BTreeMap<String, String> = [
        ("transforms", "js, lu"),
        ("transforms.js.type", "javascript"),
        ("transforms.js.source", "function process(r) { return r.items.map(i => ({n: i})); }"),
        ("transforms.lu.type", "lua"),
        ("transforms.lu.source", "function process(r) if r.n % 2 == 0 then return nil end return lark.text('user', 'ou_' .. r.n, 'odd ' .. r.n) end"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (mut chain, _) = Chain::from_config(&cfg).unwrap();
    assert_eq!(chain.names(), ["js", "lu"]);
    // The connector moves each worker's chain into a blocking thread.
    let out = std::thread::spawn(move || chain.apply(json!({"items": [1, 2, 3]}), &meta()))
        .join()
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = out
        .iter()
        .map(|v| v["receiveId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ou_1", "ou_3"]);
}

#[test]
fn helpers_build_text_post_and_card() {
    let js = r#"
function process(r) {
  return [
    lark.text('chat', 'oc_ops', 'hi ' + lark.mention('ou_a', 'Ann')),
    lark.post('chat', 'oc_ops', 'Title', ['line one', ['see ', lark.link('here', 'https://x.test'), ' ', lark.at('ou_a')]], 'en_us'),
    lark.card('chat', 'oc_ops', {title: 'Disk full', template: 'red',
      elements: ['**db-1** at 97%', lark.fields([['Host', 'db-1'], ['Use', '97%']]), lark.hr(), lark.button('Runbook', 'https://x.test/rb'), lark.note('auto')]}),
  ];
}
"#;
    let lua = r#"
function process(r)
  return {
    lark.text('chat', 'oc_ops', 'hi ' .. lark.mention('ou_a', 'Ann')),
    lark.post('chat', 'oc_ops', 'Title', {'line one', {'see ', lark.link('here', 'https://x.test'), ' ', lark.at('ou_a')}}, 'en_us'),
    lark.card('chat', 'oc_ops', {title = 'Disk full', template = 'red',
      elements = {'**db-1** at 97%', lark.fields({{'Host', 'db-1'}, {'Use', '97%'}}), lark.hr(), lark.button('Runbook', 'https://x.test/rb'), lark.note('auto')}}),
  }
end
"#;
    let expected = vec![
        json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "text",
               "content": {"text": "hi <at user_id=\"ou_a\">Ann</at>"}}),
        json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "post",
               "content": {"en_us": {"title": "Title", "content": [
                   [{"tag": "text", "text": "line one"}],
                   [{"tag": "text", "text": "see "}, {"tag": "a", "text": "here", "href": "https://x.test"},
                    {"tag": "text", "text": " "}, {"tag": "at", "user_id": "ou_a"}]]}}}),
        json!({"receiveType": "chat", "receiveId": "oc_ops", "contentType": "interactive",
               "content": {"config": {"wide_screen_mode": true},
                           "header": {"title": {"tag": "plain_text", "content": "Disk full"}, "template": "red"},
                           "elements": [
                               {"tag": "div", "text": {"tag": "lark_md", "content": "**db-1** at 97%"}},
                               {"tag": "div", "fields": [
                                   {"is_short": true, "text": {"tag": "lark_md", "content": "**Host**\ndb-1"}},
                                   {"is_short": true, "text": {"tag": "lark_md", "content": "**Use**\n97%"}}]},
                               {"tag": "hr"},
                               {"tag": "action", "actions": [{"tag": "button", "text": {"tag": "plain_text", "content": "Runbook"},
                                                              "type": "default", "url": "https://x.test/rb"}]},
                               {"tag": "note", "elements": [{"tag": "plain_text", "content": "auto"}]}]}}),
    ];
    for (engine, mut chain) in both(js, lua) {
        let out = chain.apply(json!({}), &meta()).unwrap();
        assert_eq!(out, expected, "{engine}");
    }
}

#[test]
fn chain_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Chain>();
}

#[test]
fn the_smallest_memory_limit_still_runs_the_reference_script() {
    for (engine, mut chain) in both_with(REF_JS, REF_LUA, &[("memory.limit.bytes", "1048576")]) {
        for i in 0..200 {
            let out = chain
                .apply(alert(i), &meta())
                .unwrap_or_else(|e| panic!("{engine}: {e}"));
            assert_eq!(out, vec![expected_ref(i)], "{engine}");
        }
    }
}

#[test]
fn state_persists_between_records_until_the_engine_is_rebuilt() {
    let js = "let n = 0;\nfunction process(r) { if (r.loop) { while (true) {} } n += 1; return {n: n}; }";
    let lua = "local n = 0\nfunction process(r) if r.loop then while true do end end n = n + 1 return {n = n} end";
    for (engine, mut chain) in both_with(js, lua, &[("timeout.ms", "50")]) {
        let ns: Vec<Value> = (0..3)
            .map(|_| chain.apply(json!({}), &meta()).unwrap()[0]["n"].clone())
            .collect();
        assert_eq!(ns, [json!(1), json!(2), json!(3)], "{engine}");
        chain.apply(json!({"loop": true}), &meta()).unwrap_err();
        // A timeout rebuilds the interpreter: the script's top level runs again.
        assert_eq!(
            chain.apply(json!({}), &meta()).unwrap()[0]["n"],
            1,
            "{engine}"
        );
    }
}

#[test]
fn javascript_dynamic_import_cannot_load_anything() {
    let js = r#"
let loaded = 'pending';
function process(r) {
  if (r.first) {
    import('/etc/passwd').then(() => { loaded = 'loaded'; }, (e) => { loaded = 'refused: ' + e.name; });
  }
  return {loaded};
}
"#;
    let mut chain = chain_with("javascript", js, &[]);
    chain.apply(json!({"first": true}), &meta()).unwrap();
    let out = chain.apply(json!({}), &meta()).unwrap();
    let loaded = out[0]["loaded"].as_str().unwrap();
    assert!(loaded.starts_with("refused"), "{loaded}");
}
