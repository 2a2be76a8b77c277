//! What the clicking user sees: the answer to a card callback checked the way Lark's client does
//! it, and the card in it applied to the stored message (lifecycle §2.5, §6 item 9).
//!
//! Why: a card callback is delivered once and answered synchronously; Lark never pushes it
//! again (lifecycle §2.1). Whether the receiver got it right shows only on the user's screen: a
//! toast, an updated card, or a client-side error code. A test reads that here
//! ([`super::PushedEvent::client_error`], [`super::PushedEvent::toast`], the message's
//! `callback` versions) instead of guessing it from the ack alone.
//!
//! The checks, in order: the attempt was answered with HTTP 200 (ack `code` 200 on the long
//! connection) within the deadline ([`NO_ANSWER`], [`NON_200`]; over HTTP a failed request is
//! [`CONNECT_FAILED`] or [`REQUEST_FAILED`]); the body is a JSON object ([`MALFORMED_BODY`]);
//! its `toast`, if any, has `type` ∈ info / success / error / warning, a string `content` (it may
//! be left out when `i18n` is given) and an `i18n` object of strings under the documented
//! locale keys ([`MALFORMED_BODY`]); its `card`, if any, is `{"type":"raw","data":{<card>}}` or
//! `{"type":"template","data":{"template_id",…}}` and passes the send's card checks
//! ([`MALFORMED_CARD`]); a raw card answering a click on a JSON 2.0 card is 2.0 too
//! ([`V2_TO_V1`]). Other keys (the Go SDK's `{"msg":"success"}`) are ignored. Over the long
//! connection an ack without `data` is `{}`; over HTTP an empty body is not JSON.
//!
//! Choices (UNCONFIRMED in the spec): a push that found no live long connection is
//! [`NO_ANSWER`] (nothing answered the user's client); a body whose `toast` is wrong is
//! [`MALFORMED_BODY`], not shown in part; a card update is not applied when the message is
//! unknown, not a card, recalled, deleted or older than 14 days (lifecycle §2.5: "no effect
//! after 14 days"), and is applied whatever `update_multi` says (the emulator stores one view of
//! a message).

use serde_json::{Map, Value};

use crate::content;
use crate::lifecycle::{self, VersionOp};
use crate::state::Shared;

/// No answer within 3 s (lifecycle §2.5).
pub const NO_ANSWER: u32 = 200341;
/// The TCP connection to the callback URL failed.
pub const CONNECT_FAILED: u32 = 200342;
/// Another request error (the connection reset before an answer).
pub const REQUEST_FAILED: u32 = 200080;
/// An HTTP status other than 200 (3xx included; on the long connection an ack `code` other than
/// 200).
pub const NON_200: u32 = 200671;
/// The body is not what Lark expects (not a JSON object, a malformed `toast`).
pub const MALFORMED_BODY: u32 = 200672;
/// The `card` in the answer is malformed.
pub const MALFORMED_CARD: u32 = 200673;
/// A JSON 2.0 card answered with a 1.0 card.
pub const V2_TO_V1: u32 = 200830;

/// `toast.type` values (lifecycle §2.5).
const TOAST_TYPES: &[&str] = &["info", "success", "error", "warning"];

/// `toast.i18n` keys (lifecycle §2.5).
const I18N_KEYS: &[&str] = &[
    "zh_cn", "en_us", "zh_hk", "zh_tw", "ja_jp", "id_id", "vi_vn", "th_th", "pt_br", "es_es",
    "ko_kr", "de_de", "fr_fr", "it_it", "ru_ru", "ms_my",
];

/// A valid answer: the toast to show, the content the clicked card becomes.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Verdict {
    pub toast: Option<Value>,
    pub card: Option<Value>,
}

