//! The `lua` engine: Lua 5.4 through mlua (vendored, so no system Lua is needed).
//!
//! One Lua state per transform instance (so per worker), reused across records. Values cross the
//! boundary through mlua's serde support (serde_json ↔ Lua tables, no JSON text in between).
//!
//! Sandbox: only the `string`, `table`, `math` and `utf8` libraries and a reduced `os` (`time`,
//! `clock`, `date`, `difftime`) are loaded; `io`, `package`/`require`, `debug`, `coroutine`,
//! `dofile`, `loadfile`, `load`, `collectgarbage` and `string.dump` are absent. An instruction
//! hook stops a call at its deadline (and `pcall` cannot swallow that); mlua's allocator refuses
//! to grow past the memory limit. After a timeout or memory overrun the state is dropped and
//! rebuilt on the next record.

use mlua::serde::{DeserializeOptions, SerializeOptions};
use mlua::{
    Error as LuaError, Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib,
    Value as LuaValue, VmState,
};
use serde_json::Value;

use crate::sandbox::{line_after, outputs, script_log, Deadline, ScriptConfig};
use crate::{RecordMeta, Transform, TransformConfigError, TransformError};

const HELPERS: &str = include_str!("helpers.lua");
/// The chunk name Lua reports in messages (`user-script:3: ...`). Not the file name: Lua cuts
/// source names to 60 characters, which would lose the line of a script with a long path.
const CHUNK: &str = "user-script";
/// How often (in VM instructions) the hook checks the clock.
const HOOK_EVERY: u32 = 1000;

/// A Lua transform: `function process(record, meta) ... end`.
pub struct LuaTransform {
    script: ScriptConfig,
    deadline: Deadline,
    /// `None` after a timeout or memory overrun: rebuilt before the next record.
    state: Option<LuaState>,
}

/// Field order matters: `process` is a handle into `lua` and is dropped first.
struct LuaState {
    process: Function,
    lua: Lua,
}

enum Failure {
    Script(String, Option<u32>),
    Timeout(Option<u32>),
    Memory(Option<u32>),
}

/// JSON null arrives as `nil` (so `if record.x then` works); arrays keep their array metatable.
fn to_lua_options() -> SerializeOptions {
    SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
}

/// Functions and other non-JSON values are left out, like `JSON.stringify` does.
fn from_lua_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unsupported_types(false)
}

impl LuaTransform {
    /// Loads the helpers and the script, and checks that it defines `process`.
    pub fn new(script: ScriptConfig) -> Result<Self, TransformConfigError> {
        let deadline = Deadline::default();
        let state = LuaState::load(&script, &deadline).map_err(|e| {
            script.config_error(format!(
                "the script does not load: {}{}",
                e.message,
                e.line.map(|l| format!(" (line {l})")).unwrap_or_default()
            ))
        })?;
        Ok(LuaTransform {
            script,
            deadline,
            state: Some(state),
        })
    }
}

impl LuaState {
    fn load(script: &ScriptConfig, deadline: &Deadline) -> Result<LuaState, TransformError> {
        let setup = |e: LuaError| script.error(format!("cannot start Lua: {e}"), None);
        let lua = Lua::new_with(
            StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::OS,
            LuaOptions::new(),
        )
        .map_err(setup)?;
        lua.set_memory_limit(script.limits.memory).map_err(setup)?;
        let hook = deadline.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, debug| {
                if hook.expired() {
                    // Say where the script was, as Lua's own errors do (`chunk:line: ...`).
                    let source = debug
                        .source()
                        .source
                        .map(|s| s.trim_start_matches(['=', '@']).to_string());
                    Err(LuaError::runtime(match (source, debug.current_line()) {
                        (Some(src), Some(line)) => format!("{src}:{line}: timed out"),
                        _ => "timed out".to_string(),
                    }))
                } else {
                    Ok(VmState::Continue)
                }
            },
        )
        .map_err(setup)?;
        sandbox(&lua, script, deadline).map_err(setup)?;

