//! The Lark checks of `lark-sink check`: `credentials`, `send-scope`, `bot`, `contact-scope`,
//! `webhook` and `events`.
//!
//! Each is a request that proves one thing without delivering anything (the module doc of
//! [`super`] says how): a token, a send to an open_id that cannot exist, a read-only lookup, and
//! a webhook post without `msg_type`.

use serde_json::{json, Value};

use super::{
    fail, finding, needs, warn, CheckOptions, Checks, Finding, Status, PROBE_MOBILE, PROBE_OPEN_ID,
};
use crate::config::ConnectorConfig;
use crate::lark::http::read_response;
use crate::lark::WebhookConfig;
use crate::lark::{LarkClient, LarkError};

/// What the app checks say when no tenant token could be minted.
const NEEDS_TOKEN: &str = "not checked: needs a tenant token (see credentials)";

/// The checks of the app (credentials, scopes, bot) in report order.
pub(super) async fn app_checks(
    c: &mut Checks<'_, impl FnMut(&Finding)>,
    cfg: &ConnectorConfig,
    opts: &CheckOptions,
) {
    let app_ids = [
        "credentials",
        "send-scope",
        "bot",
        "contact-scope",
        "events",
    ];
    let client = match LarkClient::new(&with_timeout(cfg, opts)) {
        Err(e) => {
            for id in app_ids {
                c.push(no_http_client(id, &e));
            }
            return;
        }
        Ok(client) => client,
    };
    if cfg.lark.app_id.is_empty() {
        for id in app_ids {
            c.push(finding(
                id,
                Status::Skip,
                "no Lark app configured (webhook-only connector)",
            ));
        }
        return;
    }
    let mut token_ok = true; // with --skip credentials the later checks find out for themselves
    if c.step("credentials", [c.flag("credentials")]) {
        let f = check_credentials(&client, cfg).await;
        token_ok = f.status == Status::Ok;
        c.push(f);
    }
    let token = needs(token_ok, NEEDS_TOKEN);
    // One probe answers both: its gates are decided first so the lines keep their order.
    let scope_gate = c.gate("send-scope", [token.clone(), c.flag("send-scope")]);
    let bot_gate = c.gate("bot", [token.clone(), c.flag("bot")]);
    let (scope, bot) = match (scope_gate, bot_gate) {
        (Some(scope), Some(bot)) => (scope, bot),
        (scope_gate, bot_gate) => {
            let (scope, bot) = check_bot(&client).await;
            (scope_gate.unwrap_or(scope), bot_gate.unwrap_or(bot))
        }
    };
    c.push(scope);
    c.push(bot);
    if c.step("contact-scope", [token.clone(), c.flag("contact-scope")]) {
        c.push(check_contact_scope(&client).await);
    }
    let configured = needs(cfg.events.is_some(), "no lark.events.topic configured");
    let token = match super::events::needs_token(cfg) {
        true => token,
        false => Ok(()),
    };
    if c.step("events", [configured, token, c.flag("events")]) {
        c.push(super::events::check_events(cfg, opts).await);
    }
}

/// One `webhook` line per configured custom-bot webhook.
pub(super) async fn webhook_checks(
    c: &mut Checks<'_, impl FnMut(&Finding)>,
    cfg: &ConnectorConfig,
    opts: &CheckOptions,
) {
    let configured = needs(
        !cfg.lark.webhooks.is_empty(),
        "no custom-bot webhooks configured",
    );
    if !c.step("webhook", [configured, c.flag("webhook")]) {
        return;
    }
    let timeout = with_timeout(cfg, opts).request_timeout;
    match crate::lark::http::http_client(timeout, &cfg.lark.tls_ca) {
        Err(e) => c.push(no_http_client("webhook", &e)),
        Ok(http) => {
            for (name, hook) in &cfg.lark.webhooks {
                c.push(check_webhook(&http, name, hook).await);
            }
        }
    }
}

