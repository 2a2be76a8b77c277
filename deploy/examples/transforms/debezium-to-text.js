// Debezium change events of the `orders` table → one text message per interesting change.
//
// Works with and without Debezium's JSON schema wrapper ({"schema": ..., "payload": {...}}).
// New orders and status changes are announced to the sales chat; the account manager of the
// order (column `manager_email`) is told about cancellations directly. Snapshot reads ("r"),
// other tables and changes that do not touch the status are dropped.

const SALES_CHAT = 'oc_team';

function process(record, meta) {
  const ev = record.payload !== undefined ? record.payload : record;
  if (!ev || !ev.source || ev.source.table !== 'orders') return null;

  const before = ev.before || {};
  const after = ev.after || {};
  const id = after.id !== undefined ? after.id : before.id;
  const amount = (cents) => (cents / 100).toFixed(2) + ' ' + (after.currency || before.currency || 'EUR');

  switch (ev.op) {
    case 'c':
      return lark.text('chat', SALES_CHAT,
        'New order #' + id + ' from ' + after.customer + ': ' + amount(after.amount_cents));
    case 'u':
      if (before.status === after.status) return null;
      if (after.status === 'cancelled' && after.manager_email) {
        return [
          lark.text('chat', SALES_CHAT, 'Order #' + id + ': ' + before.status + ' → cancelled'),
          lark.text('email', after.manager_email,
            'Your customer ' + after.customer + ' cancelled order #' + id + ' (' + amount(after.amount_cents) + ')'),
        ];
      }
      return lark.text('chat', SALES_CHAT, 'Order #' + id + ': ' + before.status + ' → ' + after.status);
    case 'd':
      return lark.text('chat', SALES_CHAT, 'Order #' + id + ' was deleted (db ' + ev.source.db + ', offset ' + meta.offset + ')');
    default:
      return null; // "r" (snapshot) and anything new
  }
}
