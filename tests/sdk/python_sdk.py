"""Drives the Lark emulator with the official Python SDK (lark-oapi), run by tests/tests/sdk.rs.

Why: the emulator is written from lark-api.md; the SDK is written from the real platform. Where the
SDK cannot read an emulator answer (a header it looks up by its exact name, a field it expects in
another place), applications built on it would break against the real Lark in a way the emulator
hides, or the emulator answers unlike Lark. Every check asserts what the SDK reads: code, msg,
the log id (`get_log_id()`, the `X-Tt-Logid` header looked up case-sensitively), headers, data.

Usage: python_sdk.py BASE_URL APP_ID APP_SECRET. Every check runs even when an earlier one failed;
the failures are printed one a line ("FAIL name: detail") and the exit code is 1 if there is any.
The emulator's own control endpoints (/_emulator/...) are called with urllib, not the SDK.
"""

import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.request
import uuid as uuidlib

import lark_oapi as lark
from lark_oapi.api.auth.v3 import (
    InternalTenantAccessTokenRequest,
    InternalTenantAccessTokenRequestBody,
)
from lark_oapi.api.contact.v3 import BatchGetIdUserRequest, BatchGetIdUserRequestBody
from lark_oapi.api.im.v1 import (
    CreateMessageRequest,
    CreateMessageRequestBody,
    GetMessageRequest,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
    UrgentAppMessageRequest,
    UrgentPhoneMessageRequest,
    UrgentReceivers,
    UrgentSmsMessageRequest,
)
from lark_oapi.core.token.manager import TokenManager

BASE, APP_ID, APP_SECRET = sys.argv[1], sys.argv[2], sys.argv[3]
FAILURES = []


def check(name, ok, detail=""):
    """Records one assertion; never raises, so every check runs."""
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else ": " + str(detail)), flush=True)
    if not ok:
        FAILURES.append(name)


def header(resp, name):
    """A header of the raw answer, case-insensitively (HTTP's rule; the SDK's dict is not)."""
    for k, v in (resp.raw.headers or {}).items():
        if k.lower() == name.lower():
            return v
    return None


