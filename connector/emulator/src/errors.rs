//! The Lark error-code table the emulator can answer with, and the typed [`ApiError`] handlers
//! return.
//!
//! Every code lives here once, with its HTTP status and `msg` text, so handlers never spell a
//! number or a message inline and a client test can compare against the same table
//! (`lark-api.md` §1.4, §1.5, §3, §6, §8). Where the spec marks a status UNCERTAIN the choice is
//! noted next to the constant.

use serde_json::Value;

/// One Lark business error: `code`, the HTTP status it travels with, and its `msg` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LarkCode {
    pub code: i64,
    pub http: u16,
    pub msg: &'static str,
}

const fn c(code: i64, http: u16, msg: &'static str) -> LarkCode {
    LarkCode { code, http, msg }
}

// --- token endpoint (lark-api.md §1.4). HTTP status is UNCERTAIN (200 in the official CLI's
// stubs, 400 in a community log); we answer 400 so that clients which only look at the status
// also notice, and clients that follow the spec branch on `code` anyway.
pub const TOKEN_INVALID_PARAM: LarkCode = c(10003, 400, "invalid param");
pub const TOKEN_SECRET_INVALID: LarkCode = c(10014, 400, "app secret invalid");

// --- auth on later calls (§1.5); HTTP 400 as the spec recommends for the emulator.
pub const NEED_TOKEN: LarkCode = c(99991661, 400, "Need a token");
pub const INVALID_TOKEN: LarkCode = c(
    99991663,
    400,
    "Invalid access token for authorization. Please make a request with token attached",
);
pub const BAD_TOKEN_FORMAT: LarkCode = c(99991671, 400, "Invalid token: must start with t-/u-");

/// A missing API scope (§3 table, D-ERR). `msg` is a prefix: [`ApiError::missing_scope`] appends
/// the scope list. HTTP status UNCERTAIN (400 vs 403 in community fixtures); 400 like the other
/// gateway refusals here.
pub const MISSING_SCOPE: LarkCode = c(
    99991672,
    400,
    "Access denied. One of the following scopes is required: ",
);

// --- gateway (§4): HTTP 429 plus the x-ogw-ratelimit-* headers.
pub const RATE_LIMITED: LarkCode = c(99991400, 429, "request trigger frequency limit");

/// Structural request validation (missing / wrongly typed fields, too many entries). Real Lark
/// answers these with the generic 99992402 `field validation failed` (observed in the wild,
/// e.g. for rejected post payloads); the lark-api.md tables do not list it, so we use it only
/// where no IM-specific code fits (malformed bodies, batch_get_id > 50, urgent list size).
pub const FIELD_VALIDATION: LarkCode = c(99992402, 400, "field validation failed");

// --- IM (§3, §6); all HTTP 400.
/// `msg` is a prefix: callers append the `ext=` detail via [`ApiError::ext`].
pub const INVALID_PARAM: LarkCode = c(
    230001,
    400,
    "Your request contains an invalid request parameter, ext=",
);
pub const BOT_NOT_IN_CHAT: LarkCode = c(230002, 400, "The bot can not be outside the group.");
pub const BOT_NOT_ACTIVATED: LarkCode = c(230006, 400, "Bot ability is not activated.");
pub const NOT_MESSAGE_SENDER: LarkCode = c(230012, 400, "Bot is NOT the sender of the message.");
pub const NO_AVAILABILITY: LarkCode = c(230013, 400, "Bot has NO availability to this user.");
/// share_chat content naming a p2p chat (§2.4, §3).
pub const P2P_NOT_SHAREABLE: LarkCode = c(230015, 400, "P2P chat can NOT be shared.");
pub const IM_RATE_LIMITED: LarkCode =
    c(230020, 400, "This operation triggers the frequency limit.");
pub const CONTENT_TOO_LONG: LarkCode = c(
    230025,
    400,
    "The length of the message content reaches its limit.",
);
pub const USER_RESIGNED: LarkCode = c(230029, 400, "User has resigned.");
pub const MESSAGE_IN_FLIGHT: LarkCode = c(230049, 400, "The message is being sent.");

// --- reply-only codes (§2.5, D-REPLY); all HTTP 400. D-REPLY describes them in words, so the
// `msg` texts are our English renderings of those descriptions, not verbatim platform text.
pub const MESSAGE_RECALLED: LarkCode = c(230011, 400, "The message is recalled.");
pub const MESSAGE_INVISIBLE: LarkCode = c(230050, 400, "The message is invisible to the operator.");
pub const NO_THREAD_REPLY: LarkCode = c(
    230071,
    400,
    "The chat of the message does not support replying in a thread.",
);
pub const AGGREGATED_NO_THREAD: LarkCode = c(
    230072,
    400,
    "An aggregated message cannot be replied to in a thread.",
);
pub const SELF_DESTRUCTING: LarkCode = c(
    230111,
    400,
    "A self-destructing message cannot be replied to.",
);

