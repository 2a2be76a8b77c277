// Prometheus Alertmanager webhook payload (version 4) → one interactive card per ALERT, updated in
// place as the alert changes: red (or its severity's colour) while it fires, green once resolved.
//
// Point an Alertmanager webhook receiver (with `send_resolved: true`) at something that writes the
// POSTed body to Kafka, keyed by the notification's `groupKey` (for example a small HTTP→Kafka
// bridge); each record is one notification with one or more alerts. Every alert becomes one
// envelope whose `messageKey` is the alert's fingerprint, so the first notification about an alert
// sends its card and every later one (still firing, then resolved) updates that same card. The
// connector needs `lark.state.topic` for that (see docs/user-guide.md#updating-messages).
//
// The chat comes from the alert's `lark_chat` label (set it in your routing), else the ops chat.

const DEFAULT_CHAT = 'oc_ops';
const COLOURS = { critical: 'red', warning: 'orange', info: 'blue' };
// Lark's limit on a messageKey (connector/schema/envelope.json).
const MAX_KEY = 200;

// The alert's identity across notifications: Alertmanager's fingerprint of its label set, or (from
// a sender that leaves it out) its name and instance.
function keyOf(a, labels) {
  if (a.fingerprint) return String(a.fingerprint);
  return ((labels.alertname || 'alert') + '/' + (labels.instance || '-')).slice(0, MAX_KEY);
}

function alertCard(n, a, common) {
  const labels = a.labels || {};
  const ann = a.annotations || {};
  const name = labels.alertname || common.alertname || 'alert';
  const severity = labels.severity || common.severity;
  const resolved = a.status === 'resolved';
  const where = labels.instance ? ' on ' + labels.instance : '';

  const fields = [
    ['Instance', labels.instance || '-'],
    ['Severity', severity || '-'],
    ['Status', a.status],
    ['Since', a.startsAt],
  ];
  if (resolved) fields.push(['Resolved', a.endsAt]);
  const elements = [
    '**' + (ann.summary || name) + '**' + (ann.description ? '\n' + ann.description : ''),
    lark.fields(fields),
  ];
  if (ann.runbook_url) elements.push(lark.button('Runbook', ann.runbook_url, 'primary'));
  else if (a.generatorURL) elements.push(lark.button('Graph', a.generatorURL));
  if (n.externalURL) elements.push(lark.note('Alertmanager: ' + n.externalURL + ' · receiver ' + n.receiver));

  const card = lark.card('chat', labels.lark_chat || common.lark_chat || DEFAULT_CHAT, {
    title: (resolved ? '[RESOLVED] ' : '[FIRING] ') + name + where,
    template: resolved ? 'green' : (COLOURS[severity] || 'red'),
    elements: elements,
  });
  card.messageKey = keyOf(a, labels);
  return card;
}

function process(n, meta) {
  if (!n || !Array.isArray(n.alerts) || n.alerts.length === 0) return null;
  const common = n.commonLabels || {};
  return n.alerts.map(a => alertCard(n, a, common));
}
