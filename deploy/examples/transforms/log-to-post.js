// Log lines (as shipped by Vector / Fluent Bit: {"message": "<the line>", "host": ...}) → a post to
// the owning team's chat that @mentions the service owner. Only ERROR and FATAL lines are sent.
//
// Line format: <timestamp> <LEVEL> <service> [trace=<id>] <text>
// The Lua version of this script is log-to-post.lua.

const TEAMS = {
  payments: { chat: 'oc_team', owner: 'ou_bob' },
  checkout: { chat: 'oc_team', owner: 'ou_alice' },
};
const FALLBACK = { chat: 'oc_ops', owner: 'all' };
const TRACES = 'https://tracing.example.com/trace/';
const LINE = /^(\S+)\s+([A-Z]+)\s+(\S+)\s+(?:trace=(\S+)\s+)?(.*)$/;

function process(record, meta) {
  const m = LINE.exec(record.message || '');
  if (!m) throw new Error('unparsable log line: ' + JSON.stringify(record.message));
  const [, ts, level, service, trace, text] = m;
  if (level !== 'ERROR' && level !== 'FATAL') return null;

  const team = TEAMS[service] || FALLBACK;
  const lines = [
    text,
    ['at ' + ts + ' on ' + (record.host || 'unknown host')],
  ];
  if (trace) lines.push(['trace ', lark.link(trace, TRACES + trace)]);
  lines.push([lark.at(team.owner), ' please have a look (' + meta.topic + '-' + meta.partition + '@' + meta.offset + ')']);
  return lark.post('chat', team.chat, level + ' in ' + service, lines, 'en_us');
}
