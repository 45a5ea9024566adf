// idcluster review: plain JS, no build step. Talks to the JSON API of idcluster/review/server.py.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const $ = (sel) => document.querySelector(sel);
const PAGE = 200;      // members per page (lazy paging keeps 10k-image folders fast)
const CARD_PAGE = 120; // identity cards rendered per step
const SHOWN_SUGGESTIONS = 5;

const view = { state: null, ident: null, members: [], total: 0, selected: new Set(), anchor: null,
               checked: new Set(), cardLimit: CARD_PAGE, suggestions: [], threshold: null,
               order: new Map(),       // identity id -> its place on the overview: cards never jump
               memberOrder: null,      // face -> place in the identity view: kept across actions
               placeAfter: null };     // where the next new identity's card goes (the one it was split from)

async function api(path) {
  const r = await fetch(path, { headers: { "X-Review-Token": TOKEN } });
  if (!r.ok) throw new Error((await r.text()) || r.statusText);
  return r.json();
}

// POST an action; returns {ok, status, out}. The page refreshes what changed and says what happened.
async function post(body) {
  status("working…");
  const r = await fetch("/api/action", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Review-Token": TOKEN },
    body: JSON.stringify(body),
  });
  const out = await r.json().catch(() => ({ error: r.statusText }));
  return { ok: r.ok, status: r.status, out };
}

async function act(body) {
  const { ok, status: code, out } = await post(body);
  if (code === 409 && out.conflict) return nameConflict(out.conflict, body);
  if (!ok) { status("error: " + out.error, true); return null; }
  await refresh();
  const link = out.to !== null && out.to !== undefined && out.to !== -1 && out.to !== view.ident
    && view.state.identities.some((d) => d.id === out.to) ? out.to : null;
  status(`done: ${out.message}` + (out.entry ? ` (#${out.entry.seq})` : ""), false, link);
  loadSuggestions();
  return out;
}

function status(text, bad, linkTo) {
  const s = $("#status");
  s.replaceChildren(text);
  s.classList.toggle("bad", !!bad);
  if (linkTo !== null && linkTo !== undefined) {
    const a = document.createElement("a");
    a.href = `#identity/${linkTo}`;
    a.id = "status-link";
    const d = view.state.identities.find((o) => o.id === linkTo);
    a.textContent = `open ${d ? label(d) : "identity " + linkTo}`;
    a.addEventListener("click", (e) => { e.preventDefault(); openIdentity(linkTo); });
    s.append(" ", a);
  }
}

const thumb = (face) => `/thumb/${encodeURIComponent(face)}`;
const label = (d) => d.name || d.folder || `identity ${d.id}`;
const times = (x) => `${x.toFixed(2)}×`;

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
  box.title = "check to merge or hide several (then m or h)";
  box.checked = view.checked.has(d.id);
  box.addEventListener("click", (e) => { e.stopPropagation(); toggleCheck(d.id, box.checked); box.blur(); });
  const b = document.createElement("b");
  b.className = "name";
  b.textContent = d.id === -1 ? "noise" : label(d);
  if (d.name && d.folder) b.title = d.folder;
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

// Identities in the order the page first showed them (the server's: largest first); a new one goes
// right after the identity it came from, else at the end.
function ordered(identities) {
  const order = view.order;
  const fresh = identities.filter((d) => !order.has(d.id));
  if (fresh.length) {
    let at = view.placeAfter !== null && order.has(view.placeAfter) ? order.get(view.placeAfter) : null;
    for (const d of fresh) {
      if (at === null) { order.set(d.id, order.size ? Math.max(...order.values()) + 1 : 0); continue; }
      at += 1e-3;  // between the source and the card after it
      order.set(d.id, at);
    }
    view.placeAfter = null;
  }
  return [...identities].sort((a, b) => order.get(a.id) - order.get(b.id));
}

function renderOverview() {
  const s = view.state;
  if (!s) return;
  const q = $("#filter").value.trim().toLowerCase();
  const match = (d) => !q || label(d).toLowerCase().includes(q);
  const all = ordered(s.identities);
  const visible = all.filter((d) => !d.hidden && match(d));
  const hidden = all.filter((d) => d.hidden && match(d));
  $("#cards").replaceChildren(...visible.slice(0, view.cardLimit).map(card));
  $("#more-cards").hidden = visible.length <= view.cardLimit;
  $("#noise-card").replaceChildren(card(s.noise));
  $("#hidden-cards").replaceChildren(...hidden.map(card));
  $("#hidden-count").textContent = hidden.length;
  const faces = s.identities.reduce((n, d) => n + d.size, 0);
  $("#summary").textContent = `${visible.length} identities, ${faces} faces, ${s.noise.size} in noise`;
  for (const id of [...view.checked]) if (!s.identities.some((d) => d.id === id)) view.checked.delete(id);
  updateChecked();
  renderSuggestions();
  $("#undo").disabled = !s.can_undo;
  $("#redo").disabled = !s.can_redo;
}