/// The app's Lark settings with each request held to the check's time limit.
pub(super) fn with_timeout(
    cfg: &ConnectorConfig,
    opts: &CheckOptions,
) -> crate::config::LarkConfig {
    let mut lark = cfg.lark.clone();
    lark.request_timeout = lark.request_timeout.min(opts.timeout);
    lark
}

/// The line of a check that could not even build its HTTP client.
pub(super) fn no_http_client(id: &'static str, e: &dyn std::fmt::Display) -> Finding {
    fail(
        id,
        format!("cannot build the HTTP client: {e}"),
        "a TLS or system configuration problem on this host",
    )
}
// ------------------------------------------------------------------------------------ Lark

/// `credentials`: mint a tenant token (lark-api.md §1.4) and name the key to fix.
async fn check_credentials(client: &LarkClient, cfg: &ConnectorConfig) -> Finding {
    let app = &cfg.lark.app_id;
    match client.tokens().get().await {
        Ok(_) => finding(
            "credentials",
            Status::Ok,
            format!("tenant token minted for app {app}"),
        ),
        Err(e) => {
            let console = "the developer console (Credentials & Basic Info)";
            let fix = match e.code {
                Some(10003) => format!("lark.app.id '{app}' is not a self-built app of this tenant: copy the App ID from {console}; check lark.domain too (feishu vs lark are separate platforms)"),
                Some(10014) | Some(10015) | Some(20002) => format!("lark.app.secret is not the secret of app {app}: copy the App Secret from {console} (it changes when someone resets it)"),
                Some(99991543) => format!("lark.app.id or lark.app.secret does not exist: copy both from {console}"),
                Some(99991662) | Some(99991673) => "the app is disabled or not installed in this tenant: a tenant admin must enable it (admin console, Workplace > App management)".into(),
                _ => return lark_unreachable("credentials", &e, cfg),
            };
            fail("credentials", format!("token refused: {e}"), fix)
        }
    }
}

/// A Lark call that failed without a Lark answer (or with one we did not expect).
fn lark_unreachable(id: &'static str, e: &LarkError, cfg: &ConnectorConfig) -> Finding {
    let base = &cfg.lark.base_url;
    match (e.code, e.http_status) {
        (None, None) => fail(
            id,
            format!("cannot reach Lark at {base}: {e}"),
            "check lark.domain and this host's network (DNS, firewall, HTTPS_PROXY)",
        ),
        (None, Some(_)) => fail(
            id,
            format!("{base} did not answer like Lark: {e}"),
            "check lark.domain (feishu, lark or the base URL of the OpenAPI, without /open-apis) and any proxy in between",
        ),
        (Some(_), _) => warn(id, format!("unexpected answer: {e}")).with_fix(
            "see Lark's error code documentation; run check again later if it is transient",
        ),
    }
}

/// `send-scope` and `bot`: one send to [`PROBE_OPEN_ID`], which cannot exist (see the module
/// docs for why this delivers nothing and what each answer proves).
async fn check_bot(client: &LarkClient) -> (Finding, Finding) {
    let uuid = format!("ls-check-{:016x}", rand::random::<u64>());
    let content = json!({"text": "lark-sink check probe (addressed to no one)"}).to_string();
    match client
        .send_message("open_id", PROBE_OPEN_ID, "text", &content, &uuid)
        .await
    {
        Ok(ok) => (
            scope_ok(),
            warn(
                "bot",
                format!(
                    "Lark accepted a message to the made-up receiver {PROBE_OPEN_ID} (message_id {}): the bot can send, but this answer is not what Lark documents",
                    ok.message_id
                ),
            ),
        ),
        Err(e) => bot_refusal(&e),
    }
}

/// The `send-scope` line of a probe that got past the scope check.
fn scope_ok() -> Finding {
    finding(
        "send-scope",
        Status::Ok,
        "the send API accepted the app's scopes",
    )
}

