-- Helpers for Lua transforms, installed as the global `lark` before the user's script runs. The
-- same API as the JavaScript helpers (helpers.js): builders return plain tables, `content` is a
-- table (lark-sink serialises it), so scripts never escape JSON by hand.
--
-- lark-sink runs this chunk with the native pieces it needs and then drops the arguments.
local native_log, timed_out, encode, decode, null, array_mt = ...

local function str(v)
  if v == nil or v == null then return "" end
  return tostring(v)
end

local function envelope(receive_type, receive_id, content_type, content)
  return { receiveType = receive_type, receiveId = str(receive_id), contentType = content_type, content = content }
end

local function is_node(v)
  return type(v) == "table" and v.tag ~= nil
end

-- A post node: a string becomes a text node, a table is kept as it is.
local function node(n)
  if type(n) == "table" then return n end
  return { tag = "text", text = str(n) }
end

local function md(content)
  return { tag = "div", text = { tag = "lark_md", content = str(content) } }
end

local function array(t)
  return setmetatable(t or {}, array_mt)
end

local function map(list, f)
  local out = array({})
  for i, v in ipairs(list or {}) do out[i] = f(v) end
  return out
end

local lark = {}

-- The JSON null, for writing an explicit null. (JSON nulls in a record arrive as nil.)
lark.null = null

-- Marks a table as a JSON array, so that an empty one is written as [] rather than {}.
lark.array = array

-- lark.json_encode(value) -> JSON text; lark.json_decode(text) -> value (nil for null).
lark.json_encode = encode
lark.json_decode = decode

---- envelopes -----------------------------------------------------------------------------------

-- lark.text("email", "ann@example.com", "hello")
function lark.text(receive_type, receive_id, text)
  return envelope(receive_type, receive_id, "text", { text = str(text) })
end

-- lark.post("chat", "oc_ops", "Title", {"a line", {"text ", lark.at("ou_x"), lark.link("more", url)}}, "en_us")
-- Each line is a string, one node, or a list of nodes/strings. locale defaults to zh_cn.
function lark.post(receive_type, receive_id, title, lines, locale)
  local content = map(lines, function(line)
    if type(line) == "table" and not is_node(line) then return map(line, node) end
    return array({ node(line) })
  end)
  return envelope(receive_type, receive_id, "post", { [locale or "zh_cn"] = { title = str(title), content = content } })
end

-- lark.card("chat", "oc_ops", {title = "Disk full", template = "red", elements = {"**host** db-1", lark.hr()}})
-- Strings in elements become markdown blocks. Without a title the card has no header.
function lark.card(receive_type, receive_id, card)
  card = card or {}
  local content = {
    config = { wide_screen_mode = true },
    elements = map(card.elements, function(e)
      if type(e) == "table" then return e end
      return md(e)
    end),
  }
  if card.title ~= nil then
    content.header = { title = { tag = "plain_text", content = str(card.title) }, template = card.template }
  end
  return envelope(receive_type, receive_id, "interactive", content)
end

---- post nodes ----------------------------------------------------------------------------------

function lark.at(user_id) return { tag = "at", user_id = str(user_id) } end
function lark.link(text, href) return { tag = "a", text = str(text), href = str(href) } end

---- card elements -------------------------------------------------------------------------------

lark.md = md
function lark.hr() return { tag = "hr" } end

-- lark.fields({{"Host", "db-1"}, {"Severity", "P1"}}) keeps the order; a map {Host = "db-1"} is
-- sorted by key.
function lark.fields(fields)
  local pairs_list = {}
  if #fields > 0 then
    pairs_list = fields
  else
    for k, v in pairs(fields) do pairs_list[#pairs_list + 1] = { k, v } end
    table.sort(pairs_list, function(a, b) return tostring(a[1]) < tostring(b[1]) end)
  end
  return {
    tag = "div",
    fields = map(pairs_list, function(p)
      return { is_short = true, text = { tag = "lark_md", content = "**" .. str(p[1]) .. "**\n" .. str(p[2]) } }
    end),
  }
end

function lark.button(text, url, kind)
  return {
    tag = "action",
    actions = array({ { tag = "button", text = { tag = "plain_text", content = str(text) }, type = kind or "default", url = str(url) } }),
  }
end

function lark.note(text)
  return { tag = "note", elements = array({ { tag = "plain_text", content = str(text) } }) }
end

---- text ----------------------------------------------------------------------------------------

-- '<at user_id="ou_x"></at>' for text messages; "all" mentions everyone.
function lark.mention(user_id, name)
  return '<at user_id="' .. str(user_id) .. '">' .. str(name) .. "</at>"
end

---- sandbox -------------------------------------------------------------------------------------

-- print goes to the connector's log at INFO.
function print(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  native_log(1, table.concat(parts, "\t", 1, parts.n))
end

-- A timed-out call must not be caught: pcall/xpcall re-raise once the time limit has fired.
local raw_pcall, raw_xpcall = pcall, xpcall
local function recheck(...)
  if timed_out() then error("timed out", 0) end
  return ...
end
function pcall(...) return recheck(raw_pcall(...)) end
function xpcall(...) return recheck(raw_xpcall(...)) end

_G.lark = lark
