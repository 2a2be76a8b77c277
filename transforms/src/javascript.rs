//! The `javascript` engine: QuickJS-NG through rquickjs.
//!
//! One runtime and context per transform instance (so per worker), reused across records. Values
//! cross the boundary by direct conversion (serde_json ↔ JS objects), not through JSON text.
//!
//! Sandbox: the context has only the ECMAScript built-ins (no `std`/`os` modules, no module
//! loader), so a script cannot touch files, the network or processes. An interrupt handler stops
//! a call at its deadline with an uncatchable error; the runtime's allocator refuses to grow past
//! the memory limit. After a timeout or a memory overrun the runtime is dropped and rebuilt on
//! the next record, so no half-finished state leaks into it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rquickjs::allocator::{Allocator, RustAllocator};
use rquickjs::context::EvalOptions;
use rquickjs::function::This;
use rquickjs::{
    Array, Context, Ctx, Error as JsError, Function, Object, Runtime, Type, Value as JsValue,
};
use serde_json::{Map, Number, Value};

use crate::sandbox::{outputs, script_log, Deadline, ScriptConfig};
use crate::{RecordMeta, Transform, TransformConfigError, TransformError};

const HELPERS: &str = include_str!("helpers.js");
const HELPERS_NAME: &str = "lark-helpers.js";
/// JS stack the script may use; deeper recursion is a `RangeError`. Worker threads have 2 MiB.
const MAX_STACK: usize = 512 * 1024;
/// Promise jobs one call may queue (they run right after `process` returns).
const MAX_JOBS: usize = 10_000;
/// Deeper values are refused in both directions (also catches cyclic results).
const MAX_DEPTH: usize = 128;

/// A JavaScript transform: `function process(record, meta) { ... }`.
pub struct JavaScript {
    script: ScriptConfig,
    deadline: Deadline,
    /// Set by the runtime's allocator when it refuses memory; cleared before each call.
    refused: Arc<AtomicBool>,
    /// `None` after a timeout or memory overrun: rebuilt before the next record.
    state: Option<JsState>,
}

/// Field order matters: the context must be dropped before its runtime.
///
/// `process` is looked up in the globals on each call (a hash lookup): rquickjs's `Persistent`
/// handle is not `Send`, and the engine must be.
struct JsState {
    context: Context,
    _runtime: Runtime,
}

/// How a call failed, which decides whether the runtime may be reused.
enum Failure {
    Script(String, Option<u32>),
    /// A failure after which the runtime is not reused.
    Reset(String),
    Timeout(Option<u32>),
    Memory(Option<u32>),
}

impl JavaScript {
    /// Loads the helpers and the script, and checks that it defines `process`.
    pub fn new(script: ScriptConfig) -> Result<Self, TransformConfigError> {
        let deadline = Deadline::default();
        let refused = Arc::new(AtomicBool::new(false));
        let state = JsState::load(&script, &deadline, &refused).map_err(|e| {
            script.config_error(format!(
                "the script does not load: {}{}",
                e.message,
                e.line.map(|l| format!(" (line {l})")).unwrap_or_default()
            ))
        })?;
        Ok(JavaScript {
            script,
            deadline,
            refused,
            state: Some(state),
        })
    }
}