/// `send-scope` and `bot` from the probe's refusal: which check stopped it tells what is on.
fn bot_refusal(e: &LarkError) -> (Finding, Finding) {
    let not_reached = |why: &str| finding("bot", Status::Skip, format!("not checked: {why}"));
    // Refused before the bot-ability check: the scope line fails, the bot line is not reached.
    let refused_before =
        |fix: &str, why: &str| (fail("send-scope", format!("{e}"), fix), not_reached(why));
    match e.code {
        Some(99991672) => (
            fail(
                "send-scope",
                format!("the app may not send messages: {e}"),
                "in the developer console (Permissions & Scopes) add im:message:send_as_bot (\"Send messages as an app\"; im:message also works), then create and publish a new app version",
            ),
            not_reached("the request stopped at the scope check"),
        ),
        Some(230006) => (
            scope_ok(),
            fail(
                "bot",
                format!("{e}"),
                "enable the Bot feature (developer console: Features > Bot), then create and publish a new app version; a tenant admin may have to approve it",
            ),
        ),
        // The made-up receiver was refused after the bot-ability check: the bot is on.
        Some(code @ (230001 | 230034 | 99992351 | 99992361)) => (
            scope_ok(),
            finding(
                "bot",
                Status::Ok,
                format!("bot ability on (Lark refused the made-up receiver with code {code}, as expected)"),
            ),
        ),
        Some(99991401) => refused_before(
            "this host's IP is not on the app's IP allow-list: add it (developer console: Security Settings)",
            "the request was refused by the IP allow-list",
        ),
        Some(99991403) => refused_before(
            "the tenant's monthly API quota is spent (Basic plan): wait for the 1st or upgrade the plan",
            "the monthly quota is spent",
        ),
        code => {
            let scope = match code {
                Some(_) => warn(
                    "send-scope",
                    "not proven: the probe got an unexpected answer (see bot)",
                ),
                None => warn("send-scope", format!("no Lark answer: {e}")),
            };
            let bot = warn(
                "bot",
                format!("cannot tell whether the bot ability is on: unexpected answer {e}"),
            )
            .with_fix("send one message with `lark-sink send` to a test user to be sure");
            (scope, bot)
        }
    }
}

/// `contact-scope`: a batch_get_id look-up of [`PROBE_MOBILE`] (§5).
async fn check_contact_scope(client: &LarkClient) -> Finding {
    match client.batch_get_id(&[], &[PROBE_MOBILE.to_string()]).await {
        Ok(_) => finding(
            "contact-scope",
            Status::Ok,
            "contact:user.id:readonly granted (receiveType \"phone\" can be resolved)",
        ),
        Err(e) if e.code == Some(99991672) => fail(
            "contact-scope",
            format!("the app may not look users up by phone: {e}"),
            "in the developer console (Permissions & Scopes) add contact:user.id:readonly, then publish a new app version. Without it a record with receiveType \"phone\" stops the connector; if no record ever uses phone numbers, run check with --skip contact-scope",
        ),
        Err(e) => warn("contact-scope", format!("not proven: unexpected answer {e}")),
    }
}

/// What a webhook probe got back: Lark's code, or why there is none.
fn webhook_code(r: &Result<(Value, Option<String>), LarkError>) -> Option<i64> {
    match r {
        Ok(_) => Some(0),
        Err(e) => e.code,
    }
}