def control(path, body=None):
    """POSTs (or GETs, without a body) one of the emulator's control endpoints."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def answered(name, resp, code=0, status=200):
    """The common checks of every answer: code, HTTP status and the log id the SDK reads."""
    check(f"{name}: code", resp.code == code, f"code={resp.code} msg={resp.msg}")
    check(f"{name}: HTTP status", resp.raw.status_code == status, resp.raw.status_code)
    log_id = resp.get_log_id()
    check(
        f"{name}: get_log_id() reads X-Tt-Logid",
        bool(log_id),
        f"None; header names sent: {sorted(resp.raw.headers)}",
    )
    return log_id


client = (
    lark.Client.builder()
    .app_id(APP_ID)
    .app_secret(APP_SECRET)
    .domain(BASE)
    .log_level(lark.LogLevel.ERROR)
    .build()
)

# §1: the tenant token, as an explicit call and as the SDK mints it for every typed call.
resp = client.auth.v3.tenant_access_token.internal(
    InternalTenantAccessTokenRequest.builder()
    .request_body(
        InternalTenantAccessTokenRequestBody.builder().app_id(APP_ID).app_secret(APP_SECRET).build()
    )
    .build()
)
answered("tenant token", resp)
raw = json.loads(resp.raw.content)
check("tenant token: flat t- token", str(raw.get("tenant_access_token", "")).startswith("t-"), raw)
check("tenant token: expire", isinstance(raw.get("expire"), int) and raw["expire"] > 0, raw)
try:
    token = TokenManager.get_self_tenant_token(client._config)
    check("tenant token: SDK token manager", token.startswith("t-"), token)
except Exception as e:  # the manager raises on any refusal
    check("tenant token: SDK token manager", False, repr(e))
resp = client.auth.v3.tenant_access_token.internal(
    InternalTenantAccessTokenRequest.builder()
    .request_body(
        InternalTenantAccessTokenRequestBody.builder().app_id(APP_ID).app_secret("wrong").build()
    )
    .build()
)
check("tenant token: wrong secret refused", resp.code == 10014, f"code={resp.code} msg={resp.msg}")


def send(id_type, receive_id, text, uuid=None):
    body = (
        CreateMessageRequestBody.builder()
        .receive_id(receive_id)
        .msg_type("text")
        .content(json.dumps({"text": text}))
        .uuid(uuid or str(uuidlib.uuid4()))
        .build()
    )
    req = CreateMessageRequest.builder().receive_id_type(id_type).request_body(body).build()
    return client.im.v1.message.create(req)


# §2: a send for every receive_id_type, to receivers of the emulator's demo directory.
sent = {}
for id_type, receive_id in [
    ("open_id", "ou_alice"),
    ("union_id", "on_alice"),
    ("user_id", "bob"),
    ("email", "bob@example.com"),
    ("chat_id", "oc_ops"),
]:
    resp = send(id_type, receive_id, f"sdk {id_type}")
    name = f"send {id_type}"
    answered(name, resp)
    ok = resp.data is not None and str(resp.data.message_id or "").startswith("om_")
    check(f"{name}: data.message_id", ok, resp.raw.content)
    if ok:
        check(f"{name}: data.msg_type", resp.data.msg_type == "text", resp.data.msg_type)
        check(f"{name}: data.chat_id", str(resp.data.chat_id or "").startswith("oc_"), resp.data.chat_id)
        sent[id_type] = resp.data.message_id

# §2.5: a reply to the chat message, in a thread.
parent = sent.get("chat_id")
if parent:
    body = (
        ReplyMessageRequestBody.builder()
        .msg_type("text")
        .content(json.dumps({"text": "sdk reply"}))
        .reply_in_thread(True)
        .uuid(str(uuidlib.uuid4()))
        .build()
    )
    resp = client.im.v1.message.reply(
        ReplyMessageRequest.builder().message_id(parent).request_body(body).build()
    )
    answered("reply", resp)
    data = resp.data
    check("reply: parent_id", data is not None and data.parent_id == parent, resp.raw.content)
    check("reply: root_id", data is not None and data.root_id == parent, resp.raw.content)
    check(
        "reply: thread_id",
        data is not None and str(data.thread_id or "").startswith("omt_"),
        resp.raw.content,
    )
else:
    check("reply", False, "no chat message to reply to")

# §6: urgent, each kind, for a chat member and an id that is not one.
for kind, request in [
    ("app", UrgentAppMessageRequest),
    ("sms", UrgentSmsMessageRequest),
    ("phone", UrgentPhoneMessageRequest),
]:
    if not parent:
        check(f"urgent {kind}", False, "no chat message to buzz about")
        continue
    req = (
        request.builder()
        .message_id(parent)
        .user_id_type("open_id")
        .request_body(UrgentReceivers.builder().user_id_list(["ou_alice", "ou_nobody"]).build())
        .build()
    )
    resp = getattr(client.im.v1.message, f"urgent_{kind}")(req)
    answered(f"urgent {kind}", resp)
    invalid = resp.data.invalid_user_id_list if resp.data else None
    check(f"urgent {kind}: invalid_user_id_list", invalid == ["ou_nobody"], resp.raw.content)

# §5: batch_get_id by email and mobile.
req = (
    BatchGetIdUserRequest.builder()
    .user_id_type("open_id")
    .request_body(
        BatchGetIdUserRequestBody.builder()
        .emails(["alice@example.com", "nobody@example.com"])
        .mobiles(["+8613800000002"])
        .build()
    )
    .build()
)
resp = client.contact.v3.user.batch_get_id(req)
answered("batch_get_id", resp)
users = {(u.email or u.mobile): u.user_id for u in (resp.data.user_list or [])} if resp.data else {}
check("batch_get_id: email", users.get("alice@example.com") == "ou_alice", resp.raw.content)
check("batch_get_id: mobile", users.get("+8613800000002") == "ou_bob", resp.raw.content)
check("batch_get_id: unknown email", "nobody@example.com" in users and users["nobody@example.com"] is None, resp.raw.content)

# §2.3: an <at> tag comes back in `mentions`, which the SDK reads into its Mention model.
resp = send("chat_id", "oc_team", '<at user_id="ou_bob">Bob</at> sdk mention')
answered("mention", resp)
mentions = (resp.data.mentions or []) if resp.data else []
check(
    "mention: data.mentions",
    len(mentions) == 1 and mentions[0].id == "ou_bob" and mentions[0].id_type == "open_id"
    and (mentions[0].key or "").startswith("@_user_") and mentions[0].name == "Bob",
    resp.raw.content,
)

# §2.4: share_chat points at a chat the bot is in; one it is not in is refused (230002).
for chat, code, status in [("oc_team", 0, 200), ("oc_outside", 230002, 400)]:
    body = (
        CreateMessageRequestBody.builder()
        .receive_id("oc_ops")
        .msg_type("share_chat")
        .content(json.dumps({"chat_id": chat}))
        .build()
    )
    resp = client.im.v1.message.create(
        CreateMessageRequest.builder().receive_id_type("chat_id").request_body(body).build()
    )
    answered(f"share_chat {chat}", resp, code=code, status=status)

# Message GET: the SDK reads the message it sent from data.items.
if parent:
    resp = client.im.v1.message.get(GetMessageRequest.builder().message_id(parent).build())
    answered("message get", resp)
    items = (resp.data.items or []) if resp.data else []
    check(
        "message get: data.items",
        len(items) == 1 and items[0].message_id == parent and items[0].msg_type == "text"
        and json.loads(items[0].body.content).get("text") == "sdk chat_id",
        resp.raw.content,
    )

# An unknown path: a JSON answer the SDK can parse (a plain-text 404 would be code None).
resp = client.request(
    lark.BaseRequest.builder()
    .http_method(lark.HttpMethod.GET)
    .uri("/open-apis/nope/v1/things")
    .token_types({lark.AccessTokenType.TENANT})
    .build()
)
check("unknown path: HTTP 404", resp.raw.status_code == 404, resp.raw.status_code)
check("unknown path: JSON code", resp.code is not None and resp.code != 0, resp.raw.content)
check("unknown path: not a success", not resp.success())


def webhook(token, body):
    """A custom-bot push through the SDK's generic request (no token: webhooks need none, §8)."""
    req = (
        lark.BaseRequest.builder()
        .http_method(lark.HttpMethod.POST)
        .uri(f"{BASE}/open-apis/bot/v2/hook/{token}")
        .headers({"Content-Type": "application/json; charset=utf-8"})
        .body(body)
        .build()
    )
    return client.request(req)