// ------------------------------------------------------------------ merge suggestions

async function loadSuggestions() {
  try {
    const data = await api("/api/suggestions");
    view.suggestions = data.suggestions;
    view.threshold = data.threshold;
  } catch (e) {
    view.suggestions = [];
  }
  document.body.dataset.suggestions = "loaded";
  if (view.ident === null) renderSuggestions();
}

function evidence(p, a, b) {
  const matched = (share, d) => `${Math.round(share * d.size)}/${d.size}`;
  return `faces ${times(p.distance)} the threshold apart on average; ${Math.round(p.pairs_within * 100)}% of face pairs `
    + `within it; ${matched(p.a_matched, a)} and ${matched(p.b_matched, b)} faces have a match in the other`;
}

function renderSuggestions() {
  const s = view.state;
  const list = $("#suggestions");
  list.replaceChildren();
  if (!s) return;
  const q = $("#filter").value.trim().toLowerCase();
  const match = (d) => !q || label(d).toLowerCase().includes(q);
  const byId = new Map(s.identities.map((d) => [d.id, d]));
  const shown = view.suggestions.filter((p) => byId.has(p.a) && byId.has(p.b) && (match(byId.get(p.a)) || match(byId.get(p.b))));
  for (const p of shown.slice(0, SHOWN_SUGGESTIONS)) {
    const a = byId.get(p.a), b = byId.get(p.b);
    const li = document.createElement("li");
    li.className = "sugg";
    const who = document.createElement("div");
    who.className = "who";
    const names = document.createElement("b");
    names.textContent = `${label(a)} + ${label(b)}`;
    const why = document.createElement("small");
    why.className = "evidence";
    why.textContent = evidence(p, a, b);
    who.append(names, why);
    const merge = document.createElement("button");
    merge.textContent = "Merge…";
    merge.className = "merge-suggestion";
    merge.title = "Merge these two identities (asks once more)";
    merge.addEventListener("click", () => {
      if (merge.dataset.armed) return act({ op: "merge", ids: [p.a, p.b], into: a.size >= b.size ? p.a : p.b });
      merge.dataset.armed = "1";  // a second click merges: one stray click never does
      merge.textContent = "Confirm merge";
      merge.classList.add("armed");
      setTimeout(() => { delete merge.dataset.armed; merge.textContent = "Merge…"; merge.classList.remove("armed"); }, 4000);
    });
    const dismiss = document.createElement("button");
    dismiss.textContent = "Not the same";
    dismiss.className = "dismiss-suggestion";
    dismiss.addEventListener("click", () => act({ op: "dismiss", a: p.a, b: p.b }));
    const faces = document.createElement("span");
    faces.className = "sugg-faces";
    faces.append(...a.reps.slice(0, 2).map((f) => img(f)), ...b.reps.slice(0, 2).map((f) => img(f)));
    li.append(faces, who, merge, dismiss);
    list.append(li);
  }
  $("#suggestions-more").textContent = shown.length > SHOWN_SUGGESTIONS ? `(${shown.length - SHOWN_SUGGESTIONS} more after these)` : "";
  $("#suggestions-box").hidden = !list.children.length;
}

// ------------------------------------------------------------------ identity view

async function openIdentity(id, keepSelection) {
  view.ident = id;
  view.memberOrder = null;
  if (!keepSelection) { view.selected.clear(); view.anchor = null; }
  if (location.hash !== `#identity/${id}`) history.pushState(null, "", `#identity/${id}`);
  $("#overview").hidden = true;
  $("#identity").hidden = false;
  window.scrollTo(0, 0);
  await loadMembers(true);
}