        deadline.arm(script.limits.load_timeout());
        let loaded = (|| -> Result<Function, Failure> {
            let fail = |e| failure(e, deadline);
            lua.load(script.source.as_str())
                .set_name(format!("={CHUNK}"))
                .exec()
                .map_err(fail)?;
            match lua.globals().get::<LuaValue>("process").map_err(fail)? {
                LuaValue::Function(f) => Ok(f),
                _ => Err(Failure::Script(
                    "the script defines no function 'process(record, meta)'".into(),
                    None,
                )),
            }
        })();
        deadline.disarm();
        let process = loaded.map_err(|f| match f {
            Failure::Script(m, line) => script.error(m, line),
            Failure::Timeout(line) => script.error(
                format!(
                    "the script's top level timed out after {} ms",
                    script.limits.load_timeout().as_millis()
                ),
                line,
            ),
            Failure::Memory(line) => script.error(script.memory_message(), line),
        })?;
        Ok(LuaState { process, lua })
    }
}

/// Removes what could reach files, processes or the environment, and installs the helpers.
fn sandbox(lua: &Lua, script: &ScriptConfig, deadline: &Deadline) -> mlua::Result<()> {
    let g = lua.globals();
    for name in ["dofile", "loadfile", "load", "collectgarbage", "require"] {
        g.raw_set(name, LuaValue::Nil)?;
    }
    let string: mlua::Table = g.get("string")?;
    string.raw_set("dump", LuaValue::Nil)?;
    // os: keep the clock and date functions only (no execute, exit, getenv, remove, rename, tmpname).
    let os: mlua::Table = g.get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "clock", "date", "difftime"] {
        safe_os.raw_set(name, os.get::<LuaValue>(name)?)?;
    }
    g.raw_set("os", safe_os)?;

    let name = script.name.clone();
    let log = lua.create_function(move |_, (level, msg): (i32, String)| {
        script_log(&name, level, &msg);
        Ok(())
    })?;
    let probe = deadline.clone();
    let timed_out = lua.create_function(move |_, ()| Ok(probe.fired()))?;
    let encode = lua.create_function(|lua, v: LuaValue| {
        let json: Value = lua.from_value_with(v, from_lua_options())?;
        serde_json::to_string(&normalize(json)).map_err(LuaError::external)
    })?;
    let decode = lua.create_function(|lua, text: String| {
        let json: Value = serde_json::from_str(&text).map_err(LuaError::external)?;
        lua.to_value_with(&json, to_lua_options())
    })?;
    lua.load(HELPERS)
        .set_name("=lark-helpers.lua")
        .call::<()>((
            log,
            timed_out,
            encode,
            decode,
            lua.null(),
            lua.array_metatable(),
        ))?;
    Ok(())
}

impl Transform for LuaTransform {
    fn name(&self) -> &str {
        &self.script.name
    }

    fn apply(&mut self, value: Value, meta: &RecordMeta) -> Result<Vec<Value>, TransformError> {
        if self.state.is_none() {
            self.state = Some(LuaState::load(&self.script, &self.deadline)?);
        }
        let state = self.state.as_ref().expect("loaded above");
        let script = &self.script;
        let deadline = &self.deadline;
        deadline.arm(script.limits.timeout);
        let result = (|| -> Result<Value, Failure> {
            let fail = |e| failure(e, deadline);
            let lua = &state.lua;
            let record = lua.to_value_with(&value, to_lua_options()).map_err(fail)?;
            let meta = lua.to_value_with(meta, to_lua_options()).map_err(fail)?;
            let out: LuaValue = state.process.call((record, meta)).map_err(fail)?;
            let json: Value = lua.from_value_with(out, from_lua_options()).map_err(|e| {
                match failure(e, deadline) {
                    Failure::Script(m, line) => Failure::Script(
                        format!("process returned a value JSON cannot hold: {m}"),
                        line,
                    ),
                    other => other,
                }
            })?;
            Ok(normalize(json))
        })();
        deadline.disarm();
        match result {
            Ok(v) => outputs(script, v),
            Err(Failure::Script(m, line)) => Err(script.error(m, line)),
            Err(Failure::Timeout(line)) => {
                self.state = None;
                Err(script.error(script.timeout_message(), line))
            }
            Err(Failure::Memory(line)) => {
                self.state = None;
                Err(script.error(script.memory_message(), line))
            }
        }
    }
}

