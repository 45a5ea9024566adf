// idcluster review: plain JS, no build step. Talks to the JSON API of idcluster/review/server.py.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const $ = (sel) => document.querySelector(sel);
const PAGE = 200;      // members per page (lazy paging keeps 10k-image folders fast)
const CARD_PAGE = 120; // identity cards rendered per step

const view = { state: null, ident: null, members: [], total: 0, selected: new Set(), anchor: null,
               checked: new Set(), cardLimit: CARD_PAGE };

async function api(path) {
  const r = await fetch(path, { headers: { "X-Review-Token": TOKEN } });
  if (!r.ok) throw new Error((await r.text()) || r.statusText);
  return r.json();
}

async function act(body) {
  status("working…");
  const r = await fetch("/api/action", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Review-Token": TOKEN },
    body: JSON.stringify(body),
  });
  const out = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) { status("error: " + out.error, true); return null; }
  await refresh();
  status(`done: ${body.op}` + (out.entry ? ` (#${out.entry.seq})` : ""));
  return out;
}

function status(text, bad) {
  const s = $("#status");
  s.textContent = text;
  s.style.color = bad ? "var(--bad)" : "";
}

const thumb = (face) => `/thumb/${encodeURIComponent(face)}`;
const label = (d) => d.name || d.folder || `identity ${d.id}`;

function img(face, title) {
  const i = document.createElement("img");
  i.loading = "lazy";
  i.decoding = "async";
  i.src = thumb(face);
  i.alt = title || "";
  return i;
}

// ------------------------------------------------------------------ overview

function card(d) {
  const c = document.createElement("div");
  c.className = "card" + (view.checked.has(d.id) ? " checked" : "");
  c.dataset.id = d.id;
  const t = document.createElement("div");
  t.className = "title";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.title = "check to merge or hide several";
  box.checked = view.checked.has(d.id);
  box.addEventListener("click", (e) => { e.stopPropagation(); toggleCheck(d.id, box.checked); });
  const b = document.createElement("b");
  b.textContent = d.id === -1 ? "noise" : label(d);
  const size = document.createElement("span");
  size.className = "size";
  size.textContent = `${d.size} face${d.size === 1 ? "" : "s"}`;
  if (d.id !== -1) t.append(box);
  t.append(b);
  if (d.reviewed) { const r = document.createElement("span"); r.className = "badge"; r.textContent = "reviewed"; t.append(r); }
  t.append(size);
  const reps = document.createElement("div");
  reps.className = "reps";
  for (const f of d.reps) reps.append(img(f, label(d)));
  c.append(t, reps);
  c.addEventListener("click", () => openIdentity(d.id));
  return c;
}

function toggleCheck(id, on) {
  on ? view.checked.add(id) : view.checked.delete(id);
  for (const el of document.querySelectorAll(`.card[data-id="${id}"]`)) el.classList.toggle("checked", on);
  updateChecked();
}

function updateChecked() {
  $("#merge-selected").disabled = view.checked.size < 2;
  $("#hide-selected").disabled = view.checked.size < 1;
}