impl JsState {
    fn load(
        script: &ScriptConfig,
        deadline: &Deadline,
        refused: &Arc<AtomicBool>,
    ) -> Result<JsState, TransformError> {
        let err = |m: String| script.error(m, None);
        refused.store(false, Ordering::Relaxed);
        let allocator = LimitedAllocator {
            used: 0,
            limit: script.limits.memory,
            refused: refused.clone(),
        };
        let runtime = Runtime::new_with_alloc(allocator)
            .map_err(|e| err(format!("cannot start QuickJS: {e}")))?;
        runtime.set_max_stack_size(MAX_STACK);
        let hook = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || hook.expired())));
        let context =
            Context::full(&runtime).map_err(|e| err(format!("cannot start QuickJS: {e}")))?;
        deadline.arm(script.limits.load_timeout());
        let loaded = context.with(|ctx| -> Result<(), Failure> {
            let install: Function = ctx
                .eval_with_options(HELPERS, eval_options(HELPERS_NAME))
                .map_err(|e| failure(&ctx, e, script, deadline, refused))?;
            let name = script.name.clone();
            let log = Function::new(ctx.clone(), move |level: i32, msg: String| {
                script_log(&name, level, &msg)
            })
            .map_err(|e| failure(&ctx, e, script, deadline, refused))?;
            install
                .call::<_, ()>((log,))
                .map_err(|e| failure(&ctx, e, script, deadline, refused))?;
            ctx.eval_with_options::<(), _>(
                script.source.as_str(),
                eval_options(&script.chunk_name),
            )
            .map_err(|e| failure(&ctx, e, script, deadline, refused))?;
            let process: JsValue = ctx
                .globals()
                .get("process")
                .map_err(|e| failure(&ctx, e, script, deadline, refused))?;
            if !process.is_function() {
                return Err(Failure::Script(
                    "the script defines no function 'process(record, meta)'".into(),
                    None,
                ));
            }
            Ok(())
        });
        deadline.disarm();
        loaded.map_err(|f| match f {
            Failure::Script(m, line) => script.error(m, line),
            Failure::Reset(m) => script.error(m, None),
            Failure::Timeout(line) => script.error(
                format!(
                    "the script's top level timed out after {} ms",
                    script.limits.load_timeout().as_millis()
                ),
                line,
            ),
            Failure::Memory(line) => script.error(script.memory_message(), line),
        })?;
        Ok(JsState {
            context,
            _runtime: runtime,
        })
    }
}

/// The runtime's allocator: Rust's, with a byte budget. QuickJS's own limit is not used, so that
/// a refusal is always seen here, even when QuickJS then lacks the memory to build its
/// "out of memory" error (it throws `null` then).
struct LimitedAllocator {
    used: usize,
    limit: usize,
    refused: Arc<AtomicBool>,
}

impl LimitedAllocator {
    fn admit(&mut self, more: usize) -> bool {
        if self.used.saturating_add(more) > self.limit {
            self.refused.store(true, Ordering::Relaxed);
            false
        } else {
            true
        }
    }
}

// SAFETY: every pointer comes from and goes back to `RustAllocator`, whose contract this keeps;
// the wrapper only counts bytes and refuses requests beyond the budget (a null return, which
// QuickJS handles as out of memory).
unsafe impl Allocator for LimitedAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.admit(size) {
            return std::ptr::null_mut();
        }
        let p = RustAllocator.alloc(size);
        if !p.is_null() {
            self.used += unsafe { RustAllocator::usable_size(p) };
        }
        p
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        let Some(total) = count.checked_mul(size) else {
            return std::ptr::null_mut();
        };
        if !self.admit(total) {
            return std::ptr::null_mut();
        }
        let p = RustAllocator.calloc(count, size);
        if !p.is_null() {
            self.used += unsafe { RustAllocator::usable_size(p) };
        }
        p
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        self.used = self
            .used
            .saturating_sub(unsafe { RustAllocator::usable_size(ptr) });
        unsafe { RustAllocator.dealloc(ptr) }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        // realloc(NULL, n) is malloc(n) in C; RustAllocator would read a header before NULL.
        if ptr.is_null() {
            return self.alloc(new_size);
        }
        let old = unsafe { RustAllocator::usable_size(ptr) };
        if new_size > old && !self.admit(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = unsafe { RustAllocator.realloc(ptr, new_size) };
        if !p.is_null() {
            self.used = self.used.saturating_sub(old) + unsafe { RustAllocator::usable_size(p) };
        }
        p
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        unsafe { RustAllocator::usable_size(ptr) }
    }
}

fn eval_options(file: &str) -> EvalOptions {
    let mut o = EvalOptions::default();
    o.global = true;
    o.strict = false;
    o.filename = Some(file.to_string());
    o
}

impl Transform for JavaScript {
    fn name(&self) -> &str {
        &self.script.name
    }

