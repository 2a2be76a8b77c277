//! Checks and answer fields of `im/v1` sends and replies that need the directory as well as the
//! content: the chat a `share_chat` card points at (lark-api.md §2.4) and the `mentions` of a
//! text message (§2.3). Kept apart from `content.rs`, which only looks at the content's shape.

use serde_json::{json, Value};

use crate::directory::{DirectoryIndex, UserIdType};
use crate::errors::{self, ApiError};
use crate::ids;
use crate::state::TENANT_KEY;

/// §2.4 share_chat: "bot must be in that chat; p2p chats cannot be shared (230015)". A p2p
/// conversation (any app's bot with any directory user) → 230015; a group the bot is not in, or
/// a chat the directory does not know (the bot cannot be in it) → 230002, the code a send to
/// that chat gets (lark-api.md names no separate code for the shared chat).
pub(crate) fn check_shared_chat(
    dir: &DirectoryIndex,
    msg_type: &str,
    content: &Value,
) -> Result<(), ApiError> {
    if msg_type != "share_chat" {
        return Ok(());
    }
    // content.rs has already checked that `chat_id` is a string.
    let chat_id = content["chat_id"].as_str().unwrap_or_default();
    if let Some(chat) = dir.chat(chat_id) {
        return match chat.bot_member {
            true => Ok(()),
            false => Err(errors::BOT_NOT_IN_CHAT.into()),
        };
    }
    let d = &dir.directory;
    let p2p = d.apps.iter().any(|a| {
        d.users
            .iter()
            .any(|u| ids::p2p_chat_id(&a.app_id, &u.open_id) == chat_id)
    });
    match p2p {
        true => Err(errors::P2P_NOT_SHAREABLE.into()),
        false => Err(errors::BOT_NOT_IN_CHAT.into()),
    }
}

/// §2.3 `mentions[]{key:"@_user_1", id, id_type:"open_id", name, tenant_key}` for each
/// `<at user_id="…">` tag of a text message whose id (open_id, union_id or user_id, §2.4) is a
/// directory user, in order. `user_id="all"` and unknown ids get no entry.
pub(crate) fn mentions(dir: &DirectoryIndex, msg_type: &str, content: &Value) -> Vec<Value> {
    if msg_type != "text" {
        return Vec::new();
    }
    let text = content["text"].as_str().unwrap_or_default();
    let mut found = Vec::new();
    for id in at_user_ids(text) {
        let user = [UserIdType::OpenId, UserIdType::UnionId, UserIdType::UserId]
            .into_iter()
            .find_map(|t| dir.user(t, id));
        if let Some(u) = user {
            found.push(json!({
                "key": format!("@_user_{}", found.len() + 1),
                "id": u.open_id,
                "id_type": "open_id",
                "name": u.name,
                "tenant_key": TENANT_KEY,
            }));
        }
    }
    found
}

/// The `user_id` values of `<at user_id="…">` tags, in order (double or single quotes).
fn at_user_ids(text: &str) -> Vec<&str> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<at ") {
        rest = &rest[start + 4..];
        let Some(end) = rest.find('>') else { break };
        let attrs = &rest[..end];
        if let Some(i) = attrs.find("user_id=") {
            let value = &attrs[i + "user_id=".len()..];
            let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'');
            if let Some(q) = quote {
                if let Some(close) = value[1..].find(q) {
                    ids.push(&value[1..1 + close]);
                }
            }
        }
        rest = &rest[end..];
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::at_user_ids;

    #[test]
    fn at_tags_are_read_in_order() {
        let t = r#"hi <at user_id="ou_a">A</at> and <at user_id='all'></at><at  x>"#;
        assert_eq!(at_user_ids(t), vec!["ou_a", "all"]);
        assert!(at_user_ids("no tags <at").is_empty());
    }
}