function renderOverview() {
  const s = view.state;
  if (!s) return;
  const q = $("#filter").value.trim().toLowerCase();
  const match = (d) => !q || label(d).toLowerCase().includes(q);
  const visible = s.identities.filter((d) => !d.hidden && match(d));
  const hidden = s.identities.filter((d) => d.hidden && match(d));
  const cards = $("#cards");
  cards.replaceChildren(...visible.slice(0, view.cardLimit).map(card));
  $("#more-cards").hidden = visible.length <= view.cardLimit;
  $("#noise-card").replaceChildren(card(s.noise));
  $("#hidden-cards").replaceChildren(...hidden.map(card));
  $("#hidden-count").textContent = hidden.length;
  const faces = s.identities.reduce((n, d) => n + d.size, 0);
  $("#summary").textContent = `${visible.length} identities, ${faces} faces, ${s.noise.size} in noise`;
  for (const id of [...view.checked]) if (!s.identities.some((d) => d.id === id)) view.checked.delete(id);
  updateChecked();
  const byId = new Map(s.identities.map((d) => [d.id, d]));
  const list = $("#suggestions");
  list.replaceChildren();
  for (const p of s.suggestions.slice(0, 5)) {
    const a = byId.get(p.a), b = byId.get(p.b);
    if (!a || !b || !match(a) && !match(b)) continue;
    const li = document.createElement("li");
    li.className = "sugg";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = `${label(a)} + ${label(b)} (${p.similarity.toFixed(2)})`;
    const merge = document.createElement("button");
    merge.textContent = "Merge";
    merge.className = "merge-suggestion";
    merge.addEventListener("click", () => act({ op: "merge", ids: [p.a, p.b], into: a.size >= b.size ? p.a : p.b }));
    const dismiss = document.createElement("button");
    dismiss.textContent = "Dismiss";
    dismiss.className = "dismiss-suggestion";
    dismiss.addEventListener("click", () => act({ op: "dismiss", a: p.a, b: p.b }));
    li.append(...a.reps.slice(0, 2).map((f) => img(f)), ...b.reps.slice(0, 2).map((f) => img(f)), who, merge, dismiss);
    list.append(li);
  }
  $("#suggestions-box").hidden = !list.children.length;
  $("#undo").disabled = !s.can_undo;
  $("#redo").disabled = !s.can_redo;
}

// ------------------------------------------------------------------ identity view

async function openIdentity(id, keepSelection) {
  view.ident = id;
  if (!keepSelection) { view.selected.clear(); view.anchor = null; }
  location.hash = `#identity/${id}`;
  $("#overview").hidden = true;
  $("#identity").hidden = false;
  await loadMembers(true);
}

async function loadMembers(reset) {
  const offset = reset ? 0 : view.members.length;
  const sort = $("#sort").value;
  let data;
  try {
    data = await api(`/api/identity/${view.ident}?offset=${offset}&limit=${PAGE}&sort=${encodeURIComponent(sort)}`);
  } catch (e) {  // the identity is gone (merged away, or undone): back to the overview
    showOverview();
    return;
  }
  view.members = reset ? data.members : view.members.concat(data.members);
  view.total = data.total;
  const known = new Set(view.members.map((m) => m.face));
  for (const f of [...view.selected]) if (!known.has(f)) view.selected.delete(f);
  renderIdentity(data.identity);
}

function renderIdentity(d) {
  const noise = d.id === -1;
  const nameInput = $("#name-input");
  if (document.activeElement !== nameInput) nameInput.value = noise ? "" : (d.name || "");
  nameInput.placeholder = noise ? "noise" : `${d.folder}: name this person (r)`;
  $("#rename-form").hidden = noise;
  $("#hide-toggle").hidden = noise;
  $("#hide-toggle").textContent = d.hidden ? "Show again" : "Hide";
  $("#merge-into").parentElement.hidden = noise;
  $("#identity-info").textContent = `${noise ? "noise" : label(d)}: ${view.total} face${view.total === 1 ? "" : "s"}` + (d.hidden ? " (hidden)" : "");
  const others = (view.state ? view.state.identities : []).filter((o) => o.id !== d.id);
  const opts = (withNoise) => [
    ...(withNoise && !noise ? [new Option("noise", "-1")] : []),
    ...others.map((o) => new Option(`${label(o)} (${o.size})`, String(o.id))),
  ];
  $("#move-target").replaceChildren(...opts(true));
  $("#merge-target").replaceChildren(...opts(false));
  $("#merge-into").disabled = !others.length;
  const grid = $("#members");
  grid.replaceChildren(...view.members.map(faceTile));
  $("#more-members").hidden = view.members.length >= view.total;
  updateSelection();
  $("#undo").disabled = !view.state.can_undo;
  $("#redo").disabled = !view.state.can_redo;
}