    fn apply(&mut self, value: Value, meta: &RecordMeta) -> Result<Vec<Value>, TransformError> {
        if self.state.is_none() {
            self.state = Some(JsState::load(&self.script, &self.deadline, &self.refused)?);
        }
        let state = self.state.as_ref().expect("loaded above");
        let script = &self.script;
        let deadline = &self.deadline;
        let refused = &self.refused;
        refused.store(false, Ordering::Relaxed);
        deadline.arm(script.limits.timeout);
        let result = state.context.with(|ctx| -> Result<Value, Failure> {
            let fail = |e| failure(&ctx, e, script, deadline, refused);
            let process: Function = ctx.globals().get("process").map_err(fail)?;
            let record = to_js(&ctx, &value, 0).map_err(fail)?;
            let meta = meta_to_js(&ctx, meta).map_err(fail)?;
            let out: JsValue = process.call((record, meta)).map_err(fail)?;
            // Promise jobs the call queued run now, under the same deadline, so they cannot pile
            // up in the runtime from record to record.
            let mut jobs = 0;
            while ctx.execute_pending_job() {
                jobs += 1;
                if deadline.expired() {
                    return Err(Failure::Timeout(None));
                }
                if jobs > MAX_JOBS {
                    return Err(Failure::Reset(format!(
                        "the call queued more than {MAX_JOBS} promise jobs"
                    )));
                }
            }
            if out.is_promise() {
                return Err(Failure::Script(
                    "process returned a Promise: async functions are not supported".into(),
                    None,
                ));
            }
            match from_js(&out, 0) {
                Ok(v) => Ok(v.unwrap_or(Value::Null)),
                Err(Conv::Js(e)) => Err(fail(e)),
                Err(Conv::Msg(m)) => Err(Failure::Script(format!("process returned {m}"), None)),
            }
        });
        deadline.disarm();
        match result {
            Ok(v) => outputs(script, v),
            Err(Failure::Script(m, line)) => Err(script.error(m, line)),
            Err(Failure::Timeout(line)) => {
                self.state = None;
                Err(script.error(script.timeout_message(), line))
            }
            Err(Failure::Reset(m)) => {
                self.state = None;
                Err(script.error(m, None))
            }
            Err(Failure::Memory(line)) => {
                self.state = None;
                Err(script.error(script.memory_message(), line))
            }
        }
    }
}

/// Turns an rquickjs error (usually a pending exception) into a [`Failure`].
fn failure(
    ctx: &Ctx<'_>,
    e: JsError,
    script: &ScriptConfig,
    deadline: &Deadline,
    refused: &AtomicBool,
) -> Failure {
    let (message, stack) = match e {
        JsError::Exception => describe(&ctx.catch()),
        JsError::Allocation => ("out of memory".to_string(), None),
        other => (other.to_string(), None),
    };
    let line = stack
        .as_deref()
        .and_then(|s| script.line_in(s))
        .or_else(|| script.line_in(&message));
    if deadline.fired() {
        Failure::Timeout(line)
    } else if refused.load(Ordering::Relaxed) || message.contains("out of memory") {
        Failure::Memory(line)
    } else {
        Failure::Script(message, line)
    }
}

/// The message and stack trace of a thrown value.
fn describe(thrown: &JsValue<'_>) -> (String, Option<String>) {
    if let Some(exc) = thrown.as_exception() {
        let name: Option<String> = exc.get("name").ok();
        let message = exc.message().unwrap_or_default();
        let text = match name {
            Some(n) if !n.is_empty() => format!("{n}: {message}"),
            _ => message,
        };
        return (text, exc.stack());
    }
    let text = match thrown.as_string().and_then(|s| s.to_string().ok()) {
        Some(s) => s,
        None => match from_js(thrown, 0) {
            Ok(Some(v)) => format!("uncaught {v}"),
            _ => format!("uncaught {}", thrown.type_name()),
        },
    };
    (text, None)
}

