//! Response classification: HTTP status + body `code` → what to do next.
//!
//! Lark answers most failures with HTTP 400 and a business `code`, rate limits with 429 or 400, and
//! webhooks with 200 + code. A generic "retry 5xx, drop 4xx" policy is wrong for Lark in both
//! directions (peers.md §4.1), so every code lark-api.md §3 names is mapped here explicitly.
//!
//! [`read_answer`] turns a whole answer (status, body text, the two headers that matter) into a
//! result; it is pure, so the fuzz target `fuzz/fuzz_targets/lark_answer.rs` runs it on any bytes.
//!
//! The same code means different things on different APIs (230071 is "no thread replies here"
//! for a reply and "not the sender" for an edit; 230075 "encrypted chat" for a send and "edit
//! window passed" for an edit): [`Call`] names the API, and [`LarkError::for_call`] re-reads an
//! answer to an update, edit or recall with that call's table (lark-api.md §14).

use std::time::Duration;

use serde_json::Value;

/// The retry classes of lark-api.md §3, plus `Fatal` for app-wide configuration problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// R-hdr: throttled; wait `x-ogw-ratelimit-reset` (or back off) and retry.
    RateLimited,
    /// R-bo: transient; retry with exponential backoff and jitter.
    Backoff,
    /// R-tok: the tenant token was rejected; evict, re-mint and retry once.
    Token,
    /// F-cfg that concerns this one message (e.g. an external chat not enabled): dead-letter it.
    Config,
    /// F-rec: this message can never succeed as it is: dead-letter it.
    Record,
    /// F-msg: the message *id* cannot be updated, edited or recalled any more (recalled,
    /// deleted, too old, out of edits, not ours, not a card…), although a new message to the
    /// same chat can still be sent: not retryable; the connector falls back to sending a new
    /// message (lark-api.md §14).
    Message,
    /// F-cfg that breaks every message (bad credentials, missing scope, bot disabled, quota spent):
    /// the connector stops instead of dead-lettering the whole topic, and the record is not
    /// committed, so fixing the config and restarting delivers it.
    Fatal,
}

impl ErrorClass {
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::RateLimited | ErrorClass::Backoff)
    }
    /// The label used in logs and in the `__connect.errors.lark.class` DLQ header.
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "R-hdr",
            ErrorClass::Backoff => "R-bo",
            ErrorClass::Token => "R-tok",
            ErrorClass::Config => "F-cfg",
            ErrorClass::Record => "F-rec",
            ErrorClass::Message => "F-msg",
            ErrorClass::Fatal => "F-cfg-fatal",
        }
    }
}

/// A failed Lark call with everything the DLQ and the logs need. Never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct LarkError {
    pub class: ErrorClass,
    pub http_status: Option<u16>,
    pub code: Option<i64>,
    pub msg: String,
    pub log_id: Option<String>,
    /// The server's `x-ogw-ratelimit-reset`, when it sent one.
    pub retry_after: Option<Duration>,
}

/// Which Lark API an answer came from: the same code can mean different things per API
/// (lark-api.md §14), so the answers of the lifecycle calls are classified with their own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// Send, reply, urgent, look-up, webhook: the tables of lark-api.md §3, §5, §6, §8.
    Send,
    /// `PATCH /open-apis/im/v1/messages/{id}`: update a card (§14).
    UpdateCard,
    /// `PUT /open-apis/im/v1/messages/{id}`: edit a text or post message (§14).
    Edit,
    /// `DELETE /open-apis/im/v1/messages/{id}`: recall a message (§14).
    Recall,
}

/// Which quota a throttle answer says was exceeded (lark-api.md §3, §4), so the sender holds back
/// that scope, and only that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The app's quota (99991400 from the gateway, 11232 from the message service; for a webhook,
    /// its bot's quota: 11232 or 9499 "too many request", §8): every send of that scope waits.
    /// The duration is the gateway's `x-ogw-ratelimit-reset` for 99991400; the header belongs to
    /// the gateway's limit (§4), so the others carry none and the sender picks the hold.
    App(Option<Duration>),
    /// One receiver's 5 QPS, a user's or a chat's (230020, 11233): only that receiver waits.
    Receiver,
}