/// Check an answer given with HTTP 200 / ack code 200. `answer`: the body or ack `data` as
/// JSON (a JSON string when it was not JSON; `None` when empty / absent). `over_http`: an
/// empty answer is then malformed, not `{}`. `stored`: the clicked card's current content.
pub(crate) fn judge(
    answer: Option<&Value>,
    over_http: bool,
    stored: Option<&Value>,
) -> Result<Verdict, u32> {
    let empty = Map::new();
    let body = match answer {
        None if over_http => return Err(MALFORMED_BODY),
        None => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err(MALFORMED_BODY),
    };
    let toast = match body.get("toast") {
        None | Some(Value::Null) => None,
        Some(t) => Some(check_toast(t).ok_or(MALFORMED_BODY)?),
    };
    let card = match body.get("card") {
        None | Some(Value::Null) => None,
        Some(c) => Some(check_card(c)?),
    };
    if let (Some(new), Some(old)) = (&card, stored) {
        let raw = new.get("type").and_then(Value::as_str) != Some("template");
        if raw && lifecycle::is_schema_v2(old) && !lifecycle::is_schema_v2(new) {
            return Err(V2_TO_V1);
        }
    }
    Ok(Verdict { toast, card })
}

/// The toast, if well formed.
fn check_toast(t: &Value) -> Option<Value> {
    let o = t.as_object()?;
    let kind = o.get("type")?.as_str()?;
    if !TOAST_TYPES.contains(&kind) {
        return None;
    }
    let i18n = match o.get("i18n") {
        None => false,
        Some(Value::Object(m)) => {
            let ok = m
                .iter()
                .all(|(k, v)| I18N_KEYS.contains(&k.as_str()) && v.is_string());
            if !ok || m.is_empty() {
                return None;
            }
            true
        }
        Some(_) => return None,
    };
    match o.get("content") {
        Some(Value::String(_)) => {}
        None if i18n => {}
        _ => return None,
    }
    Some(t.clone())
}

/// The content the card becomes: a raw card's `data`, or the template reference
/// `{"type":"template","data":…}` (what a PATCH with a template stores).
fn check_card(c: &Value) -> Result<Value, u32> {
    let o = c.as_object().ok_or(MALFORMED_CARD)?;
    let data = o
        .get("data")
        .filter(|d| d.is_object())
        .ok_or(MALFORMED_CARD)?;
    let content = match o.get("type").and_then(Value::as_str) {
        // A card object; a reference (template, card entity) is not a raw card.
        Some("raw") if data.get("type").is_none() => data.clone(),
        Some("template") => {
            let vars = data.get("template_variable");
            if vars.is_some_and(|v| !v.is_object() && !v.is_null()) {
                return Err(MALFORMED_CARD);
            }
            serde_json::json!({"type": "template", "data": data})
        }
        _ => return Err(MALFORMED_CARD),
    };
    content::check_send("interactive", &content.to_string()).map_err(|_| MALFORMED_CARD)?;
    if lifecycle::is_schema_v2(&content)
        && lifecycle::v2_element_count(&content) > lifecycle::V2_MAX_ELEMENTS
    {
        return Err(MALFORMED_CARD);
    }
    Ok(content)
}

