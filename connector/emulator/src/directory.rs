//! The tenant the emulator pretends to be: apps, users, chats and custom-bot webhooks.
//!
//! A [`Directory`] is plain data (loadable from JSON so `lark-sink emulator` users can describe
//! their own tenant); [`DirectoryIndex`] is built once at start so that lookups stay O(1) even
//! with tens of thousands of generated receivers. The directory does not change while the
//! emulator runs, which is why the index needs no lock.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// A self-built app (§1). `bot_enabled: false` makes every send fail with 230006 (§3).
///
/// `scopes` lists the API scopes the app was granted (the developer console's "Permissions &
/// Scopes"); `None` (the default, and what a directory file without the field gets) grants every
/// scope. With a list, an API whose scope is missing answers 99991672 (§3, §5): the send API
/// wants one of `im:message`, `im:message:send_as_bot`, `im:message:send` (§2.1), batch_get_id
/// wants `contact:user.id:readonly` (§5). Urgent scopes are not modelled (§6 names them only in
/// abbreviated form).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct App {
    pub app_id: String,
    pub app_secret: String,
    #[serde(default = "yes")]
    pub bot_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

impl App {
    /// Whether the app holds at least one of `any_of` (always, when scopes are not modelled).
    pub fn has_any_scope(&self, any_of: &[&str]) -> bool {
        match &self.scopes {
            None => true,
            Some(granted) => any_of.iter().any(|s| granted.iter().any(|g| g == s)),
        }
    }
}

/// A tenant user. `available: false` = outside the app's availability range (230013);
/// `resigned: true` → 230029 on send, no id from batch_get_id unless `include_resigned`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct User {
    pub open_id: String,
    #[serde(default)]
    pub union_id: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default = "yes")]
    pub available: bool,
    #[serde(default)]
    pub resigned: bool,
}

/// A group chat. `bot_member: false` → 230002 on send. `thread_replies: false` models a chat
/// whose settings do not allow replying in a thread: `reply_in_thread` → 230071 (§2.5).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Chat {
    pub chat_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "yes")]
    pub bot_member: bool,
    #[serde(default = "yes")]
    pub thread_replies: bool,
}

/// A custom-bot webhook (§8): `POST /open-apis/bot/v2/hook/{token}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Webhook {
    pub token: String,
    /// Signature secret ("签名校验"); `None` = unsigned requests accepted.
    #[serde(default)]
    pub secret: Option<String>,
    /// Keyword security setting; empty = no keyword check.
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// Everything the emulated tenant contains.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Directory {
    pub apps: Vec<App>,
    pub users: Vec<User>,
    pub chats: Vec<Chat>,
    pub webhooks: Vec<Webhook>,
}