// --- update / edit / recall (`/work/shared/lark-api-lifecycle.md` §1.1-1.3); all HTTP 400,
// texts as the lifecycle tables give them.
/// DELETE after the tenant admin's recall window (lifecycle §1.3).
pub const RECALL_EXPIRED: LarkCode = c(230009, 400, "Message has expired when recall message.");
/// DELETE of a message this app did not send (lifecycle §1.3).
pub const NO_RECALL_PERMISSION: LarkCode = c(230026, 400, "No permission to recall this message.");
/// PATCH of a card sent more than 14 days ago (lifecycle §1.1).
pub const UPDATE_TOO_OLD: LarkCode = c(
    230031,
    400,
    "Message can only be modified within 14 days after sending.",
);
/// DELETE of a system message (lifecycle §1.3, D-MSGTYPE).
pub const UNSUPPORTED_FOR_TYPE: LarkCode = c(
    230054,
    400,
    "This operation is not supported for this message type.",
);
/// PUT of a message another app sent (lifecycle §1.2). Same number as [`NO_THREAD_REPLY`], so
/// it is left out of [`ALL`] (one entry per code); a scripted 230071 fault borrows the reply text
/// unless it names its own `msg`.
pub const NOT_THE_SENDER: LarkCode = c(
    230071,
    400,
    "The operator is not the sender of the message.",
);
/// PUT after 20 edits (lifecycle §1.2). Same number as [`AGGREGATED_NO_THREAD`]; not in [`ALL`].
pub const EDIT_LIMIT_REACHED: LarkCode = c(
    230072,
    400,
    "The message has reached the number of times it can be edited.",
);
/// PUT after the tenant admin's edit window (lifecycle §1.2; for a send, lark-api.md §3 gives
/// 230075 another meaning, which the emulator never answers).
pub const EDIT_WINDOW_PASSED: LarkCode = c(
    230075,
    400,
    "The message has exceeded the time that can be edited.",
);
/// A card the platform could not build (lifecycle §1.1). `msg` is a prefix:
/// [`ApiError::card_build`] appends `ErrCode: N; ErrMsg: …`.
pub const CARD_BUILD_FAILED: LarkCode = c(230099, 400, "Failed to create card content, ext=");
/// Any call on a deleted message (lifecycle §1.1-1.3).
pub const MESSAGE_DELETED: LarkCode = c(
    230110,
    400,
    "Action unavailable as the message has been deleted.",
);

/// Server-side failure (§3 "1500 / 5000 / 10101 / 2200 internal error"); used for JSON bodies
/// of injected HTTP 500 faults.
pub const INTERNAL: LarkCode = c(1500, 500, "internal error");

// --- custom-bot webhooks (§8): every outcome is HTTP 200 but the per-bot throttle below.
pub const WH_BAD_REQUEST: LarkCode = c(9499, 200, "Bad Request");
pub const WH_TOKEN_INVALID: LarkCode = c(
    19001,
    200,
    "param invalid: incoming webhook access token invalid",
);
pub const WH_MSG_TYPE: LarkCode = c(
    19002,
    200,
    "param invalid: incorrect input format or can't find msg_type",
);
pub const WH_SIGN: LarkCode = c(
    19021,
    200,
    "sign match fail or timestamp is not within one hour from current time",
);
pub const WH_KEYWORDS: LarkCode = c(19024, 200, "Key Words Not Found");
pub const WH_TOO_LARGE: LarkCode = c(19036, 200, "The message exceeds the size limit of 30KB");
pub const WH_RATE_LIMITED: LarkCode = c(11232, 200, "create message service trigger rate limit");
/// A custom bot over its own limits (100/min, 5/s): 9499 "too many request", seen with HTTP
/// 400 (the §8 correction). Left out of [`ALL`], which holds one entry per code: a scripted
/// 9499 fault borrows [`WH_BAD_REQUEST`]'s text unless it names its own `msg`. 11232 stays the
/// platform's overall throttle (§8 "system throttling"), which random webhook throttle faults
/// answer.
pub const WH_BOT_THROTTLED: LarkCode = c(9499, 400, "too many request");

// --- the long connection's endpoint (lifecycle §4.1): always HTTP 200, the SDKs branch on `code`
// (HTTP ≠ 200 = retry). `1` and `1000040343` are retryable; any other code stops the client.
/// "system busy": retryable (GO, PY; NODE treats it as terminal).
pub const WS_SYSTEM_BUSY: LarkCode = c(1, 200, "system busy");
/// Internal error: retryable in every SDK.
pub const WS_INTERNAL: LarkCode = c(1000040343, 200, "internal error");
/// Wrong or missing AppID / AppSecret. The real code is UNCONFIRMED (lifecycle §7 item 10);
/// 1000040344 is the Python SDK's local "no credential" code, terminal for every SDK.
pub const WS_BAD_CREDENTIALS: LarkCode = c(1000040344, 200, "app_id or app_secret is invalid");