async function loadMembers(reset, keepOrder) {
  const offset = reset ? 0 : view.members.length;
  const limit = reset && keepOrder ? Math.max(PAGE, view.members.length) : PAGE;
  const sort = $("#sort").value;
  let data;
  try {
    data = await api(`/api/identity/${view.ident}?offset=${offset}&limit=${limit}&sort=${encodeURIComponent(sort)}`);
  } catch (e) {  // the identity is gone (merged away, or undone): back to the overview
    showOverview();
    return;
  }
  let members = reset ? data.members : view.members.concat(data.members);
  if (keepOrder && view.memberOrder) {  // after an action: faces that stay keep their places
    const at = view.memberOrder;
    const known = members.filter((m) => at.has(m.face)).sort((x, y) => at.get(x.face) - at.get(y.face));
    members = known.concat(members.filter((m) => !at.has(m.face)));
  }
  view.members = members;
  view.memberOrder = new Map(members.map((m, i) => [m.face, i]));
  view.total = data.total;
  view.threshold = data.threshold;
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
  $("#identity-name").textContent = noise ? "noise" : label(d);
  const doubtful = view.members.filter((m) => m.doubtful).length;
  $("#identity-info").textContent = `${view.total} face${view.total === 1 ? "" : "s"}` + (d.hidden ? " (hidden)" : "")
    + (doubtful ? `, ${doubtful} doubtful` : "");
  $("#distance-legend").hidden = noise || view.threshold === null;
  const others = (view.state ? view.state.identities : []).filter((o) => o.id !== d.id);
  const opts = (withNoise) => [
    ...(withNoise && !noise ? [new Option("noise", "-1")] : []),
    ...others.map((o) => new Option(`${label(o)} (${o.size})`, String(o.id))),
  ];
  const keep = (sel, options) => { const v = sel.value; sel.replaceChildren(...options); if ([...sel.options].some((o) => o.value === v)) sel.value = v; };
  keep($("#move-target"), opts(true));
  keep($("#merge-target"), opts(false));
  $("#merge-into").disabled = !others.length;
  $("#members").replaceChildren(...view.members.map(faceTile));
  $("#more-members").hidden = view.members.length >= view.total;
  updateSelection();
  $("#undo").disabled = !view.state.can_undo;
  $("#redo").disabled = !view.state.can_redo;
}

