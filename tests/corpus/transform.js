// The corpus transform (tests/corpus/cases.yaml, cases with `transform: true`): passes every record
// through unchanged, except records whose `corpus` field asks it to misbehave. The connector runs
// it as transform "corpus" with timeout.ms=200 and memory.limit.bytes=16777216; each misbehaviour
// must end in a dead letter naming the script, never in a stalled partition or a crashed process.
function process(r, meta) {
  switch (r.corpus) {
    case 'throw':
      throw new Error('corpus: thrown on purpose');
    case 'loop':
      for (;;) {}
    case 'alloc': {
      const a = [];
      for (;;) a.push('x'.repeat(1 << 20) + a.length);
    }
    case 'recurse': {
      const f = n => f(n + 1) + 1;
      return f(0);
    }
    case 'deep': {
      let o = {receiveId: 'ou_alice', content: {text: 'deep'}};
      for (let i = 0; i < 100000; i++) o = {inner: o};
      return o;
    }
    case 'string':
      return 'not an envelope';
    case 'invalid':
      return {content: {text: 'no receiver'}};
    case 'fanout': {
      const out = [];
      for (let i = 0; i < 1001; i++) out.push(lark.text('user', 'ou_alice', 'fan ' + i));
      return out;
    }
    default:
      return r;
  }
}
