//! Storm digests (`storm.digest.*`) as far as Lark is concerned: what one merged message says in
//! a digest (its summary), the digest card, and the digest's uuid. Pure: the sink
//! (`sink/storm.rs`) decides when to merge and finishes the merged records.
//!
//! A digest is one interactive card (JSON 1.0) to the receiver the merged messages were for:
//! an orange header with the count, the first `storm.digest.max.items` summaries as a list, how
//! many more there were, and the time range of their records. A summary is one line per message,
//! by msg type:
//!
//! | msg type | summary |
//! |---|---|
//! | `text` | the text |
//! | `post` | its title (the first locale's), else its first text |
//! | `interactive` | the header title, else the first markdown or text element; `[card template]` for a template reference |
//! | `image`, `file`, `audio`, `media`, `sticker` | `[image]`, `[file]`, `[audio]`, `[video]`, `[sticker]` |
//! | `share_chat`, `share_user`, `system` | `[shared chat]`, `[shared contact]`, `[system message]` |
//!
//! prefixed with `messageKey: ` for a keyed message, on one line, cut at [`SUMMARY_CHARS`]. An
//! envelope's own `summary` (set by the producer or a transform) replaces the derived line.
//! Its uuid is derived from the coordinates of every message it covers ([`digest_uuid`]), so the
//! same digest sent again (a retry, or a replay that merged the same records) is one message in
//! Lark.

use serde_json::{json, Value};
use sha2::Digest as _;

use crate::envelope::Envelope;

/// The most characters of a summary line (the rest is cut, with `…`).
pub const SUMMARY_CHARS: usize = 100;

/// One line saying what `envelope` was.
pub fn summary(envelope: &Envelope) -> String {
    if let Some(own) = envelope.summary.as_deref().filter(|s| !s.trim().is_empty()) {
        return one_line(own);
    }
    let content: Value = serde_json::from_str(&envelope.content).unwrap_or(Value::Null);
    let what = match envelope.msg_type.as_str() {
        "text" => str_at(&content, "/text"),
        "post" => post_summary(&content),
        "interactive" => card_summary(&content),
        "image" => Some("[image]".into()),
        "file" => Some("[file]".into()),
        "audio" => Some("[audio]".into()),
        "media" => Some("[video]".into()),
        "sticker" => Some("[sticker]".into()),
        "share_chat" => Some("[shared chat]".into()),
        "share_user" => Some("[shared contact]".into()),
        "system" => Some("[system message]".into()),
        _ => None,
    }
    .unwrap_or_else(|| format!("[{}]", envelope.msg_type));
    let line = match envelope.op.key() {
        Some(key) => format!("{key}: {what}"),
        None => what,
    };
    one_line(&line)
}

fn str_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
}

/// A post's title, or its first text: `{"zh_cn": {"title": …, "content": [[{"tag": "text", …}]]}}`
/// (or the same without the locale level).
fn post_summary(content: &Value) -> Option<String> {
    let bodies: Vec<&Value> = match content.get("content") {
        Some(_) => vec![content],
        None => content
            .as_object()
            .map(|o| o.values().collect())
            .unwrap_or_default(),
    };
    for body in bodies {
        if let Some(t) = str_at(body, "/title") {
            return Some(t);
        }
        let first = body
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .find_map(|el| str_at(el, "/text"));
        if first.is_some() {
            return first;
        }
    }
    None
}

/// A card's header title, or its first markdown or text element.
fn card_summary(content: &Value) -> Option<String> {
    if content.get("type").and_then(Value::as_str) == Some("template") {
        return Some("[card template]".into());
    }
    if let Some(t) = str_at(content, "/header/title/content") {
        return Some(t);
    }
    let elements = content
        .get("elements")
        .or_else(|| content.pointer("/body/elements"))
        .and_then(Value::as_array)?;
    elements.iter().find_map(|el| {
        str_at(el, "/content")
            .or_else(|| str_at(el, "/text/content"))
            .filter(|_| el.get("tag").and_then(Value::as_str) != Some("img"))
    })
}