function faceTile(m, index) {
  const t = document.createElement("div");
  t.className = "face" + (view.selected.has(m.face) ? " selected" : "") + (m.doubtful ? " doubtful" : "");
  t.dataset.face = m.face;
  t.dataset.index = index;
  t.title = m.rel_path + (m.distance === null ? "" : `\n${times(m.distance)} the clusterer's threshold from this identity's core`
    + (m.doubtful ? " (farther than the clusterer joins: doubtful)" : ""));
  t.append(img(m.face, m.rel_path));
  if (m.distance !== null) {
    const c = document.createElement("span");
    c.className = "dist";
    c.textContent = m.distance.toFixed(2);
    t.append(c);
  }
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

// The whole image at a useful size (small photos scaled up to fill the screen), its face boxed.
function lightbox(m) {
  const l = $("#lightbox");
  const im = l.querySelector("img");
  const box = l.querySelector(".face-box");
  box.hidden = true;
  im.onload = () => {
    const w = im.naturalWidth, h = im.naturalHeight;
    const scale = Math.min(window.innerWidth * 0.92 / w, window.innerHeight * 0.82 / h);
    im.style.width = `${Math.round(w * scale)}px`;
    im.style.height = `${Math.round(h * scale)}px`;
    if (m.box) {
      const [x1, y1, x2, y2] = m.box;
      Object.assign(box.style, { left: `${100 * x1 / w}%`, top: `${100 * y1 / h}%`,
                                 width: `${100 * (x2 - x1) / w}%`, height: `${100 * (y2 - y1) / h}%` });
      box.hidden = false;
    }
  };
  im.src = `/image/${m.image}`;
  l.querySelector("p").textContent = m.rel_path + (m.distance === null ? "" : ` (${times(m.distance)} the threshold from this identity's core)`)
    + ": click or Esc to close";
  l.hidden = false;
}

function showOverview() {
  view.ident = null;
  view.selected.clear();
  if (location.hash) history.pushState(null, "", location.pathname + location.search);
  $("#identity").hidden = true;
  $("#overview").hidden = false;
  $("#preview").hidden = true;
  renderOverview();
}

async function refresh() {
  view.state = await api("/api/state");
  if (view.ident === null) renderOverview();
  else await loadMembers(true, true);
}

// ------------------------------------------------------------------ actions

const selectedFaces = () => [...view.selected];

async function rename() {
  const name = $("#name-input").value;
  $("#name-input").blur();
  await act({ op: "rename", id: view.ident, name });
}

// A rename to a name another identity has: ask whether they are one person (then merge), never
// leave it to a later run to decide by name.
function nameConflict(c, body) {
  const other = view.state.identities.find((o) => o.id === c.other);
  const mine = view.state.identities.find((o) => o.id === c.id);
  const dlg = $("#name-conflict");
  $("#conflict-text").textContent = `“${c.name}” is already the name of ${other ? `${label(other)} (${other.folder}, ${other.size} faces)` : "identity " + c.other}. `
    + `Are ${mine ? mine.folder : "these"} and it the same person?`;
  const reps = $("#conflict-faces");
  reps.replaceChildren(...(mine ? mine.reps.slice(0, 3) : []).map((f) => img(f)), ...(other ? other.reps.slice(0, 3) : []).map((f) => img(f)));
  status(`“${c.name}” is taken: merge or choose another name`, true);
  dlg.returnValue = "";
  dlg.onclose = async () => {
    if (dlg.returnValue === "merge") await act({ op: "merge", ids: [c.other, c.id], into: c.other });
    else { $("#name-input").value = (mine && mine.name) || ""; $("#name-input").focus(); }
  };
  dlg.showModal();
  return null;
}

const actions = {
  undo: () => act({ op: "undo" }),
  redo: () => act({ op: "redo" }),
  split: () => { if (!view.selected.size) return; view.placeAfter = view.ident; return act({ op: "split", faces: selectedFaces() }); },
  move: () => view.selected.size && act({ op: "move", faces: selectedFaces(), to: Number($("#move-target").value) }),
  noise: () => view.selected.size && view.ident !== -1 && act({ op: "move", faces: selectedFaces(), to: -1 }),
  reject: () => view.selected.size && view.ident !== -1 && act({ op: "reject", faces: selectedFaces() }),
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
$("#rename-form").addEventListener("submit", (e) => { e.preventDefault(); rename(); });
$("#back").addEventListener("click", showOverview);
$("#home").addEventListener("click", (e) => { e.preventDefault(); showOverview(); });
$("#sort").addEventListener("change", () => { view.memberOrder = null; loadMembers(true); });
$("#more-members").addEventListener("click", () => loadMembers(false));
$("#more-cards").addEventListener("click", () => { view.cardLimit += CARD_PAGE; renderOverview(); });
$("#filter").addEventListener("input", () => { view.cardLimit = CARD_PAGE; if (view.ident !== null) showOverview(); else renderOverview(); });
$("#help-button").addEventListener("click", () => $("#help").showModal());
$("#lightbox").addEventListener("click", () => { $("#lightbox").hidden = true; });
// A choice made with the mouse leaves focus in the control: give the keys back to the page.
for (const sel of document.querySelectorAll("select")) sel.addEventListener("change", () => sel.blur());
// Next page when the "Load more" button scrolls into view.
new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting) && view.ident !== null) loadMembers(false); })
  .observe($("#more-members"));
window.addEventListener("popstate", () => {
  const m = location.hash.match(/^#identity\/(-?\d+)$/);
  if (m) openIdentity(Number(m[1])); else if (view.ident !== null) showOverview();
});

// Keys go to the page unless the user is typing text: a checkbox or button that a mouse click
// left focused does not swallow them.
const TEXT_INPUTS = new Set(["text", "search", "email", "number", "password", "tel", "url"]);
function typingIn(el) {
  if (!el) return false;
  return el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT"
    || (el.tagName === "INPUT" && TEXT_INPUTS.has(el.type));
}

document.addEventListener("keydown", (e) => {
  const typing = typingIn(document.activeElement);
  if (e.key === "Escape") {
    if (!$("#lightbox").hidden) { $("#lightbox").hidden = true; return; }
    if (typing) { document.activeElement.blur(); return; }
    if (view.ident !== null && view.selected.size) return actions.selectNone();
    if (view.ident !== null) return showOverview();
    view.checked.clear();
    return renderOverview();
  }
  if (typing || $("#help").open || $("#name-conflict").open) return;
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
  if (map[k]) { e.preventDefault(); if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur(); map[k](); }
});

(async function start() {
  view.state = await api("/api/state");  // the first view: identities and their faces
  const m = location.hash.match(/^#identity\/(-?\d+)$/);
  if (m) await openIdentity(Number(m[1]));
  else renderOverview();
  status("ready");
  loadSuggestions();                       // then the suggestions, which the first view does not wait for
})().catch((e) => status("error: " + e.message, true));
