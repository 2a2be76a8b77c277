//! Phone → open_id resolution with a TTL cache (lark-api.md §5).
//!
//! `receiveType: "phone"` needs an open_id before the send API accepts it. Look-ups are cached
//! (found: 1 h, not found: 5 min, so a user added to the app's availability later is picked up)
//! because alert streams address the same few on-call phones over and over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::classify::{ErrorClass, LarkError};
use super::client::LarkClient;

const FOUND_TTL: Duration = Duration::from_secs(3600);
const NOT_FOUND_TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct PhoneDirectory {
    cache: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl PhoneDirectory {
    /// The open_id for `mobile`, or a Record-class error saying the user was not found.
    pub async fn open_id(&self, client: &LarkClient, mobile: &str) -> Result<String, LarkError> {
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(mobile).cloned())
            .filter(|(_, until)| Instant::now() < *until);
        crate::telemetry::lookup(cached.is_some());
        let found = match cached {
            Some((found, _)) => found,
            None => {
                let result = client.open_ids_by_mobile(&[mobile.to_string()]).await?;
                let found = result.into_iter().next().and_then(|(_, id)| id);
                let ttl = if found.is_some() {
                    FOUND_TTL
                } else {
                    NOT_FOUND_TTL
                };
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(mobile.to_string(), (found.clone(), Instant::now() + ttl));
                }
                found
            }
        };
        found.ok_or_else(|| LarkError {
            class: ErrorClass::Record,
            http_status: None,
            code: None,
            msg: format!(
                "no Lark user with mobile {mobile} is visible to this app (batch_get_id returned no user_id: unknown number, resigned user, or outside the app's availability range)"
            ),
            log_id: None,
            retry_after: None,
        })
    }
}
