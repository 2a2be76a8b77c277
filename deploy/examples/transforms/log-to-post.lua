-- Log lines (as shipped by Vector / Fluent Bit: {"message": "<the line>", "host": ...}) → a post to
-- the owning team's chat that @mentions the service owner. Only ERROR and FATAL lines are sent.
--
-- Line format: <timestamp> <LEVEL> <service> [trace=<id>] <text>
-- The JavaScript version of this script is log-to-post.js.

local TEAMS = {
  payments = { chat = "oc_team", owner = "ou_bob" },
  checkout = { chat = "oc_team", owner = "ou_alice" },
}
local FALLBACK = { chat = "oc_ops", owner = "all" }
local TRACES = "https://tracing.example.com/trace/"

function process(record, meta)
  local ts, level, service, rest = string.match(record.message or "", "^(%S+)%s+(%u+)%s+(%S+)%s+(.*)$")
  if not ts then error("unparsable log line: " .. lark.json_encode(record.message or "")) end
  if level ~= "ERROR" and level ~= "FATAL" then return nil end
  local trace, text = string.match(rest, "^trace=(%S+)%s+(.*)$")
  if not trace then text = rest end

  local team = TEAMS[service] or FALLBACK
  local lines = {
    text,
    { "at " .. ts .. " on " .. (record.host or "unknown host") },
  }
  if trace then lines[#lines + 1] = { "trace ", lark.link(trace, TRACES .. trace) } end
  lines[#lines + 1] = { lark.at(team.owner),
    " please have a look (" .. meta.topic .. "-" .. meta.partition .. "@" .. meta.offset .. ")" }
  return lark.post("chat", team.chat, level .. " in " .. service, lines, "en_us")
end