function faceTile(m, index) {
  const t = document.createElement("div");
  t.className = "face" + (view.selected.has(m.face) ? " selected" : "") + (m.confidence < 0.5 ? " doubtful" : "");
  t.dataset.face = m.face;
  t.dataset.index = index;
  t.title = m.rel_path;
  t.append(img(m.face, m.rel_path));
  const c = document.createElement("span");
  c.className = "conf";
  c.textContent = m.confidence.toFixed(2);
  t.append(c);
  t.addEventListener("click", (e) => select(index, e.shiftKey, e.ctrlKey || e.metaKey));
  t.addEventListener("dblclick", () => lightbox(m));
  t.addEventListener("mouseenter", () => preview(m));
  t.addEventListener("mouseleave", () => { $("#preview").hidden = true; });
  return t;
}

function select(index, range, add) {
  const face = view.members[index].face;
  if (range && view.anchor !== null) {
    const [lo, hi] = [Math.min(view.anchor, index), Math.max(view.anchor, index)];
    for (let i = lo; i <= hi; i++) view.selected.add(view.members[i].face);
  } else if (view.selected.has(face) && !add) {
    view.selected.delete(face);
    view.anchor = index;
  } else {
    view.selected.add(face);
    view.anchor = index;
  }
  for (const el of document.querySelectorAll("#members .face")) el.classList.toggle("selected", view.selected.has(el.dataset.face));
  updateSelection();
}

function updateSelection() {
  const n = view.selected.size;
  $("#selection-count").textContent = `${n} selected`;
  const noise = view.ident === -1;
  $("#split").disabled = n < 1;
  $("#move").disabled = n < 1 || !$("#move-target").options.length;
  $("#to-noise").disabled = n < 1 || noise;
  $("#reject").disabled = n < 1 || noise;
}

function preview(m) {
  const p = $("#preview");
  p.querySelector("img").src = `/image/${m.image}`;
  p.querySelector("p").textContent = m.rel_path;
  p.hidden = false;
}

function lightbox(m) {
  const l = $("#lightbox");
  l.querySelector("img").src = `/image/${m.image}`;
  l.querySelector("p").textContent = `${m.rel_path} (confidence ${m.confidence.toFixed(2)}): click to close`;
  l.hidden = false;
}

function showOverview() {
  view.ident = null;
  view.selected.clear();
  location.hash = "";
  $("#identity").hidden = true;
  $("#overview").hidden = false;
  $("#preview").hidden = true;
  renderOverview();
}

async function refresh() {
  view.state = await api("/api/state");
  if (view.ident === null) renderOverview();
  else await loadMembers(true);
}

// ------------------------------------------------------------------ actions

const selectedFaces = () => [...view.selected];
const actions = {
  undo: () => act({ op: "undo" }),
  redo: () => act({ op: "redo" }),
  split: () => view.selected.size && act({ op: "split", faces: selectedFaces() }),
  move: () => view.selected.size && act({ op: "move", faces: selectedFaces(), to: Number($("#move-target").value) }),
  noise: () => view.selected.size && view.ident !== -1 && act({ op: "move", faces: selectedFaces(), to: -1 }),
  reject: () => view.selected.size && view.ident !== -1 && act({ op: "reject", faces: selectedFaces() }),
  rename: () => act({ op: "rename", id: view.ident, name: $("#name-input").value }),
  hide: () => {
    const d = view.state.identities.find((o) => o.id === view.ident);
    return d && act({ op: d.hidden ? "unhide" : "hide", id: d.id });
  },
  mergeInto: () => act({ op: "merge", ids: [view.ident, Number($("#merge-target").value)], into: Number($("#merge-target").value) }),
  mergeChecked: async () => {
    if (view.checked.size < 2) return;
    const ids = [...view.checked];
    const sizes = new Map(view.state.identities.map((d) => [d.id, d.size]));
    ids.sort((a, b) => sizes.get(b) - sizes.get(a));
    view.checked.clear();
    await act({ op: "merge", ids, into: ids[0] });
  },
  hideChecked: async () => {
    const ids = [...view.checked];
    view.checked.clear();
    for (const id of ids) await act({ op: "hide", id });
  },
  selectAll: () => { for (const m of view.members) view.selected.add(m.face); renderIdentity(currentIdentity()); },
  selectNone: () => { view.selected.clear(); renderIdentity(currentIdentity()); },
};