/// Loading a directory file failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read directory file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("directory file {path} is not valid: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Directory {
    /// The demo tenant used by default, the demo and most tests (ids documented in the crate
    /// docs).
    pub fn demo() -> Directory {
        let user = |id: &str, name: &str, n: u32, available: bool| User {
            open_id: format!("ou_{id}"),
            union_id: format!("on_{id}"),
            user_id: id.to_string(),
            email: Some(format!("{id}@example.com")),
            mobile: Some(format!("+861380000000{n}")),
            name: name.to_string(),
            available,
            resigned: false,
        };
        let chat = |id: &str, name: &str, bot_member: bool| Chat {
            chat_id: format!("oc_{id}"),
            name: name.to_string(),
            bot_member,
            thread_replies: true,
        };
        Directory {
            apps: vec![App {
                app_id: "cli_demo_app".into(),
                app_secret: "demo-secret".into(),
                bot_enabled: true,
                scopes: None,
            }],
            users: vec![
                user("alice", "Alice", 1, true),
                user("bob", "Bob", 2, true),
                user("carol", "Carol", 3, false),
            ],
            chats: vec![
                chat("ops", "Ops", true),
                chat("team", "Team", true),
                chat("outside", "Outside", false),
            ],
            webhooks: vec![
                Webhook {
                    token: "hook-plain".into(),
                    secret: None,
                    keywords: Vec::new(),
                },
                Webhook {
                    token: "hook-signed".into(),
                    secret: Some("demo".into()),
                    keywords: Vec::new(),
                },
            ],
        }
    }

    /// [`Directory::demo`] plus `users` synthetic users (`ou_gen_{i}`, `on_gen_{i}`, `gen_{i}`,
    /// `gen{i}@example.com`, `+861390000{i:04}`) and `chats` synthetic chats (`oc_gen_{i}`), for
    /// load tests that need many distinct receivers (each has its own 5 QPS budget, §4).
    pub fn with_generated(users: usize, chats: usize) -> Directory {
        let mut d = Directory::demo();
        d.add_generated(users, chats);
        d
    }

    /// Append generated users and chats (see [`Directory::with_generated`]) to any directory.
    pub fn add_generated(&mut self, users: usize, chats: usize) {
        self.users.extend((0..users).map(|i| User {
            open_id: format!("ou_gen_{i}"),
            union_id: format!("on_gen_{i}"),
            user_id: format!("gen_{i}"),
            email: Some(format!("gen{i}@example.com")),
            mobile: Some(format!("+861390000{i:04}")),
            name: format!("Generated {i}"),
            available: true,
            resigned: false,
        }));
        self.chats.extend((0..chats).map(|i| Chat {
            chat_id: format!("oc_gen_{i}"),
            name: format!("Generated chat {i}"),
            bot_member: true,
            thread_replies: true,
        }));
    }

    /// Read a directory from a JSON file (missing top-level lists default to empty).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Directory, DirectoryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DirectoryError::Parse {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Which user id family a `receive_id_type` / `user_id_type` names (§2.1, §5, §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserIdType {
    OpenId,
    UnionId,
    UserId,
}

impl UserIdType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open_id" => Some(Self::OpenId),
            "union_id" => Some(Self::UnionId),
            "user_id" => Some(Self::UserId),
            _ => None,
        }
    }

    /// The user's id of this type.
    pub fn id_of(self, user: &User) -> &str {
        match self {
            Self::OpenId => &user.open_id,
            Self::UnionId => &user.union_id,
            Self::UserId => &user.user_id,
        }
    }
}

/// Mainland numbers may be given without the country code (§5: "non-mainland mobiles need
/// `+<country code>`"), so both `13800000001` and `+8613800000001` find the same user.
pub fn normalize_mobile(m: &str) -> String {
    let m: String = m
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if m.starts_with('+') {
        m
    } else {
        format!("+86{m}")
    }
}

/// Hash indexes over a [`Directory`]; values are positions in the directory's vectors.
#[derive(Debug)]
pub struct DirectoryIndex {
    pub directory: Directory,
    apps: HashMap<String, usize>,
    open_ids: HashMap<String, usize>,
    union_ids: HashMap<String, usize>,
    user_ids: HashMap<String, usize>,
    emails: HashMap<String, usize>,
    mobiles: HashMap<String, usize>,
    chats: HashMap<String, usize>,
    webhooks: HashMap<String, usize>,
}

impl DirectoryIndex {
    pub fn new(directory: Directory) -> Self {
        // Empty ids are never indexed, so a request with `receive_id: ""` cannot match a user
        // whose optional id was left blank in a JSON directory.
        fn index<S: AsRef<str>>(ids: impl Iterator<Item = S>) -> HashMap<String, usize> {
            let mut m = HashMap::new();
            for (i, id) in ids.enumerate() {
                let id = id.as_ref();
                if !id.is_empty() {
                    // First definition wins on duplicates: deterministic and easy to explain.
                    m.entry(id.to_string()).or_insert(i);
                }
            }
            m
        }
        let users = &directory.users;
        Self {
            apps: index(directory.apps.iter().map(|a| a.app_id.as_str())),
            open_ids: index(users.iter().map(|u| u.open_id.as_str())),
            union_ids: index(users.iter().map(|u| u.union_id.as_str())),
            user_ids: index(users.iter().map(|u| u.user_id.as_str())),
            emails: index(
                users
                    .iter()
                    .map(|u| u.email.as_deref().unwrap_or_default().to_lowercase()),
            ),
            mobiles: index(users.iter().map(|u| match &u.mobile {
                Some(m) => normalize_mobile(m),
                None => String::new(),
            })),
            chats: index(directory.chats.iter().map(|c| c.chat_id.as_str())),
            webhooks: index(directory.webhooks.iter().map(|w| w.token.as_str())),
            directory,
        }
    }