impl LarkError {
    /// An error lark-sink decided on itself, with no answer from Lark behind it (no status, code or
    /// log id): a configuration the record cannot be sent with, a failed look-up, a transport
    /// failure.
    pub fn local(class: ErrorClass, msg: impl Into<String>) -> Self {
        LarkError {
            class,
            http_status: None,
            code: None,
            msg: msg.into(),
            log_id: None,
            retry_after: None,
        }
    }

    /// A request that got no answer (refused, reset, timed out): transient (R-bo).
    pub fn transport(msg: impl Into<String>) -> Self {
        LarkError::local(ErrorClass::Backoff, msg)
    }

    /// The same error in another class: a token rejected twice is a configuration error
    /// (lark-api.md §1.6), not a token to re-mint again.
    pub fn with_class(mut self, class: ErrorClass) -> Self {
        self.class = class;
        self
    }

    /// The same answer read as an answer to `call` (lark-api.md §14): a code that call's table
    /// names gets that class; every other code (token, app-wide, unknown) keeps the class it has,
    /// so a token error the client already escalated to fatal stays fatal.
    pub fn for_call(mut self, call: Call) -> Self {
        if let (Some(code), Some(_)) = (self.code, self.http_status) {
            if let Some(class) = call_class(call, code, &self.msg) {
                self.class = class;
            }
        }
        self
    }

    /// Whether this answer to `call` says the message's own update budget was spent (230020 on
    /// a card update or an edit, 5/s per message, lark-api.md §14): hold that message's updates.
    /// [`Self::throttle`] still reports it as [`Throttle::Receiver`] (slow the chat down too, the
    /// §14 recommendation while it is unconfirmed whether updates share the chat's budget).
    pub fn message_throttled(&self, call: Call) -> bool {
        matches!(call, Call::UpdateCard | Call::Edit) && self.code == Some(230020)
    }

    /// The scope this answer throttles, if it is a throttle answer (lark-api.md §3, §4); the
    /// retry class says *whether* to retry, this says *what* waits meanwhile.
    pub fn throttle(&self) -> Option<Throttle> {
        match self.code? {
            99991400 => Some(Throttle::App(self.retry_after)),
            11232 => Some(Throttle::App(None)),
            9499 if is_too_many_requests(&self.msg) => Some(Throttle::App(None)),
            230020 | 11233 => Some(Throttle::Receiver),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let mut s = match (self.code, self.http_status) {
            (Some(c), Some(h)) => format!("Lark code {c} (HTTP {h}): {}", self.msg),
            (None, Some(h)) => format!("HTTP {h}: {}", self.msg),
            (Some(c), None) => format!("Lark code {c}: {}", self.msg),
            (None, None) => self.msg.clone(),
        };
        if let Some(l) = &self.log_id {
            s.push_str(&format!(" [log_id {l}]"));
        }
        s
    }
}

/// The longest `x-ogw-ratelimit-reset` honoured. Lark's quota windows are a second and a minute
/// (lark-api.md §4), so a larger value is not a real reset; taken as is it would hold the whole
/// app back for as long as it says (or overflow `Instant` and panic, for values near `u64::MAX`).
pub const MAX_RATELIMIT_RESET: Duration = Duration::from_secs(60);

/// The parts of an HTTP answer that decide what it means.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a str,
    /// `x-tt-logid` (or, failing that, `x-request-id`).
    pub log_id: Option<&'a str>,
    /// `x-ogw-ratelimit-reset`: seconds until the quota window recovers (lark-api.md §4).
    pub ratelimit_reset: Option<&'a str>,
}