def signed(secret, ts):
    """§8: base64(HMAC-SHA256(key = timestamp + "\\n" + secret, message = empty))."""
    key = f"{ts}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


check("webhook: §8 test vector", signed("demo", 1599360473) == "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8=")
now = int(time.time())
text = {"msg_type": "text", "content": {"text": "sdk webhook"}}
resp = webhook("hook-signed", dict(text, timestamp=str(now), sign=signed("demo", now)))
answered("webhook signed", resp)
resp = webhook("hook-signed", dict(text, timestamp=str(now), sign=signed("not-the-secret", now)))
answered("webhook wrong signature", resp, code=19021)
check("webhook wrong signature: msg", "sign match fail" in (resp.msg or ""), resp.msg)

# What the emulator recorded of the SDK's requests, before the resets below clear it.
seen = {(m["receive_id_type"], m["receive_id"]) for m in control("/_emulator/messages")}
for id_type, receive_id in [("open_id", "ou_alice"), ("union_id", "on_alice"), ("user_id", "bob"),
                            ("email", "bob@example.com"), ("chat_id", "oc_ops")]:
    check(f"recorded: send {id_type}", (id_type, receive_id) in seen, sorted(seen))
check("recorded: reply", ("message_id", parent) in seen, sorted(seen))
kinds = sorted(u["kind"] for u in control("/_emulator/urgents"))
check("recorded: urgent kinds", kinds == ["app", "phone", "sms"], kinds)

# §8: a bot's 5 pushes a second; the next is the bot's throttle, 9499 "too many request" over
# HTTP 400 (lark-api.md §8, correction).
control("/_emulator/reset", {})
for i in range(5):
    resp = webhook("hook-plain", text)
    check(f"webhook push {i + 1} of 5", resp.code == 0, f"code={resp.code} msg={resp.msg}")
resp = webhook("hook-plain", text)
answered("webhook throttle", resp, code=9499, status=400)
check("webhook throttle: msg", resp.msg == "too many request", resp.msg)

# §4: the gateway's throttle: HTTP 429, 99991400 and both x-ogw-ratelimit-* headers.
control("/_emulator/reset", {})
control("/_emulator/limits", {"app_per_sec": 1})
first = send("open_id", "ou_alice", "sdk throttle 1")
check("throttle: first send passes", first.code == 0, f"code={first.code} msg={first.msg}")
resp = send("open_id", "ou_alice", "sdk throttle 2")
answered("throttle", resp, code=99991400, status=429)
limit, reset = header(resp, "x-ogw-ratelimit-limit"), header(resp, "x-ogw-ratelimit-reset")
check("throttle: x-ogw-ratelimit-limit", limit == "1", f"{limit!r}; headers {resp.raw.headers}")
check("throttle: x-ogw-ratelimit-reset", (reset or "").isdigit() and int(reset) >= 1, f"{reset!r}")
control("/_emulator/limits", {})

# §3: a permanent error: the bot is not in the chat (230002, HTTP 400, error.log_id in the body).
resp = send("chat_id", "oc_outside", "sdk outside")
log_id = answered("permanent error", resp, code=230002, status=400)
check("permanent error: msg", "outside the group" in (resp.msg or ""), resp.msg)
# lark-oapi 1.7.5 leaves `error` a plain dict (BaseResponse declares no type for it), so
# `get_troubleshooter()` raises AttributeError on any error answer that has one; read the dict.
error = resp.error if isinstance(resp.error, dict) else vars(resp.error) if resp.error else {}
body_log = error.get("log_id")
check("permanent error: error.log_id", bool(body_log), resp.raw.content)
check("permanent error: header and body log id agree", body_log == log_id, f"{log_id} vs {body_log}")
check("permanent error: success() is false", not resp.success())

print(json.dumps({"failures": FAILURES, "sent": sent}), flush=True)
sys.exit(1 if FAILURES else 0)