/// serde_json → JS, building objects directly (no JSON text in between).
fn to_js<'js>(ctx: &Ctx<'js>, v: &Value, depth: usize) -> rquickjs::Result<JsValue<'js>> {
    if depth > MAX_DEPTH {
        return Err(JsError::new_from_js_message(
            "JSON",
            "object",
            format!("record nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(match v {
        Value::Null => JsValue::new_null(ctx.clone()),
        Value::Bool(b) => JsValue::new_bool(ctx.clone(), *b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => match i32::try_from(i) {
                Ok(i) => JsValue::new_int(ctx.clone(), i),
                Err(_) => JsValue::new_float(ctx.clone(), i as f64),
            },
            None => JsValue::new_float(ctx.clone(), n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        Value::Array(items) => {
            let arr = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                arr.set(i, to_js(ctx, item, depth + 1)?)?;
            }
            arr.into_value()
        }
        Value::Object(map) => {
            let obj = Object::new(ctx.clone())?;
            for (k, item) in map {
                obj.set(k.as_str(), to_js(ctx, item, depth + 1)?)?;
            }
            obj.into_value()
        }
    })
}

fn meta_to_js<'js>(ctx: &Ctx<'js>, meta: &RecordMeta) -> rquickjs::Result<JsValue<'js>> {
    let obj = Object::new(ctx.clone())?;
    obj.set("topic", meta.topic.as_str())?;
    obj.set("partition", meta.partition)?;
    // Offsets and timestamps exceed i32: numbers (exact up to 2^53).
    obj.set("offset", meta.offset as f64)?;
    // Absent key and timestamp are null, as in JSON.
    match &meta.key {
        Some(k) => obj.set("key", k.as_str())?,
        None => obj.set("key", JsValue::new_null(ctx.clone()))?,
    }
    let headers = Object::new(ctx.clone())?;
    for (k, v) in &meta.headers {
        headers.set(k.as_str(), v.as_str())?;
    }
    obj.set("headers", headers)?;
    match meta.timestamp {
        Some(t) => obj.set("timestamp", t as f64)?,
        None => obj.set("timestamp", JsValue::new_null(ctx.clone()))?,
    }
    Ok(obj.into_value())
}

enum Conv {
    Js(JsError),
    Msg(String),
}

impl From<JsError> for Conv {
    fn from(e: JsError) -> Self {
        Conv::Js(e)
    }
}

/// JS → serde_json, following `JSON.stringify`: `undefined`, functions and symbols are left out
/// of objects (and become `null` in arrays), non-finite numbers become `null`, `toJSON` is
/// honoured (dates become ISO strings). BigInts and promises are refused.
fn from_js(v: &JsValue<'_>, depth: usize) -> Result<Option<Value>, Conv> {
    if depth > MAX_DEPTH {
        return Err(Conv::Msg(format!(
            "a value nested deeper than {MAX_DEPTH} levels (a cycle?)"
        )));
    }
    Ok(Some(match v.type_of() {
        Type::Uninitialized | Type::Undefined => return Ok(None),
        Type::Null => Value::Null,
        Type::Bool => Value::Bool(v.as_bool().unwrap_or_default()),
        Type::Int => Value::from(v.as_int().unwrap_or_default()),
        Type::Float => number(v.as_float().unwrap_or(f64::NAN)),
        Type::String => Value::String(
            v.as_string()
                .map(|s| s.to_string())
                .transpose()?
                .unwrap_or_default(),
        ),
        Type::Symbol | Type::Function | Type::Constructor => return Ok(None),
        Type::BigInt => return Err(Conv::Msg("a BigInt, which JSON cannot hold".into())),
        Type::Promise => {
            return Err(Conv::Msg(
                "a Promise: async functions are not supported".into(),
            ))
        }
        Type::Array => {
            let arr = v.as_array().expect("type is array");
            let mut out = Vec::with_capacity(arr.len());
            for i in 0..arr.len() {
                let item: JsValue = arr.get(i)?;
                out.push(from_js(&item, depth + 1)?.unwrap_or(Value::Null));
            }
            Value::Array(out)
        }
        Type::Object | Type::Exception | Type::Proxy => {
            let obj = v.as_object().expect("type is object");
            let to_json: JsValue = obj.get("toJSON")?;
            if let Some(f) = to_json.as_function() {
                let replaced: JsValue = f.call((This(obj.clone()),))?;
                return from_js(&replaced, depth + 1);
            }
            let mut map = Map::new();
            for prop in obj.props::<String, JsValue>() {
                let (k, item) = prop?;
                if let Some(item) = from_js(&item, depth + 1)? {
                    map.insert(k, item);
                }
            }
            Value::Object(map)
        }
        Type::Module | Type::Unknown => return Ok(None),
    }))
}