/// Judge the answer to a click on `message_id` against the stored card, and apply its card to
/// the message (a `callback` version). The toast shown, or the client error.
pub(crate) fn apply(
    shared: &Shared,
    message_id: Option<&str>,
    answer: Option<&Value>,
    over_http: bool,
) -> Result<Option<Value>, u32> {
    let mut s = shared.lock();
    let now_ms = s.now_ms();
    let card = message_id
        .and_then(|id| s.message(id))
        .filter(|m| m.lifecycle.msg_type == "interactive");
    let stored = card.map(|m| m.lifecycle.content());
    let updatable = card.is_some_and(|m| {
        let l = &m.lifecycle;
        !m.public.recalled
            && !l.deleted
            && now_ms.saturating_sub(l.create_ms) <= lifecycle::UPDATE_WINDOW_MS
    });
    let verdict = judge(answer, over_http, stored.as_ref())?;
    if let (Some(content), Some(id), true) = (verdict.card, message_id, updatable) {
        if let Some(m) = s.message_mut(id) {
            let raw = content.to_string();
            m.lifecycle.apply(VersionOp::Callback, raw, content, now_ms);
        }
    }
    Ok(verdict.toast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(answer: Value) -> Verdict {
        judge(Some(&answer), true, None).expect("valid")
    }

    fn code(answer: Option<Value>, stored: Option<Value>) -> u32 {
        judge(answer.as_ref(), true, stored.as_ref()).expect_err("invalid")
    }

    #[test]
    fn empty_and_toast_answers() {
        assert_eq!(ok(json!({})), Verdict::default());
        assert_eq!(ok(json!({"msg": "success"})), Verdict::default());
        assert_eq!(judge(None, false, None), Ok(Verdict::default()));
        let toast = json!({"type": "success", "content": "Done",
                           "i18n": {"zh_cn": "好", "en_us": "Done"}});
        assert_eq!(ok(json!({ "toast": toast })).toast, Some(toast));
        let only_i18n = json!({"type": "info", "i18n": {"ja_jp": "OK"}});
        assert!(ok(json!({ "toast": only_i18n })).toast.is_some());
    }

    #[test]
    fn malformed_bodies_and_toasts() {
        assert_eq!(code(None, None), MALFORMED_BODY, "an empty HTTP body");
        assert_eq!(code(Some(json!("ok")), None), MALFORMED_BODY);
        assert_eq!(code(Some(json!([])), None), MALFORMED_BODY);
        for toast in [
            json!("Got it"),
            json!({"content": "no type"}),
            json!({"type": "fatal", "content": "x"}),
            json!({"type": "info"}),
            json!({"type": "info", "content": 5}),
            json!({"type": "info", "content": "x", "i18n": {"xx_yy": "x"}}),
            json!({"type": "info", "content": "x", "i18n": {"en_us": 1}}),
            json!({"type": "info", "content": "x", "i18n": "en"}),
        ] {
            assert_eq!(code(Some(json!({ "toast": toast })), None), MALFORMED_BODY);
        }
    }

    #[test]
    fn cards_raw_and_template() {
        let v1 = json!({"elements": [{"tag": "div"}]});
        let v = ok(json!({"card": {"type": "raw", "data": v1}}));
        assert_eq!(v.card, Some(v1.clone()));
        let tpl = json!({"template_id": "AAq", "template_variable": {"k": "v"}});
        let v = ok(json!({"card": {"type": "template", "data": tpl}}));
        assert_eq!(v.card, Some(json!({"type": "template", "data": tpl})));
        for card in [
            json!({"type": "raw"}),
            json!({"type": "raw", "data": "{}"}),
            json!({"type": "raw", "data": {"foo": 1}}),
            json!({"type": "raw", "data": {"type": "template", "data": {"template_id": "A"}}}),
            json!({"type": "template", "data": {}}),
            json!({"type": "template", "data": {"template_id": "A", "template_variable": 1}}),
            json!({"type": "card", "data": {"card_id": "c"}}),
            json!({"data": v1}),
            json!("raw"),
        ] {
            assert_eq!(code(Some(json!({ "card": card })), None), MALFORMED_CARD);
        }
    }

    #[test]
    fn a_2_0_card_stays_2_0() {
        let v2 = json!({"schema": "2.0", "body": {"elements": []}});
        let v1 = json!({"elements": []});
        let answer = |card: &Value| Some(json!({"card": {"type": "raw", "data": card}}));
        assert_eq!(code(answer(&v1), Some(v2.clone())), V2_TO_V1);
        assert!(judge(answer(&v2).as_ref(), true, Some(&v2)).is_ok());
        assert!(
            judge(answer(&v2).as_ref(), true, Some(&v1)).is_ok(),
            "1.0 → 2.0"
        );
        let tpl = json!({"card": {"type": "template", "data": {"template_id": "A"}}});
        assert!(judge(Some(&tpl), true, Some(&v2)).is_ok());
    }
}
