// Prometheus Alertmanager webhook payload (version 4) → one interactive card per notification.
//
// Point an Alertmanager webhook receiver at something that writes the POSTed body to Kafka (for
// example a small HTTP→Kafka bridge); each record is one notification with one or more alerts.
// The chat comes from the `lark_chat` label (set it in your routing), else the ops chat.

const DEFAULT_CHAT = 'oc_ops';
const COLOURS = { critical: 'red', warning: 'orange', info: 'blue' };

function process(n, meta) {
  if (!n || !Array.isArray(n.alerts) || n.alerts.length === 0) return null;
  const common = n.commonLabels || {};
  const firing = n.alerts.filter(a => a.status === 'firing');
  const resolved = n.status === 'resolved';
  const name = (n.groupLabels && n.groupLabels.alertname) || common.alertname || 'alert';
  const title = resolved
    ? '[RESOLVED] ' + name
    : '[FIRING:' + firing.length + '] ' + name;

  const elements = [];
  n.alerts.forEach((a, i) => {
    const ann = a.annotations || {};
    const labels = a.labels || {};
    if (i > 0) elements.push(lark.hr());
    elements.push('**' + (ann.summary || labels.alertname || name) + '**' +
      (ann.description ? '\n' + ann.description : ''));
    elements.push(lark.fields([
      ['Instance', labels.instance || '-'],
      ['Severity', labels.severity || common.severity || '-'],
      ['Status', a.status],
      ['Since', a.startsAt],
    ]));
    if (ann.runbook_url) elements.push(lark.button('Runbook', ann.runbook_url, 'primary'));
    else if (a.generatorURL) elements.push(lark.button('Graph', a.generatorURL));
  });
  if (n.externalURL) elements.push(lark.note('Alertmanager: ' + n.externalURL + ' · receiver ' + n.receiver));

  return lark.card('chat', common.lark_chat || DEFAULT_CHAT, {
    title: title,
    template: resolved ? 'green' : (COLOURS[common.severity] || 'red'),
    elements: elements,
  });
}