    pub fn app(&self, app_id: &str) -> Option<&App> {
        self.apps.get(app_id).map(|&i| &self.directory.apps[i])
    }

    pub fn user(&self, kind: UserIdType, id: &str) -> Option<&User> {
        let map = match kind {
            UserIdType::OpenId => &self.open_ids,
            UserIdType::UnionId => &self.union_ids,
            UserIdType::UserId => &self.user_ids,
        };
        map.get(id).map(|&i| &self.directory.users[i])
    }

    /// Case-insensitive, as clients are told to match emails (§5).
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.emails
            .get(&email.to_lowercase())
            .map(|&i| &self.directory.users[i])
    }

    pub fn user_by_mobile(&self, mobile: &str) -> Option<&User> {
        self.mobiles
            .get(&normalize_mobile(mobile))
            .map(|&i| &self.directory.users[i])
    }

    pub fn chat(&self, chat_id: &str) -> Option<&Chat> {
        self.chats.get(chat_id).map(|&i| &self.directory.chats[i])
    }

    pub fn webhook(&self, token: &str) -> Option<&Webhook> {
        self.webhooks
            .get(token)
            .map(|&i| &self.directory.webhooks[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_has_the_documented_entries() {
        let idx = DirectoryIndex::new(Directory::demo());
        let alice = idx.user(UserIdType::UserId, "alice").expect("alice");
        assert_eq!(alice.open_id, "ou_alice");
        assert_eq!(alice.mobile.as_deref(), Some("+8613800000001"));
        assert!(
            !idx.user(UserIdType::OpenId, "ou_carol")
                .expect("carol")
                .available
        );
        assert!(!idx.chat("oc_outside").expect("outside").bot_member);
        assert_eq!(
            idx.webhook("hook-signed").and_then(|w| w.secret.as_deref()),
            Some("demo")
        );
        assert!(idx.app("cli_demo_app").expect("app").bot_enabled);
    }

    #[test]
    fn lookups_normalise_email_and_mobile() {
        let idx = DirectoryIndex::new(Directory::demo());
        assert!(idx.user_by_email("ALICE@Example.com").is_some());
        assert!(idx.user_by_mobile("13800000002").is_some());
        assert!(idx.user_by_mobile("+86 138-0000-0002").is_some());
        assert!(idx.user_by_mobile("+4413800000002").is_none());
    }

    #[test]
    fn generated_receivers() {
        let d = Directory::with_generated(12, 3);
        let idx = DirectoryIndex::new(d);
        let u = idx
            .user(UserIdType::OpenId, "ou_gen_11")
            .expect("generated user");
        assert_eq!(u.mobile.as_deref(), Some("+8613900000011"));
        assert_eq!(u.email.as_deref(), Some("gen11@example.com"));
        assert!(idx.chat("oc_gen_2").is_some());
        assert!(idx.user(UserIdType::OpenId, "ou_alice").is_some());
    }

    #[test]
    fn json_defaults() {
        let d: Directory = serde_json::from_str(
            r#"{"apps":[{"app_id":"cli_x","app_secret":"s"}],
                "users":[{"open_id":"ou_x","name":"X"}],
                "chats":[{"chat_id":"oc_x"}]}"#,
        )
        .expect("parse");
        assert!(d.apps[0].bot_enabled);
        assert!(d.apps[0].scopes.is_none() && d.apps[0].has_any_scope(&["anything"]));
        assert!(d.users[0].available && !d.users[0].resigned);
        assert!(d.chats[0].bot_member);
        assert!(d.webhooks.is_empty());
    }
}
