// Helpers for JavaScript transforms, installed as the frozen global `lark` before the user's script
// runs. Each builder returns a plain object; `content` is an object (lark-sink serialises it), so
// scripts never escape JSON by hand. The same API exists for Lua (helpers.lua).
//
// This file is evaluated as one function expression, which lark-sink calls with a native logger.
(function (nativeLog) {
  'use strict';

  function str(v) {
    return v === undefined || v === null ? '' : String(v);
  }

  function envelope(receiveType, receiveId, contentType, content) {
    return { receiveType: receiveType, receiveId: str(receiveId), contentType: contentType, content: content };
  }

  // A post node: a string becomes a text node, an object is kept as it is.
  function node(n) {
    return typeof n === 'object' && n !== null ? n : { tag: 'text', text: str(n) };
  }

  // A card element: a string becomes a markdown block, an object is kept as it is.
  function element(e) {
    return typeof e === 'object' && e !== null ? e : md(e);
  }

  function md(content) {
    return { tag: 'div', text: { tag: 'lark_md', content: str(content) } };
  }

  function pairs(fields) {
    if (Array.isArray(fields)) return fields;
    return Object.keys(fields).map(function (k) { return [k, fields[k]]; });
  }

  const lark = {
    // ---- envelopes -------------------------------------------------------------------------
    // lark.text('email', 'ann@example.com', 'hello')
    text: function (receiveType, receiveId, text) {
      return envelope(receiveType, receiveId, 'text', { text: str(text) });
    },
    // lark.post('chat', 'oc_ops', 'Title', ['a line', ['text ', lark.at('ou_x'), lark.link('more', url)]])
    // Each line is a string, one node, or an array of nodes/strings. locale defaults to zh_cn.
    post: function (receiveType, receiveId, title, lines, locale) {
      const body = {};
      body[locale || 'zh_cn'] = {
        title: str(title),
        content: (lines || []).map(function (line) {
          return Array.isArray(line) ? line.map(node) : [node(line)];
        }),
      };
      return envelope(receiveType, receiveId, 'post', body);
    },
    // lark.card('chat', 'oc_ops', {title: 'Disk full', template: 'red', elements: ['**host** db-1', lark.hr()]})
    // Strings in elements become markdown blocks. Without a title the card has no header.
    card: function (receiveType, receiveId, card) {
      card = card || {};
      const content = {
        config: { wide_screen_mode: true },
        elements: (card.elements || []).map(element),
      };
      if (card.title !== undefined && card.title !== null) {
        content.header = { title: { tag: 'plain_text', content: str(card.title) } };
        if (card.template) content.header.template = card.template;
      }
      return envelope(receiveType, receiveId, 'interactive', content);
    },

    // ---- post nodes ------------------------------------------------------------------------
    at: function (userId) { return { tag: 'at', user_id: str(userId) }; },
    link: function (text, href) { return { tag: 'a', text: str(text), href: str(href) }; },

    // ---- card elements ---------------------------------------------------------------------
    md: md,
    hr: function () { return { tag: 'hr' }; },
    // lark.fields({Host: 'db-1', Severity: 'P1'}) or lark.fields([['Host', 'db-1']]): two columns.
    fields: function (fields) {
      return {
        tag: 'div',
        fields: pairs(fields).map(function (p) {
          return { is_short: true, text: { tag: 'lark_md', content: '**' + str(p[0]) + '**\n' + str(p[1]) } };
        }),
      };
    },
    button: function (text, url, type) {
      return {
        tag: 'action',
        actions: [{ tag: 'button', text: { tag: 'plain_text', content: str(text) }, type: type || 'default', url: str(url) }],
      };
    },
    note: function (text) {
      return { tag: 'note', elements: [{ tag: 'plain_text', content: str(text) }] };
    },

    // ---- text ------------------------------------------------------------------------------
    // '<at user_id="ou_x"></at>' for text messages; 'all' mentions everyone.
    mention: function (userId, name) {
      return '<at user_id="' + str(userId) + '">' + str(name) + '</at>';
    },
  };

  function format(args) {
    return Array.prototype.map.call(args, function (a) {
      if (typeof a === 'string') return a;
      try {
        const s = JSON.stringify(a);
        return s === undefined ? String(a) : s;
      } catch (e) {
        return String(a);
      }
    }).join(' ');
  }

  // console.log/info/debug go to the connector's log at INFO, warn and error at WARN and ERROR.
  const console = {
    log: function () { nativeLog(1, format(arguments)); },
    info: function () { nativeLog(1, format(arguments)); },
    debug: function () { nativeLog(0, format(arguments)); },
    warn: function () { nativeLog(2, format(arguments)); },
    error: function () { nativeLog(3, format(arguments)); },
  };

  Object.defineProperty(globalThis, 'lark', { value: Object.freeze(lark), enumerable: false });
  Object.defineProperty(globalThis, 'console', { value: Object.freeze(console), enumerable: false });
})
