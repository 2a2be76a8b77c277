// Drives the Lark emulator with the official Node SDK (@larksuiteoapi/node-sdk), run by
// tests/tests/sdk.rs when node is present: the second independent reader of the emulator's answers
// (tests/sdk/python_sdk.py says why). The Node SDK returns the body of a 2xx answer and throws
// axios's error for any other, so error answers are read from `error.response`.
//
// Usage: node node_sdk.js BASE_URL APP_ID APP_SECRET, with NODE_PATH naming the SDK's
// node_modules. Prints one line per check ("FAIL name: detail" for failures) and exits 1 on any.

const lark = require("@larksuiteoapi/node-sdk");

const [base, appId, appSecret] = process.argv.slice(2);
const failures = [];

function check(name, ok, detail) {
  console.log((ok ? "ok   " : "FAIL ") + name + (ok ? "" : ": " + JSON.stringify(detail)));
  if (!ok) failures.push(name);
}

// The answer of a call, whether the SDK returned it (a 2xx: the SDK hands back the body only) or
// threw it (axios's error, with the whole answer): status, headers, body.
async function answer(call) {
  try {
    return { status: 200, headers: {}, body: await call() };
  } catch (e) {
    if (!e.response) throw e;
    return { status: e.response.status, headers: e.response.headers, body: e.response.data };
  }
}

async function main() {
  const client = new lark.Client({
    appId,
    appSecret,
    domain: base,
    // A silent logger: `loggerLevel: LoggerLevel.fatal` is 0 and the SDK's `loggerLevel || info`
    // drops it (1.74.0), and the SDK logs every thrown answer at error level.
    logger: { error() {}, warn() {}, info() {}, debug() {}, trace() {} },
  });
  const send = (idType, receiveId, text) =>
    answer(() =>
      client.im.message.create({
        params: { receive_id_type: idType },
        data: { receive_id: receiveId, msg_type: "text", content: JSON.stringify({ text }) },
      }),
    );

  // §1 and §2: the SDK mints the tenant token itself and sends for each receive_id_type.
  for (const [idType, id] of [
    ["open_id", "ou_alice"],
    ["union_id", "on_alice"],
    ["user_id", "bob"],
    ["email", "bob@example.com"],
    ["chat_id", "oc_ops"],
  ]) {
    const a = await send(idType, id, `node ${idType}`);
    check(`send ${idType}: code`, a.body && a.body.code === 0, a.body);
    check(
      `send ${idType}: message_id`,
      a.body && a.body.data && String(a.body.data.message_id).startsWith("om_"),
      a.body,
    );
  }

  // §3: a permanent error is thrown with its answer: HTTP 400, 230002, the log id in both places.
  const e = await send("chat_id", "oc_outside", "node outside");
  check("permanent error: HTTP 400", e.status === 400, e.status);
  check("permanent error: code", e.body && e.body.code === 230002, e.body);
  const logId = e.headers["x-tt-logid"];
  check("permanent error: x-tt-logid", Boolean(logId), e.headers);
  check(
    "permanent error: error.log_id",
    e.body && e.body.error && e.body.error.log_id === logId,
    e.body,
  );

  console.log(JSON.stringify({ failures }));
  process.exit(failures.length ? 1 : 0);
}

main().catch((err) => {
  console.log("FAIL script: " + (err && err.stack ? err.stack : String(err)));
  process.exit(1);
});