/// The innermost message of an mlua error, without tracebacks.
fn root_message(e: &LuaError) -> (String, bool) {
    match e {
        LuaError::CallbackError { cause, .. } | LuaError::WithContext { cause, .. } => {
            root_message(cause)
        }
        LuaError::BadArgument { cause, .. } => (e.to_string(), root_message(cause).1),
        LuaError::MemoryError(m) => (m.clone(), true),
        LuaError::RuntimeError(m) => (m.clone(), false),
        LuaError::SyntaxError { message, .. } => (message.clone(), false),
        other => (other.to_string(), false),
    }
}

fn failure(e: LuaError, deadline: &Deadline) -> Failure {
    let (mut message, memory) = root_message(&e);
    let line = line_after(&message, CHUNK);
    // The first line is the error; mlua appends Lua's traceback, which the line number replaces.
    if let Some(i) = message.find("\nstack traceback:") {
        message.truncate(i);
    }
    // Lua prefixes messages with `chunk:line: `; the line is reported separately.
    let prefix = line.map(|l| format!("{CHUNK}:{l}: "));
    let message = match prefix {
        Some(p) if message.starts_with(&p) => message[p.len()..].to_string(),
        _ => message,
    };
    if deadline.fired() {
        Failure::Timeout(line)
    } else if memory || message.contains("not enough memory") {
        Failure::Memory(line)
    } else {
        Failure::Script(message, line)
    }
}

/// Lua 5.4 has separate integer and float subtypes; `10 / 2` is the float `5.0`. JSON readers
/// expect `5`, so integral floats become integers (as in the JavaScript engine).
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                Value::from(f as i64)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lua(src: &str) -> LuaTransform {
        LuaTransform::new(ScriptConfig::inline("t", src)).unwrap()
    }

    #[test]
    fn values_round_trip() {
        let mut t = lua("function process(r) return r end");
        let v = json!({"s": "a\"b\n✓", "i": 7, "big": 12345678901i64, "f": 1.5,
                       "b": true, "arr": [1, "x", {"y": []}], "o": {}});
        assert_eq!(t.apply(v.clone(), &RecordMeta::default()).unwrap(), vec![v]);
    }

    #[test]
    fn nulls_are_nil_and_lark_null_writes_null() {
        let mut t = lua("function process(r) return {absent = (r.x == nil), n = lark.null, half = 10 / 4, five = 10 / 2} end");
        let out = t.apply(json!({"x": null}), &RecordMeta::default()).unwrap();
        assert_eq!(
            out,
            vec![json!({"absent": true, "n": null, "half": 2.5, "five": 5})]
        );
    }

    #[test]
    fn json_helpers() {
        let mut t = lua("function process(r) local d = lark.json_decode(r.payload) \
             return {s = lark.json_encode({a = d.a + 1}), empty = lark.array({})} end");
        let out = t
            .apply(json!({"payload": "{\"a\": 1}"}), &RecordMeta::default())
            .unwrap();
        assert_eq!(out, vec![json!({"s": "{\"a\":2}", "empty": []})]);
    }

    #[test]
    fn missing_process_and_syntax_errors_fail_at_load() {
        let e = LuaTransform::new(ScriptConfig::inline("t", "x = 1"))
            .err()
            .unwrap();
        assert_eq!(e.key, "transforms.t.source");
        assert!(e.message.contains("no function 'process"), "{e}");
        let e = LuaTransform::new(ScriptConfig::inline("t", "\n\nfunction process(\n"))
            .err()
            .unwrap();
        assert!(e.message.contains("(line"), "{e}");
    }
}