function currentIdentity() {
  return view.state.identities.find((o) => o.id === view.ident) || { id: -1, name: "noise", size: view.total };
}

$("#undo").addEventListener("click", actions.undo);
$("#redo").addEventListener("click", actions.redo);
$("#split").addEventListener("click", actions.split);
$("#move").addEventListener("click", actions.move);
$("#to-noise").addEventListener("click", actions.noise);
$("#reject").addEventListener("click", actions.reject);
$("#hide-toggle").addEventListener("click", actions.hide);
$("#merge-into").addEventListener("click", actions.mergeInto);
$("#merge-selected").addEventListener("click", actions.mergeChecked);
$("#hide-selected").addEventListener("click", actions.hideChecked);
$("#select-all").addEventListener("click", actions.selectAll);
$("#select-none").addEventListener("click", actions.selectNone);
$("#rename-form").addEventListener("submit", (e) => { e.preventDefault(); actions.rename(); $("#name-input").blur(); });
$("#back").addEventListener("click", showOverview);
$("#home").addEventListener("click", (e) => { e.preventDefault(); showOverview(); });
$("#sort").addEventListener("change", () => loadMembers(true));
$("#more-members").addEventListener("click", () => loadMembers(false));
$("#more-cards").addEventListener("click", () => { view.cardLimit += CARD_PAGE; renderOverview(); });
$("#filter").addEventListener("input", () => { view.cardLimit = CARD_PAGE; if (view.ident !== null) showOverview(); else renderOverview(); });
$("#help-button").addEventListener("click", () => $("#help").showModal());
$("#lightbox").addEventListener("click", () => { $("#lightbox").hidden = true; });
// Next page when the "Load more" button scrolls into view.
new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting) && view.ident !== null) loadMembers(false); })
  .observe($("#more-members"));

document.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (e.key === "Escape") {
    if (!$("#lightbox").hidden) { $("#lightbox").hidden = true; return; }
    if (typing) { document.activeElement.blur(); return; }
    if (view.ident !== null && view.selected.size) return actions.selectNone();
    if (view.ident !== null) return showOverview();
    view.checked.clear();
    return renderOverview();
  }
  if (typing || $("#help").open) return;
  const k = e.key;
  if ((e.ctrlKey || e.metaKey) && k.toLowerCase() === "z") { e.preventDefault(); return e.shiftKey ? actions.redo() : actions.undo(); }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const inIdentity = view.ident !== null;
  const map = {
    "?": () => $("#help").showModal(),
    "/": () => $("#filter").focus(),
    z: actions.undo, y: actions.redo, Z: actions.redo,
    m: () => !inIdentity && actions.mergeChecked(),
    h: () => (inIdentity ? view.ident !== -1 && actions.hide() : actions.hideChecked()),
    a: () => inIdentity && actions.selectAll(),
    s: () => inIdentity && actions.split(),
    v: () => inIdentity && actions.move(),
    x: () => inIdentity && actions.noise(),
    Delete: () => inIdentity && actions.noise(),
    n: () => inIdentity && actions.reject(),
    r: () => inIdentity && view.ident !== -1 && $("#name-input").focus(),
  };
  if (map[k]) { e.preventDefault(); map[k](); }
});

(async function start() {
  await refresh();
  const m = location.hash.match(/^#identity\/(-?\d+)$/);
  if (m) await openIdentity(Number(m[1]));
  status("ready");
})().catch((e) => status("error: " + e.message, true));
