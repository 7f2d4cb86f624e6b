// The jitbot playground page: polls /api/state, renders what the current persona sees, and sends every
// click / submit / command to the playground server, which forwards it to the bot as a signed request.
"use strict";

const $ = (sel) => document.querySelector(sel);
const app = {
  user: decodeURIComponent(location.hash.slice(1)) || null,
  pane: "dm",
  state: null,
  sigs: {},
  openThreads: new Set(),
  busy: 0,
};

async function api(name, body) {
  app.busy++;
  document.body.classList.add("busy");
  try {
    const res = await fetch(`/api/${name}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const out = res.ok ? await res.json() : { ok: false, error: await res.text() };
    if (!out.ok) toast(out.error || "Something went wrong", true);
    return out;
  } catch (e) {
    toast(`The playground server is unreachable (${e.message})`, true);
    return { ok: false };
  } finally {
    app.busy--;
    if (!app.busy) document.body.classList.remove("busy");
    await refresh();
  }
}

function toast(text, bad) {
  const t = $("#toast");
  t.textContent = text;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

function changed(key, value) {
  const sig = JSON.stringify(value);
  if (app.sigs[key] === sig) return false;
  app.sigs[key] = sig;
  return true;
}

// Ask before clicking a button that carries a confirm dialog, like Slack does.
function confirmFirst(confirm, names) {
  if (!confirm) return Promise.resolve(true);
  return new Promise((resolve) => {
    const root = $("#confirm-root");
    root.innerHTML = "";
    const overlay = BK.el("div", "overlay confirm");
    const box = BK.el("div", "dialog");
    box.setAttribute("role", "dialog");
    box.dataset.testid = "confirm";
    box.appendChild(BK.el("h3", "", BK.textHtml(confirm.title || { type: "plain_text", text: "Are you sure?" }, names)));
    box.appendChild(BK.el("p", "", BK.textHtml(confirm.text, names)));
    const row = BK.el("div", "dialog-buttons");
    const no = BK.el("button", "btn", BK.textHtml(confirm.deny || { type: "plain_text", text: "Cancel" }, names));
    const yes = BK.el("button", `btn ${confirm.style || "primary"}`,
      BK.textHtml(confirm.confirm || { type: "plain_text", text: "Yes" }, names));
    const done = (v) => { root.innerHTML = ""; resolve(v); };
    no.onclick = () => done(false);
    yes.onclick = () => done(true);
    row.append(no, yes);
    box.appendChild(row);
    overlay.appendChild(box);
    root.appendChild(overlay);
  });
}

// Rendering context for blocks in a message (channel + ts) or in a view (view_id).
function messageCtx(channel, ts) {
  const names = app.state.names;
  return {
    names,
    click: async (elem, blockId) => {
      if (await confirmFirst(elem.confirm, names)) {
        await api("click", { user: app.user, channel, ts, action_id: elem.action_id, block_id: blockId });
      }
    },
    change: (elem, blockId, choice) =>
      api("click", { user: app.user, channel, ts, action_id: elem.action_id, block_id: blockId, choice }),
  };
}

function viewValues(container) {
  const values = {};
  for (const node of container.querySelectorAll("[data-action-id][data-type]")) {
    const v = BK.collect(node);
    if (v === null || (node.tagName === "SELECT" && !node.multiple && v === "")) continue;
    values[`${node.dataset.blockId}/${node.dataset.actionId}`] = v;
  }
  return values;
}

function viewCtx(view, container) {
  const names = app.state.names;
  return {
    names,
    errors: view.errors,
    click: async (elem, blockId) => {
      if (await confirmFirst(elem.confirm, names)) {
        await api("view_action", { user: app.user, view_id: view.id, action_id: elem.action_id, block_id: blockId,
          values: viewValues(container()) });
      }
    },
    change: (elem, blockId, choice) => api("view_action", { user: app.user, view_id: view.id,
      action_id: elem.action_id, block_id: blockId, choice, values: viewValues(container()) }),
  };
}

function who(msg) {
  if (msg.bot) return "jitbot";
  return app.state.names[msg.user] || msg.user;
}

function messageNode(msg, channel, extraClass) {
  const node = BK.el("div", `msg ${extraClass || ""}`);
  node.dataset.ts = msg.ts;
  const head = BK.el("div", "msg-head");
  head.appendChild(BK.el("span", "author", BK.esc(msg.ephemeral ? "jitbot" : who(msg))));
  if (msg.bot || msg.ephemeral) head.appendChild(BK.el("span", "app-badge", "APP"));
  const when = new Date(Number(msg.ts) * 1000).toISOString().slice(0, 16).replace("T", " ");
  head.appendChild(BK.el("span", "when", BK.esc(when + " UTC")));
  if (msg.edited) head.appendChild(BK.el("span", "edited", "(edited)"));
  if (msg.ephemeral) head.appendChild(BK.el("span", "only-you", "Only visible to you"));
  node.appendChild(head);
  node.appendChild(BK.blocks(msg.blocks, messageCtx(channel, msg.ts), msg.text));
  return node;
}

function renderDm(s) {
  const items = s.dms.map((m) => ({ ...m, channel: s.dm_channel }))
    .concat(s.ephemerals.map((e) => ({ ...e, ephemeral: true })))
    .sort((a, b) => Number(a.ts) - Number(b.ts));
  if (!changed("dm", [s.user, items, s.names])) return;
  const box = $("#dm");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.innerHTML = "";
  if (!items.length) {
    box.appendChild(BK.el("div", "empty", "No messages yet. Type <code>/jit</code> below to request access."));
  }
  for (const m of items) box.appendChild(messageNode(m, m.channel, m.ephemeral ? "ephemeral" : ""));
  if (atBottom || items.length) box.scrollTop = box.scrollHeight;
}

function threaded(root, channel) {
  const node = messageNode(root, channel);
  if (root.replies.length) {
    const details = BK.el("details", "thread");
    details.open = app.openThreads.has(root.ts);
    details.addEventListener("toggle", () => {
      if (details.open) app.openThreads.add(root.ts); else app.openThreads.delete(root.ts);
    });
    details.appendChild(BK.el("summary", "", `${root.replies.length} repl${root.replies.length === 1 ? "y" : "ies"}`));
    for (const r of root.replies) details.appendChild(messageNode(r, channel, "reply"));
    node.appendChild(details);
  }
  return node;
}

// Approver channels (policy: approvers.channel): every message of each channel this persona is in.
function renderChannels(s) {
  if (!changed("channels", [s.channels, s.names, [...app.openThreads]])) return;
  const box = $("#channels");
  box.innerHTML = "";
  if (!s.channels.length) box.appendChild(BK.el("div", "empty", "No approver channels in this policy."));
  for (const ch of s.channels) {
    box.appendChild(BK.el("h3", "channel-name", BK.esc(`#${ch.name}`)));
    if (!ch.messages.length) box.appendChild(BK.el("div", "empty", "No requests posted here yet."));
    for (const root of ch.messages) box.appendChild(threaded(root, ch.id));
  }
}

function renderAudit(s) {
  if (!changed("audit", [s.audit, s.names, [...app.openThreads]])) return;
  const box = $("#audit");
  box.innerHTML = "";
  if (!s.audit.length) box.appendChild(BK.el("div", "empty", "Nothing audited yet."));
  for (const root of s.audit) {
    const node = messageNode(root, s.audit_channel);
    if (root.replies.length) {
      const details = BK.el("details", "thread");
      details.open = app.openThreads.has(root.ts);
      details.addEventListener("toggle", () => {
        if (details.open) app.openThreads.add(root.ts); else app.openThreads.delete(root.ts);
      });
      details.appendChild(BK.el("summary", "", `${root.replies.length} repl${root.replies.length === 1 ? "y" : "ies"}`));
      for (const r of root.replies) details.appendChild(messageNode(r, s.audit_channel, "reply"));
      node.appendChild(details);
    }
    box.appendChild(node);
  }
  box.scrollTop = box.scrollHeight;
}

function renderHome(s) {
  if (!changed("home", [s.user, s.home, s.names])) return;
  const box = $("#home");
  box.innerHTML = "";
  if (!s.home) {
    box.appendChild(BK.el("div", "empty", "The bot has not published a Home tab for you yet."));
    return;
  }
  box.appendChild(BK.blocks(s.home.blocks, viewCtx(s.home, () => box)));
}

function renderModal(s) {
  const top = s.modals[s.modals.length - 1] || null;
  if (!changed("modal", [s.user, top, s.modals.length])) return;
  const root = $("#modal-root");
  const previous = root.querySelector(".modal");
  const keep = previous && top && previous.dataset.viewId === top.id ? viewValues(previous) : {};
  root.innerHTML = "";
  if (!top) return;
  const overlay = BK.el("div", "overlay");
  const modal = BK.el("form", "modal");
  modal.dataset.viewId = top.id;
  modal.dataset.testid = "modal";
  modal.setAttribute("role", "dialog");
  const head = BK.el("div", "modal-head");
  head.appendChild(BK.el("h3", "", BK.textHtml(top.title, s.names)));
  if (s.modals.length > 1) head.appendChild(BK.el("span", "stack", `${s.modals.length} modals open`));
  modal.appendChild(head);
  const body = BK.blocks(top.blocks, viewCtx(top, () => modal));
  body.classList.add("modal-body");
  modal.appendChild(body);
  for (const node of modal.querySelectorAll("[data-action-id][data-type]")) {
    const key = `${node.dataset.blockId}/${node.dataset.actionId}`;
    if (key in keep && typeof keep[key] === "string" && node.tagName !== "DIV") node.value = keep[key];
  }
  const foot = BK.el("div", "modal-foot");
  const close = BK.el("button", "btn", BK.textHtml(top.close || { type: "plain_text", text: "Close" }, s.names));
  close.type = "button";
  close.onclick = () => api("close", { user: app.user, view_id: top.id });
  foot.appendChild(close);
  if (top.submit) {
    const submit = BK.el("button", "btn primary", BK.textHtml(top.submit, s.names));
    submit.type = "submit";
    foot.appendChild(submit);
  }
  modal.appendChild(foot);
  modal.addEventListener("submit", (ev) => {
    ev.preventDefault();
    api("submit", { user: app.user, view_id: top.id, values: viewValues(modal) });
  });
  overlay.appendChild(modal);
  root.appendChild(overlay);
}

function renderChrome(s) {
  $("#now").textContent = s.now.slice(0, 19).replace("T", " ") + " UTC" +
    (s.offset_s > 0 ? ` (+${formatOffset(s.offset_s)})` : "");
  if (!changed("personas", [s.personas, s.user])) return;
  const sel = $("#persona");
  sel.innerHTML = "";
  const people = $("#people");
  people.innerHTML = "";
  for (const p of s.personas) {
    const opt = BK.el("option", "", BK.esc(`${p.real_name} — ${p.role}`));
    opt.value = p.id;
    opt.selected = p.id === s.user;
    sel.appendChild(opt);
    const li = BK.el("li", p.id === s.user ? "me" : "", `<b>${BK.esc(p.real_name)}</b> <small>${BK.esc(p.role)}</small>`);
    li.onclick = () => switchPersona(p.id);
    people.appendChild(li);
  }
}

function formatOffset(seconds) {
  const m = Math.round(seconds / 60);
  const d = Math.floor(m / 1440), h = Math.floor((m % 1440) / 60), mm = m % 60;
  return [d ? `${d}d` : "", h ? `${h}h` : "", mm || (!d && !h) ? `${mm}m` : ""].join("");
}

async function refresh() {
  try {
    const q = app.user ? `?user=${encodeURIComponent(app.user)}` : "";
    const res = await fetch(`/api/state${q}`, { cache: "no-store" });
    if (!res.ok) {
      if (res.status === 404 && app.user) { app.user = null; return; }
      return;
    }
    const s = await res.json();
    app.user = s.user;
    app.state = s;
    renderChrome(s);
    renderDm(s);
    renderHome(s);
    renderAudit(s);
    renderChannels(s);
    renderModal(s);
    document.body.dataset.user = s.user;
  } catch (e) {
    /* the next poll retries */
  }
}

async function switchPersona(id) {
  app.user = id;
  history.replaceState(null, "", `#${encodeURIComponent(id)}`);
  app.sigs = {};
  $("#confirm-root").innerHTML = "";
  await refresh();
  if (app.pane === "home") await api("home", { user: app.user });
}

async function showPane(pane) {
  app.pane = pane;
  for (const b of document.querySelectorAll(".nav")) b.classList.toggle("active", b.dataset.pane === pane);
  for (const p of ["dm", "home", "channels", "audit"]) $(`#pane-${p}`).hidden = p !== pane;
  if (pane === "home") await api("home", { user: app.user });
}

function init() {
  $("#persona").addEventListener("change", (e) => switchPersona(e.target.value));
  for (const b of document.querySelectorAll(".nav")) b.addEventListener("click", () => showPane(b.dataset.pane));
  for (const b of document.querySelectorAll("[data-minutes]")) {
    b.addEventListener("click", () => api("clock", { minutes: Number(b.dataset.minutes) }));
  }
  $("#composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("#composer-input");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    await api("command", { user: app.user, text });
  });
  refresh();
  setInterval(() => { if (!app.busy) refresh(); }, 1000);
}

init();