/// `webhook`: token and signature of one custom bot, without posting (module docs).
async fn check_webhook(http: &reqwest::Client, name: &str, hook: &WebhookConfig) -> Finding {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // §8: timestamp (seconds, as a string) and sign at the top level; no msg_type on purpose.
    let post = |sign: Option<String>| async move {
        let body = match sign {
            Some(s) => json!({"timestamp": now.to_string(), "sign": s}),
            None => json!({}),
        };
        read_response(http.post(&hook.url).json(&body)).await
    };
    let signature = hook
        .secret
        .as_ref()
        .map(|s| crate::lark::webhook::sign(s.expose(), now));
    let first = post(signature).await;
    // §8: a 9499 "too many request" is the bot's throttle, not the refused probe below: it proves
    // nothing about the token or the signature.
    if let Err(e) = &first {
        if e.throttle().is_some() {
            return warn(
                "webhook",
                format!("{name}: not proven: Lark throttled the probe ({e})"),
            )
            .with_fix(
                "run check again in a minute (a bot allows 5 pushes a second, 100 a minute)",
            );
        }
    }
    match webhook_code(&first) {
        // Past the token and signature, refused for the missing msg_type: nothing was posted.
        Some(19002 | 9499) if hook.secret.is_none() => finding(
            "webhook",
            Status::Ok,
            format!("{name}: token valid, no signature required (probe refused for its missing msg_type; nothing posted)"),
        ),
        Some(19002 | 9499) => {
            // Control probe: a wrong signature must be refused, or the first answer proves
            // nothing about the secret (Lark would have looked at the message first).
            let control = post(Some("lark-sink-check-wrong-signature".into())).await;
            match webhook_code(&control) {
                Some(19021) => finding(
                    "webhook",
                    Status::Ok,
                    format!("{name}: token and signature verified (nothing posted)"),
                ),
                _ => warn(
                    "webhook",
                    format!("{name}: token valid; signature not verified (Lark checked the probe's message before its signature, so only a posted message proves {})", webhook_key(name, "secret")),
                )
                .with_fix(format!("send a test message: lark-sink send --receive-type webhook --receive-id {name} ...")),
            }
        }
        _ => webhook_refusal(name, hook, &first),
    }
}

/// The config key `lark.webhooks.<name>.<option>`, for the fix lines.
fn webhook_key(name: &str, option: &str) -> String {
    format!("lark.webhooks.{name}.{option}")
}

/// The `webhook` line of a probe that did not get past the token or the signature, or that Lark
/// did not refuse as expected.
fn webhook_refusal(
    name: &str,
    hook: &WebhookConfig,
    first: &Result<(Value, Option<String>), LarkError>,
) -> Finding {
    let key = |o: &str| webhook_key(name, o);
    let failed = |detail: String, fix: String| fail("webhook", format!("{name}: {detail}"), fix);
    match (webhook_code(first), first) {
        (Some(19001), _) => failed(
            "Lark does not know this webhook (19001: token invalid)".into(),
            format!("copy the webhook address from the group's bot settings into {} (or its token into {}); the bot may have been removed from the group", key("url"), key("token")),
        ),
        (Some(19021), _) if hook.secret.is_some() => failed(
            "signature refused (19021)".into(),
            format!("{} is not this bot's signing secret (bot settings > Security > Signature verification), or this host's clock is off by more than an hour", key("secret")),
        ),
        (Some(19021), _) => failed(
            "the bot requires a signature (19021) but no secret is configured".into(),
            format!("set {} to the bot's signing secret (bot settings > Security > Signature verification), or turn signature verification off", key("secret")),
        ),
        (Some(19022), _) => failed(
            "this host's IP is not allowed (19022)".into(),
            "add this host's public IP to the bot's IP allow-list (bot settings > Security), or remove the list".into(),
        ),
        (Some(0), _) => warn(
            "webhook",
            format!("{name}: Lark accepted an empty probe (code 0): the token works, but this is not what Lark documents and the group may show an empty message"),
        ),
        (_, Err(e)) if e.code.is_none() => {
            let detail = match e.http_status {
                None => format!("cannot reach the webhook: {e}"),
                Some(_) => format!("did not answer like a Lark webhook: {e}"),
            };
            failed(detail, format!("check {} (https://open.feishu.cn/open-apis/bot/v2/hook/<token> or the larksuite.com equivalent) and this host's network", key("url")))
        }
        (_, r) => {
            let answer = match r {
                Err(e) => e.to_string(),
                Ok(_) => "code 0".into(),
            };
            warn("webhook", format!("{name}: unexpected answer {answer}"))
        }
    }
}