/// Every code above, so a scripted `Fault::Code` with an empty `msg` (or no `http_status`) can
/// borrow the real text and status.
pub const ALL: &[LarkCode] = &[
    TOKEN_INVALID_PARAM,
    TOKEN_SECRET_INVALID,
    NEED_TOKEN,
    INVALID_TOKEN,
    BAD_TOKEN_FORMAT,
    MISSING_SCOPE,
    RATE_LIMITED,
    FIELD_VALIDATION,
    INVALID_PARAM,
    BOT_NOT_IN_CHAT,
    BOT_NOT_ACTIVATED,
    NOT_MESSAGE_SENDER,
    NO_AVAILABILITY,
    P2P_NOT_SHAREABLE,
    IM_RATE_LIMITED,
    CONTENT_TOO_LONG,
    USER_RESIGNED,
    MESSAGE_IN_FLIGHT,
    MESSAGE_RECALLED,
    MESSAGE_INVISIBLE,
    NO_THREAD_REPLY,
    AGGREGATED_NO_THREAD,
    SELF_DESTRUCTING,
    RECALL_EXPIRED,
    NO_RECALL_PERMISSION,
    UPDATE_TOO_OLD,
    UNSUPPORTED_FOR_TYPE,
    EDIT_WINDOW_PASSED,
    CARD_BUILD_FAILED,
    MESSAGE_DELETED,
    INTERNAL,
    WH_BAD_REQUEST,
    WH_TOKEN_INVALID,
    WH_MSG_TYPE,
    WH_SIGN,
    WH_KEYWORDS,
    WH_TOO_LARGE,
    WH_RATE_LIMITED,
    WS_SYSTEM_BUSY,
    WS_INTERNAL,
    WS_BAD_CREDENTIALS,
];

/// The table entry for `code`, if the emulator knows it.
pub fn lookup(code: i64) -> Option<LarkCode> {
    ALL.iter().copied().find(|c| c.code == code)
}

/// A Lark error reply: what a handler returns instead of success. Rendering (log id, envelope,
/// headers) happens in `reply.rs`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("Lark error {code} (HTTP {status}): {msg}")]
pub struct ApiError {
    pub status: u16,
    pub code: i64,
    pub msg: String,
    /// Extra response headers, e.g. `x-ogw-ratelimit-reset`.
    pub headers: Vec<(&'static str, String)>,
    /// Extra members for the `error` object, e.g. `field_violations` (§2.3, Go `CodeError`).
    pub detail: Option<(&'static str, Value)>,
}

impl ApiError {
    pub fn new(code: LarkCode) -> Self {
        Self {
            status: code.http,
            code: code.code,
            msg: code.msg.to_string(),
            headers: Vec::new(),
            detail: None,
        }
    }

    /// 230001-style error whose `msg` ends in `ext=<detail>` (§3, D-230001).
    pub fn ext(code: LarkCode, ext: &str) -> Self {
        let mut e = Self::new(code);
        e.msg.push_str(ext);
        e
    }

    /// 99992402 with one `field_violations` entry naming the offending field.
    pub fn field(field: &str, description: &str) -> Self {
        let mut e = Self::new(FIELD_VALIDATION);
        e.detail = Some((
            "field_violations",
            serde_json::json!([{ "field": field, "description": description }]),
        ));
        e
    }

    /// 230099 with a card-builder sub-code (lifecycle §1.1: `ext=ErrCode: N; ErrMsg: …`).
    pub fn card_build(err_code: u32, err_msg: &str) -> Self {
        let mut e = Self::new(CARD_BUILD_FAILED);
        e.msg
            .push_str(&format!("ErrCode: {err_code}; ErrMsg: {err_msg}"));
        e
    }

    /// 99991672 naming the scopes of which the app needs one: `…required: [a, b].`
    pub fn missing_scope(any_of: &[&str]) -> Self {
        let mut e = Self::new(MISSING_SCOPE);
        e.msg.push_str(&format!("[{}].", any_of.join(", ")));
        e
    }

    pub fn with_header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    /// Gateway throttle (§4): HTTP 429, code 99991400, both `x-ogw-ratelimit-*` headers.
    pub fn rate_limited(limit: u32, reset_secs: u64) -> Self {
        Self::new(RATE_LIMITED)
            .with_header("x-ogw-ratelimit-limit", limit)
            .with_header("x-ogw-ratelimit-reset", reset_secs.max(1))
    }
}

impl From<LarkCode> for ApiError {
    fn from(code: LarkCode) -> Self {
        Self::new(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.code, b.code, "duplicate code in the table");
            }
        }
    }

    #[test]
    fn ext_appends_detail() {
        let e = ApiError::ext(INVALID_PARAM, "invalid receive_id");
        assert_eq!(
            e.msg,
            "Your request contains an invalid request parameter, ext=invalid receive_id"
        );
        assert_eq!(e.status, 400);
    }
}