/// Reads a Lark answer: `Ok` (the JSON body and the log id) only for a 2xx with `code` 0,
/// otherwise the classified error with the body's `msg` (or the start of a non-JSON body).
pub fn read_answer(a: Answer<'_>) -> Result<(Value, Option<String>), LarkError> {
    let retry_after = a
        .ratelimit_reset
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RATELIMIT_RESET));
    let body: Option<Value> = serde_json::from_str(a.body).ok();
    let code = body
        .as_ref()
        .and_then(|b| b.get("code"))
        .and_then(Value::as_i64);
    let header_log_id = a.log_id.map(str::to_string);
    let success = (200..300).contains(&a.status);
    if success && code == Some(0) {
        return Ok((body.unwrap_or(Value::Null), header_log_id));
    }
    let msg = body
        .as_ref()
        .and_then(|b| b.get("msg"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| a.body.chars().take(200).collect());
    let log_id = body
        .as_ref()
        .and_then(|b| b.pointer("/error/log_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(header_log_id);
    let class = if success && code.is_none() {
        // A 2xx that is not Lark JSON: a proxy or a wrong base URL.
        ErrorClass::Fatal
    } else {
        classify(a.status, code, &msg)
    };
    Err(LarkError {
        class,
        http_status: Some(a.status),
        code,
        msg,
        log_id,
        retry_after,
    })
}

/// Classifies a non-success answer. `code` is the body's `code` when the body was JSON.
pub fn classify(http_status: u16, code: Option<i64>, msg: &str) -> ErrorClass {
    if let Some(code) = code {
        if let Some(class) = class_of_code(code, msg) {
            return class;
        }
    }
    match http_status {
        429 => ErrorClass::RateLimited,
        408 | 500..=599 => ErrorClass::Backoff,
        // No such endpoint or method (a wrong base URL or path), whether the 404 / 405 page is
        // plain text or Lark-shaped JSON (as `lark-sink emulator` answers): configuration, not the
        // message.
        404 | 405 => ErrorClass::Fatal,
        // A non-JSON 4xx (404 page, proxy error) means a wrong base URL or proxy, not a bad message.
        _ if code.is_none() => ErrorClass::Fatal,
        // An undocumented business code: keep the record (DLQ) and the pipeline moving.
        _ => ErrorClass::Record,
    }
}

/// Classifies a non-success answer to `call` (lark-api.md §14 for the lifecycle calls, §3 and
/// the others for [`Call::Send`]).
pub fn classify_call(call: Call, http_status: u16, code: Option<i64>, msg: &str) -> ErrorClass {
    code.and_then(|c| call_class(call, c, msg))
        .unwrap_or_else(|| classify(http_status, code, msg))
}

/// Whether a recall answer means the message is gone already (recalled, 230011; deleted,
/// 230110): the recall's goal is reached, so lark-sink takes it as success (lark-api.md §14).
pub fn recall_gone(code: i64) -> bool {
    matches!(code, 230011 | 230110)
}

/// The `ext=` details of a 230001 that say this message id cannot be updated although a new
/// message could be sent (lark-api.md §14; lifecycle D-230001): no such id, not a card, the
/// wrong type for an edit, a card that is not shared, another sender's message.
const MESSAGE_230001: &[&str] = &[
    "invalid message_id",
    "not a card",
    "invalid msg_type",
    "update_multi",
    "not the message",
];

/// A 230001 whose `ext=` is `Internal Error`: transient (lifecycle D-230001).
fn is_internal_error(msg: &str) -> bool {
    msg.to_ascii_lowercase().contains("internal error")
}

/// The per-call code tables of lark-api.md §14; `None` = not named there, read as for a send.
fn call_class(call: Call, code: i64, msg: &str) -> Option<ErrorClass> {
    use ErrorClass::*;
    match call {
        Call::Send => None,
        Call::UpdateCard | Call::Edit => update_class(code, msg),
        Call::Recall => Some(match code {
            230001 if is_internal_error(msg) => Backoff,
            // Gone already: the client answers `Recalled::AlreadyGone` instead (§14).
            230011 | 230110 => Message,
            // Too old (admin window), not ours, a system message, invisible: nothing to fall
            // back to (a recall has no "send a new one"), so the record is dead-lettered.
            230009 | 230026 | 230054 | 230050 | 230001 | 230002 | 232009 => Record,
            _ => return None,
        }),
    }
}

/// PATCH and PUT (§14): F-msg where the message cannot change but a new one can be sent.
fn update_class(code: i64, msg: &str) -> Option<ErrorClass> {
    use ErrorClass::*;
    Some(match code {
        230001 if is_internal_error(msg) => Backoff,
        230001 => {
            let lower = msg.to_ascii_lowercase();
            match MESSAGE_230001.iter().any(|ext| lower.contains(ext)) {
                true => Message,
                // Bad content: a new message with it would be refused too.
                false => Record,
            }
        }
        // Recalled, deleted, older than 14 days, out of edits, edit window passed, not the
        // sender, unsupported type, secret / third-party-encrypted group, invisible to the bot.
        230011 | 230110 | 230031 | 230072 | 230075 | 230071 | 230054 | 230073 | 230074 | 230050 => {
            Message
        }
        // The doc calls these F-msg, but they are about the chat, not the message: dissolved,
        // bot not in it, muted / blocked, group settings, cross-tenant p2p. A new message would
        // be refused the same way, so they are dead-lettered (F-rec) instead of falling back.
        232009 | 230002 | 230035 | 230018 | 230038 => Record,
        // The per-message 5/s (or another IM limit): back off (§14, `message_throttled`).
        230020 => Backoff,
        _ => return None,
    })
}

/// Whether a 9499's `msg` says "too many request" (a webhook throttle) rather than "Bad
/// Request…" (a malformed body): 9499 is both, so it is read by code and msg (lark-api.md §8).
fn is_too_many_requests(msg: &str) -> bool {
    msg.to_ascii_lowercase().contains("too many request")
}

/// The code table of lark-api.md §3 (send), §1.4–1.5 (token), §6 (urgent), §8 (webhook).
fn class_of_code(code: i64, msg: &str) -> Option<ErrorClass> {
    use ErrorClass::*;
    Some(match code {
        // §4 gateway rate limit, with x-ogw-ratelimit-reset.
        99991400 => RateLimited,
        // §3 R-bo: IM throttles, in-flight duplicates, internal errors.
        230020 | 11232 | 11233 | 18121 | 230049 | 1500 | 5000 | 10101 | 2200 => Backoff,
        // §3: 11246 is transient only when Lark says so.
        11246 if msg.contains("Service Internal Error") => Backoff,
        // §8: a webhook's "too many request" (seen with HTTP 400) is a throttle; any other 9499
        // ("Bad Request…") is a malformed body, F-rec below.
        9499 if is_too_many_requests(msg) => Backoff,
        // §1.5 token problems (R-tok).
        99991663 | 99991661 | 99991671 | 99991665 | 20005 | 20013 | 4001 => Token,
        // §1.4 credentials, §3 app-wide F-cfg: every message would fail the same way.
        10003 | 10012 | 10013 | 10014 | 10015 | 20002 | 99991543 | 99991664 | 99991403
        | 99991672 | 99991401 | 99991662 | 99991673 | 230006 | 10023 | 10019 => Fatal,
        // §3 F-cfg tied to one chat or tenant setting: dead-letter, keep going.
        230027 | 230036 => Config,
        // §8 webhook: unknown token, IP list, keywords are configuration of that one webhook.
        19001 | 19022 | 19024 | 19021 => Config,
        // §3, §2.5, §6, §8 record-specific failures.
        230001 | 230002 | 230011 | 230012 | 230013 | 230015 | 230017 | 230018 | 230019 | 230022
        | 230023 | 230024 | 230025 | 230028 | 230029 | 230034 | 230035 | 230038 | 230050
        | 230052 | 230053 | 230054 | 230055 | 230071 | 230072 | 230075 | 230098 | 230099
        | 230110 | 230111 | 232009 | 99992351 | 99992361 | 11246 | 11311 | 9499 | 19002 | 19036 => {
            Record
        }
        _ => return None,
    })
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