/// A JS number as JSON: integral values stay integers (`3`, not `3.0`), like `JSON.stringify`.
fn number(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        return Value::from(f as i64);
    }
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn js(src: &str) -> JavaScript {
        JavaScript::new(ScriptConfig::inline("t", src)).unwrap()
    }

    #[test]
    fn values_round_trip_like_json() {
        let mut t = js("function process(r) { return r; }");
        let v = json!({"s": "a\"b\n✓", "i": 7, "big": 12345678901i64, "f": 1.5, "neg": -3,
                       "b": true, "n": null, "arr": [1, "x", {"y": []}], "o": {}});
        let out = t.apply(v.clone(), &RecordMeta::default()).unwrap();
        assert_eq!(out, vec![v]);
    }

    #[test]
    fn results_follow_json_stringify() {
        let mut t = js(
            "function process() { return {u: undefined, f: function(){}, nan: NaN, \
                        three: 3.0, half: 0.5, d: new Date(0), a: [undefined, 1]}; }",
        );
        let out = t.apply(json!({}), &RecordMeta::default()).unwrap();
        assert_eq!(
            out,
            vec![json!({"nan": null, "three": 3, "half": 0.5,
                        "d": "1970-01-01T00:00:00.000Z", "a": [null, 1]})]
        );
        let mut t = js("function process() { const o = {}; o.self = o; return o; }");
        let e = t.apply(json!({}), &RecordMeta::default()).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let mut t = js("function process() { return {n: 10n}; }");
        let e = t.apply(json!({}), &RecordMeta::default()).unwrap_err();
        assert!(e.message.contains("BigInt"), "{e}");
        let mut t = js("async function process() { return {}; }");
        let e = t.apply(json!({}), &RecordMeta::default()).unwrap_err();
        assert!(e.message.contains("Promise"), "{e}");
    }

    #[test]
    fn thrown_values_are_described() {
        let mut t = js("function process(r) {\n  throw 'plain string';\n}");
        let e = t.apply(json!({}), &RecordMeta::default()).unwrap_err();
        assert_eq!(e.message, "plain string");
        let mut t = js("function process(r) {\n  throw {code: 7};\n}");
        let e = t.apply(json!({}), &RecordMeta::default()).unwrap_err();
        assert_eq!(e.message, r#"uncaught {"code":7}"#);
    }

    #[test]
    fn missing_process_and_syntax_errors_fail_at_load() {
        let e = JavaScript::new(ScriptConfig::inline("t", "var x = 1;"))
            .err()
            .unwrap();
        assert_eq!(e.key, "transforms.t.source");
        assert!(e.message.contains("no function 'process"), "{e}");
        let e = JavaScript::new(ScriptConfig::inline("t", "\n\nfunction process( {"))
            .err()
            .unwrap();
        assert!(e.message.contains("SyntaxError"), "{e}");
        assert!(e.message.contains("(line 3)"), "{e}");
    }

    #[test]
    fn promise_jobs_run_under_the_deadline_and_cannot_pile_up() {
        let mut t = js("let seen = 0;\nfunction process(r) {\n  Promise.resolve().then(() => { seen += 1; });\n  return {seen};\n}");
        let outs: Vec<Value> = (0..3)
            .map(|_| t.apply(json!({}), &RecordMeta::default()).unwrap()[0]["seen"].clone())
            .collect();
        assert_eq!(outs, [json!(0), json!(1), json!(2)]);
        let mut t = js(
            "function f() { Promise.resolve().then(f); }\nfunction process(r) { f(); return {}; }",
        );
        let e = t.apply(json!({}), &RecordMeta::default()).unwrap_err();
        assert!(
            e.message.contains("timed out") || e.message.contains("promise jobs"),
            "{e}"
        );
        let mut t = js(
            "function process(r) { Promise.resolve().then(() => { while (true) {} }); return {}; }",
        );
        let e = t.apply(json!({}), &RecordMeta::default()).unwrap_err();
        assert!(e.message.contains("timed out"), "{e}");
    }
}