/// `s` on one line, at most [`SUMMARY_CHARS`] characters.
fn one_line(s: &str) -> String {
    let flat: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(['<', '>'], "");
    if flat.chars().count() <= SUMMARY_CHARS {
        return flat;
    }
    let mut cut: String = flat.chars().take(SUMMARY_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The digest card's content (JSON 1.0, as Lark's `content` string): `count` merged messages,
/// `lines` the summaries it lists (the first ones), the records' time range (ms since the
/// epoch; `None` when the records had no timestamps).
pub fn digest_card(count: usize, lines: &[String], range: Option<(i64, i64)>) -> String {
    let mut list: Vec<String> = lines
        .iter()
        .map(|l| format!("- {}", escape_markdown(l)))
        .collect();
    if count > lines.len() {
        list.push(format!("…and {} more", count - lines.len()));
    }
    let when = match range {
        Some((first, last)) => format!("{} to {} UTC", utc(first), utc(last)),
        None => "time unknown".to_string(),
    };
    json!({
        "config": {"wide_screen_mode": true},
        "header": {
            "template": "orange",
            "title": {"tag": "plain_text", "content": format!("{count} messages merged (storm digest)")}
        },
        "elements": [
            {"tag": "markdown", "content": list.join("\n")},
            {"tag": "note", "elements": [{"tag": "plain_text", "content": format!("{when} · sent as one message to stay within Lark's rate limit")}]}
        ]
    })
    .to_string()
}

/// Markdown that shows `s` as written: Lark card markdown's emphasis and link characters escaped.
fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '_' | '~' | '[' | ']' | '`' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The digest's uuid: `dg-` and 32 hex digits of a SHA-256 over the coordinates (topic,
/// partition, offset, message index) of every message it covers, in order. The same messages give
/// the same uuid, so Lark keeps one copy of a digest sent twice; any other set is another digest.
pub fn digest_uuid<'a>(covered: impl IntoIterator<Item = (&'a str, i32, i64, usize)>) -> String {
    let mut h = sha2::Sha256::new();
    for (topic, partition, offset, index) in covered {
        h.update(format!("{topic}\u{0}{partition}\u{0}{offset}\u{0}{index}\n").as_bytes());
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("dg-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{IdType, Operation, Priority, Receiver};

    fn env(msg_type: &str, content: Value, key: Option<&str>) -> Envelope {
        Envelope {
            receiver: Receiver::Id {
                id_type: IdType::ChatId,
                id: "oc_1".into(),
            },
            msg_type: msg_type.into(),
            content: content.to_string(),
            urgent: None,
            reply: None,
            op: key.map_or(Operation::Send, |k| Operation::Upsert { key: k.into() }),
            priority: Priority::Normal,
            summary: None,
        }
    }

    #[test]
    fn each_msg_type_has_a_one_line_summary() {
        let cases = [
            (
                env("text", json!({"text": "disk full\n on db-1"}), None),
                "disk full on db-1",
            ),
            (
                env("text", json!({"text": "cpu"}), Some("fp-1")),
                "fp-1: cpu",
            ),
            (
                env(
                    "post",
                    json!({"zh_cn": {"title": "Deploy", "content": []}}),
                    None,
                ),
                "Deploy",
            ),
            (
                env(
                    "post",
                    json!({"en_us": {"content": [[{"tag": "text", "text": "first"}]]}}),
                    None,
                ),
                "first",
            ),
            (
                env(
                    "interactive",
                    json!({"header": {"title": {"tag": "plain_text", "content": "[FIRING] x"}}}),
                    None,
                ),
                "[FIRING] x",
            ),
            (
                env(
                    "interactive",
                    json!({"elements": [{"tag": "markdown", "content": "**md**"}]}),
                    None,
                ),
                "**md**",
            ),
            (
                env(
                    "interactive",
                    json!({"schema": "2.0", "body": {"elements": [{"tag": "div", "text": {"tag": "plain_text", "content": "v2"}}]}}),
                    None,
                ),
                "v2",
            ),
            (
                env(
                    "interactive",
                    json!({"type": "template", "data": {"template_id": "t"}}),
                    None,
                ),
                "[card template]",
            ),
            (env("image", json!({"image_key": "img_1"}), None), "[image]"),
            (env("media", json!({"file_key": "f"}), None), "[video]"),
            (
                env("share_user", json!({"user_id": "ou_1"}), None),
                "[shared contact]",
            ),
            (
                env("interactive", json!({"elements": []}), None),
                "[interactive]",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(summary(&e), want, "{}", e.content);
        }
        // The envelope's own `summary` (a transform's) wins, on one line.
        let mut own = env("text", json!({"text": "cpu"}), None);
        own.summary = Some("host-7: CPU 97%\n(5 min)".into());
        assert_eq!(summary(&own), "host-7: CPU 97% (5 min)");
        let long = summary(&env("text", json!({"text": "x".repeat(300)}), None));
        assert_eq!(long.chars().count(), SUMMARY_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn the_card_counts_lists_and_dates_its_messages() {
        let lines = vec!["a *b*".to_string(), "c".to_string()];
        let card: Value =
            serde_json::from_str(&digest_card(7, &lines, Some((0, 86_399_000)))).unwrap();
        assert_eq!(
            card["header"]["title"]["content"],
            "7 messages merged (storm digest)"
        );
        assert_eq!(
            card["elements"][0]["content"],
            "- a \\*b\\*\n- c\n…and 5 more"
        );
        let note = card["elements"][1]["elements"][0]["content"]
            .as_str()
            .unwrap();
        assert!(
            note.starts_with("1970-01-01 00:00:00 to 1970-01-01 23:59:59 UTC"),
            "{note}"
        );
        assert_eq!(utc(1_764_633_600_000), "2025-12-02 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn the_uuid_is_the_covered_set() {
        let a = digest_uuid([("t", 0, 5, 0), ("t", 0, 6, 0)]);
        assert_eq!(a, digest_uuid([("t", 0, 5, 0), ("t", 0, 6, 0)]));
        assert_ne!(a, digest_uuid([("t", 0, 5, 0)]));
        assert_ne!(a, digest_uuid([("t", 0, 5, 0), ("t", 0, 6, 1)]));
        assert_eq!(a.len(), 35);
        assert!(a.starts_with("dg-"));
    }
}
