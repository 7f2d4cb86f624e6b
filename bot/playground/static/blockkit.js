// Block Kit and mrkdwn rendering for the jitbot playground. Plain JS, no dependencies, no network.
// Safety: every piece of text is HTML-escaped before any markup is added; links only for http(s)/mailto.
"use strict";

const BK = (() => {
  const EMOJI = {
    white_check_mark: "✅", no_entry: "⛔", key: "🔑", warning: "⚠️", hourglass: "⌛",
    hourglass_flowing_sand: "⏳", x: "❌", lock: "🔒", unlock: "🔓", rotating_light: "🚨",
    clock1: "🕐", alarm_clock: "⏰", bell: "🔔", tada: "🎉", wave: "👋", eyes: "👀",
    information_source: "ℹ️", heavy_check_mark: "✔️", stopwatch: "⏱️", broken_heart: "💔",
    red_circle: "🔴", large_green_circle: "🟢", large_yellow_circle: "🟡", memo: "📝",
  };

  function esc(s) {
    return String(s ?? "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  // Slack's mrkdwn escapes exactly three characters; turn them back into the characters they mean.
  function unent(s) {
    return String(s).replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  }
  function emoji(html) {
    return html.replace(/:([a-z0-9_+-]+):/g, (m, name) => EMOJI[name] ?? m);
  }
  function fmtDate(seconds) {
    const d = new Date(Number(seconds) * 1000);
    if (Number.isNaN(d.getTime())) return null;
    return d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  // One <...> token of mrkdwn (mention, channel, date, special mention, link) as safe HTML.
  function token(inner, names) {
    const bar = inner.indexOf("|");
    const head = bar >= 0 ? inner.slice(0, bar) : inner;
    const label = bar >= 0 ? inner.slice(bar + 1) : null;
    if (head.startsWith("@")) {
      const id = head.slice(1);
      return `<span class="mention">@${esc(label ?? names[id] ?? id)}</span>`;
    }
    if (head.startsWith("#")) return `<span class="mention">#${esc(label ?? head.slice(1))}</span>`;
    if (head.startsWith("!date^")) {
      const shown = fmtDate(head.split("^")[1]) ?? unent(label ?? "");
      return `<time title="${esc(unent(label ?? ""))}">${esc(shown)}</time>`;
    }
    if (head.startsWith("!subteam^")) return `<span class="mention">${esc(unent(label ?? "@group"))}</span>`;
    if (head.startsWith("!")) return `<span class="mention">@${esc(head.slice(1))}</span>`;
    const url = unent(head);
    if (/^(https?:\/\/|mailto:)/i.test(url)) {
      return `<a href="${esc(url)}" target="_blank" rel="noopener noreferrer">${esc(unent(label ?? head))}</a>`;
    }
    return esc(unent(`<${inner}>`));
  }

  function inline(raw) {
    let s = emoji(esc(unent(raw)));
    s = s.replace(/`([^`]+)`/g, "<code>$1</code>");
    s = s.replace(/(^|[\s(>])\*([^*]+?)\*(?=$|[\s).,:;!?<])/g, "$1<b>$2</b>");
    s = s.replace(/(^|[\s(>])_([^_]+?)_(?=$|[\s).,:;!?<])/g, "$1<i>$2</i>");
    s = s.replace(/(^|[\s(>])~([^~]+?)~(?=$|[\s).,:;!?<])/g, "$1<s>$2</s>");
    return s;
  }

  // mrkdwn → safe HTML: tokens out, escape, format per line (quotes from a literal leading ">"), tokens in.
  function mrkdwn(src, names = {}) {
    const tokens = [];
    const text = String(src ?? "").replace(/<([^<>\n]*)>/g, (_, inner) => {
      tokens.push(inner);
      return `\u0000${tokens.length - 1}\u0001`;
    });
    const out = [];
    let quote = [];
    const flush = () => {
      if (quote.length) out.push(`<blockquote>${quote.join("<br>")}</blockquote>`);
      quote = [];
    };
    for (const line of text.split("\n")) {
      if (line.startsWith(">")) {
        quote.push(inline(line.slice(1)));
      } else {
        flush();
        out.push(inline(line) + "<br>");
      }
    }
    flush();
    let html = out.join("").replace(/<br>$/, "");
    html = html.replace(/\u0000(\d+)\u0001/g, (_, i) => token(tokens[Number(i)], names));
    return html;
  }

  function textHtml(t, names) {
    if (!t) return "";
    if (typeof t === "string") return mrkdwn(t, names);
    return t.type === "mrkdwn" ? mrkdwn(t.text, names) : emoji(esc(t.text));
  }

  function el(tag, cls, html) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (html !== undefined) e.innerHTML = html;
    return e;
  }

  function options(elem) {
    const out = [...(elem.options || [])];
    for (const g of elem.option_groups || []) out.push(...(g.options || []));
    return out;
  }

  let uid = 0;
  // A form control for an input / accessory / actions element. ctx.change(elem, blockId, choice) is
  // called on choice in selects etc.; for buttons ctx.action(elem, blockId).
  function control(elem, blockId, ctx, inInput) {
    const id = `bk-${++uid}`;
    const mark = (node) => {
      node.dataset.blockId = blockId;
      node.dataset.actionId = elem.action_id || "";
      node.dataset.type = elem.type;
      node.id = id;
      return node;
    };
    const t = elem.type;
    if (t === "button") {
      const b = el("button", `btn ${elem.style || ""}`, textHtml(elem.text, ctx.names));
      b.type = "button";
      b.dataset.actionId = elem.action_id || "";
      b.addEventListener("click", () => ctx.click(elem, blockId));
      return b;
    }
    if (t === "static_select" || t === "overflow" || t === "multi_static_select" || t === "external_select") {
      const s = mark(el("select", "bk-select"));
      if (t === "multi_static_select") s.multiple = true;
      const initial = new Set([elem.initial_option, ...(elem.initial_options || [])].filter(Boolean)
        .map((o) => o.value));
      if (!s.multiple) {
        const ph = el("option", "", esc(elem.placeholder ? elem.placeholder.text : (t === "overflow" ? "⋯" : "Choose…")));
        ph.value = "";
        s.appendChild(ph);
      }
      for (const o of options(elem)) {
        const opt = el("option", "", emoji(esc(o.text.text)));
        opt.value = o.value;
        opt.selected = initial.has(o.value);
        s.appendChild(opt);
      }
      const dispatch = !inInput || ctx.dispatch;
      s.addEventListener("change", () => {
        if (dispatch && s.value) ctx.change(elem, blockId, s.multiple ? [...s.selectedOptions].map((o) => o.value) : s.value);
      });
      return s;
    }
    if (t === "plain_text_input" || t === "email_text_input" || t === "url_text_input" || t === "number_input") {
      const i = mark(el(elem.multiline ? "textarea" : "input", "bk-input"));
      if (!elem.multiline) i.type = { email_text_input: "email", url_text_input: "url", number_input: "number" }[t] || "text";
      if (elem.placeholder) i.placeholder = elem.placeholder.text;
      if (elem.initial_value) i.value = elem.initial_value;
      return i;
    }
    if (t === "checkboxes" || t === "radio_buttons") {
      const box = mark(el("div", "bk-choices"));
      const initial = new Set([elem.initial_option, ...(elem.initial_options || [])].filter(Boolean).map((o) => o.value));
      for (const o of elem.options || []) {
        const lab = el("label", "bk-choice");
        const inp = document.createElement("input");
        inp.type = t === "checkboxes" ? "checkbox" : "radio";
        inp.name = id;
        inp.value = o.value;
        inp.checked = initial.has(o.value);
        inp.addEventListener("change", () => {
          if (!inInput || ctx.dispatch) ctx.change(elem, blockId, collect(box));
        });
        lab.appendChild(inp);
        lab.appendChild(el("span", "", textHtml(o.text, ctx.names)));
        if (o.description) lab.appendChild(el("small", "", textHtml(o.description, ctx.names)));
        box.appendChild(lab);
      }
      return box;
    }
    if (t === "datepicker" || t === "timepicker") {
      const i = mark(el("input", "bk-input"));
      i.type = t === "datepicker" ? "date" : "time";
      i.value = elem.initial_date || elem.initial_time || "";
      i.addEventListener("change", () => { if ((!inInput || ctx.dispatch) && i.value) ctx.change(elem, blockId, i.value); });
      return i;
    }
    return el("span", "bk-unsupported", esc(`[${t}]`));
  }

  // The value of one control as SlackSender expects it (option value, list, text, date/time).
  function collect(node) {
    const t = node.dataset.type;
    if (t === "checkboxes") return [...node.querySelectorAll("input:checked")].map((i) => i.value);
    if (t === "radio_buttons") {
      const c = node.querySelector("input:checked");
      return c ? c.value : null;
    }
    if (node.multiple) return [...node.selectedOptions].map((o) => o.value);
    return node.value;
  }

  function block(b, ctx) {
    const blockId = b.block_id || "";
    switch (b.type) {
      case "header": return el("div", "bk-header", textHtml(b.text, ctx.names));
      case "divider": return el("hr", "bk-divider");
      case "context": {
        const c = el("div", "bk-context");
        for (const e of b.elements || []) {
          c.appendChild(e.type === "image" ? el("span", "bk-img", esc(e.alt_text || "image")) : el("span", "", textHtml(e, ctx.names)));
        }
        return c;
      }
      case "section": {
        const s = el("div", "bk-section");
        const body = el("div", "bk-section-body");
        if (b.text) body.appendChild(el("div", "bk-text", textHtml(b.text, ctx.names)));
        if (b.fields) {
          const f = el("div", "bk-fields");
          for (const x of b.fields) f.appendChild(el("div", "bk-field", textHtml(x, ctx.names)));
          body.appendChild(f);
        }
        s.appendChild(body);
        if (b.accessory) {
          const acc = el("div", "bk-accessory");
          acc.appendChild(b.accessory.type === "image" ? el("span", "bk-img", esc(b.accessory.alt_text || "image"))
            : control(b.accessory, blockId, ctx, false));
          s.appendChild(acc);
        }
        return s;
      }
      case "actions": {
        const a = el("div", "bk-actions");
        for (const e of b.elements || []) a.appendChild(control(e, blockId, ctx, false));
        return a;
      }
      case "input": {
        const wrap = el("div", "bk-input-block");
        const c = control(b.element, blockId, { ...ctx, dispatch: !!b.dispatch_action }, true);
        const label = el("label", "bk-label", textHtml(b.label, ctx.names) + (b.optional ? ' <span class="opt">(optional)</span>' : ""));
        label.htmlFor = c.id;
        wrap.appendChild(label);
        wrap.appendChild(c);
        if (b.hint) wrap.appendChild(el("div", "bk-hint", textHtml(b.hint, ctx.names)));
        const err = (ctx.errors || {})[blockId];
        if (err) {
          wrap.classList.add("has-error");
          wrap.appendChild(el("div", "bk-error", "⚠ " + esc(err)));
        }
        return wrap;
      }
      case "image": return el("div", "bk-img", esc(b.alt_text || "image"));
      default: return el("div", "bk-unsupported", esc(`[${b.type} block]`));
    }
  }

  function blocks(list, ctx, fallbackText) {
    const root = el("div", "bk");
    if (!list || !list.length) {
      root.appendChild(el("div", "bk-text", mrkdwn(fallbackText || "", ctx.names)));
      return root;
    }
    for (const b of list) root.appendChild(block(b, ctx));
    return root;
  }

  return { esc, mrkdwn, textHtml, blocks, collect, el };
})();
