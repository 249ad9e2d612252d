// Agent Ledger incident console. Plain JavaScript, no build step: search,
// trace waterfall, detail pane, follow mode and exports, every event shown
// checked in this browser (verify.js) against a checkpoint signed by the
// verifier key the responder pinned. Server data only ever reaches the page
// as text nodes.
"use strict";

(() => {
  const V = LedgerVerify;
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "agent-ledger.api-key"; // sessionStorage
  const VKEY_STORE = "agent-ledger.verifier-key"; // localStorage
  const SEEN_PREFIX = "agent-ledger.seen."; // localStorage, per verifier key

  const state = {
    apiKey: sessionStorage.getItem(KEY_STORE),
    vkey: null, // parsed, pinned verifier key
    vkeySource: "",
    session: null,
    cp: null, // the checkpoint the view is verified against (opened)
    cpJson: null,
    items: [], // the events of the view: { rec, check, ev, t }
    follow: null, // AbortController of the live tail
    selected: null,
    route: null,
  };

  // --- DOM helpers -------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else if (k === "style") e.style.cssText = v; // CSSOM: allowed by the CSP, unlike style attributes
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function show(view) {
    for (const id of ["signin-view", "search-view", "trace-view"]) $(id).hidden = id !== view;
  }

  function banner(text, kind) {
    const b = $("banner");
    b.textContent = text || "";
    b.hidden = !text;
    b.className = kind || "";
  }

  function badge(check) {
    if (!check) return el("span", { class: "badge pending", text: "checking" });
    return check.ok
      ? el("span", { class: "badge verified", text: "✓ verified", title: "Included in the signed checkpoint" })
      : el("span", { class: "badge failed", text: "✗ FAILED", title: check.problems.join("; ") });
  }

  function download(name, blob) {
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // --- API ---------------------------------------------------------------------

  function headers() {
    return state.apiKey ? { authorization: "Bearer " + state.apiKey } : {};
  }

  async function api(path, params, opts) {
    const qs = params ? "?" + new URLSearchParams(params).toString() : "";
    const r = await fetch("api/v1/" + path + qs, { headers: headers(), ...(opts || {}) });
    if (!r.ok) {
      let body = null;
      try {
        body = await r.json();
      } catch (e) {
        body = null;
      }
      const err = new Error((body && body.error && body.error.message) || r.status + " " + r.statusText);
      err.status = r.status;
      err.code = body && body.error && body.error.code;
      throw err;
    }
    return opts && opts.raw ? r : r.json();
  }

  // --- verification --------------------------------------------------------------

  // Opens a checkpoint with the pinned key, and checks it against the
  // largest one this browser verified for the key before (a rolled-back or
  // forked log fails here).
  async function openCheckpoint(cpJson) {
    const cp = await V.openCheckpoint(cpJson.note, state.vkey);
    const key = SEEN_PREFIX + state.vkey.text;
    let seen = null;
    try {
      seen = JSON.parse(localStorage.getItem(key) || "null");
    } catch (e) {
      seen = null;
    }
    if (seen && seen.size === cp.size && seen.root !== V.b64encode(cp.root)) {
      throw new Error("FORK: this checkpoint of " + cp.size + " entries has another root than the one this browser verified before");
    }
    if (seen && seen.size !== cp.size && seen.size > 0 && cp.size > 0) {
      const [a, b] = seen.size < cp.size ? [seen.size, cp.size] : [cp.size, seen.size];
      const rootA = seen.size === a ? V.b64decode(seen.root) : cp.root;
      const rootB = seen.size === b ? V.b64decode(seen.root) : cp.root;
      const proof = await api("consistency", { old_size: a, new_size: b });
      const ok = await V.verifyConsistency(a, b, rootA, rootB, proof.hashes.map(V.b64decode));
      if (!ok) {
        throw new Error("ROLLBACK OR FORK: the log of " + cp.size + " entries is not consistent with the one of " + seen.size + " this browser verified before");
      }
    }
    if (!seen || cp.size > seen.size) remember(cp);
    return cp;
  }

  // The largest checkpoint verified with the pinned key, for later visits.
  function remember(cp) {
    localStorage.setItem(SEEN_PREFIX + state.vkey.text, JSON.stringify({ size: cp.size, root: V.b64encode(cp.root) }));
  }

  function setCheckpointStatus(cp, error) {
    const s = $("checkpoint-status");
    if (error) {
      s.className = "pill bad";
      s.textContent = "✗ checkpoint FAILED";
      s.title = error;
    } else if (cp) {
      s.className = "pill ok";
      s.textContent = "✓ checkpoint " + cp.size + " verified";
      s.title = "Signed by " + state.vkey.text;
    } else {
      s.className = "pill";
      s.textContent = "log empty";
    }
  }

  // Checks a record against the view's checkpoint; a failed checkpoint
  // fails every event.
  async function check(rec, cp) {
    if (!cp) return { ok: false, problems: ["no verified checkpoint"], entry: null, payload: null };
    let c;
    try {
      c = await V.verifyRecord(rec, cp);
    } catch (e) {
      c = { ok: false, problems: ["cannot check: " + e.message], entry: null, payload: null };
    }
    if (rec.redacted_by) {
      const r = await V.verifyRecord(rec.redacted_by, cp).catch((e) => ({ ok: false, problems: [e.message] }));
      const e = r.entry && r.entry.redaction;
      c.redaction = {
        index: rec.redacted_by.index,
        ok: r.ok && !!e && e.target_index === rec.index,
        covered: !!rec.redacted_by.inclusion,
        writer: r.entry ? r.entry.writer : "",
        at: r.entry && r.entry.integrated_at ? V.rfc3339(r.entry.integrated_at) : "",
        reason: e ? e.reason : "",
      };
    }
    return c;
  }

  function item(rec, c) {
    const ev = c.entry && c.entry.event ? V.eventJson(c.entry.event) : null;
    const ts = c.entry && c.entry.event && c.entry.event.occurred_at;
    return { rec, check: c, ev, t: ts ? ts.seconds * 1000 + ts.nanos / 1e6 : 0 };
  }

  async function verifyView(answer) {
    state.cpJson = answer.checkpoint;
    let cp = null;
    let cpError = null;
    if (answer.checkpoint && answer.checkpoint.note) {
      try {
        cp = await openCheckpoint(answer.checkpoint);
      } catch (e) {
        cpError = e.message;
      }
    } else if (answer.entries.length > 0) {
      cpError = "the server sent events without a checkpoint";
    }
    state.cp = cp;
    setCheckpointStatus(cp, cpError);
    const checks = await Promise.all(answer.entries.map((r) => check(r, cp)));
    return { items: answer.entries.map((r, i) => item(r, checks[i])), cpError };
  }

  function report(cpError) {
    const failed = state.items.filter((i) => !i.check.ok).length;
    if (cpError) {
      banner("✗ VERIFICATION FAILED: the checkpoint does not verify against the pinned key (" + cpError + "). Nothing on this page is proven.");
    } else if (failed > 0) {
      banner("✗ " + failed + " of " + state.items.length + " events FAILED verification: what the server shows is not what the log signed. Failed events are marked in red.");
    } else {
      banner("");
    }
  }

  // --- routing -----------------------------------------------------------------

  function parseRoute() {
    const h = location.hash.replace(/^#/, "") || "/search";
    const [path, query] = h.split("?");
    const params = new URLSearchParams(query || "");
    if (path.startsWith("/trace/")) return { view: "trace", id: decodeURIComponent(path.slice(7)), params };
    return { view: "search", params };
  }

  async function route() {
    stopFollow();
    const r = parseRoute();
    state.route = r;
    if (r.params.get("vkey")) await pinFromUrl(r.params.get("vkey").replace(/ /g, "+"));
    if (!state.session) {
      show("signin-view");
      return;
    }
    if (r.view === "trace") await openTrace(r.id);
    else await openSearch(r.params);
  }

  async function pinFromUrl(text) {
    try {
      state.vkey = await V.parseVerifierKey(text);
      state.vkeySource = "link";
      $("signin-vkey").value = text;
    } catch (e) {
      banner("The verifier key in the link is not valid: " + e.message);
    }
  }

  // --- sign-in -------------------------------------------------------------------

  async function signIn(apiKey, vkeyText) {
    if (!V.available()) throw new Error("this browser offers no Web Crypto here: open the console over HTTPS (or on localhost)");
    const vkey = await V.parseVerifierKey(vkeyText);
    const prev = state.apiKey;
    state.apiKey = apiKey || null;
    try {
      state.session = await api("session");
    } catch (e) {
      state.apiKey = prev;
      throw e;
    }
    const origin = state.session.log.origin;
    if (origin !== vkey.name) {
      state.session = null;
      throw new Error("this server's log is " + origin + ", the pinned verifier key is for " + vkey.name);
    }
    state.vkey = vkey;
    // "" marks an anonymous session (a server without authentication).
    sessionStorage.setItem(KEY_STORE, apiKey || "");
    if (state.vkeySource !== "link") localStorage.setItem(VKEY_STORE, vkey.text);
    $("log-origin").textContent = state.session.log.origin;
    $("caller").textContent = state.session.caller.name + " (" + state.session.caller.role + ")";
    $("sign-out").hidden = false;
  }

  async function trySavedSession() {
    const r = parseRoute();
    // A "+" of the key arrives as a space when the link did not escape it.
    const vtext = (r.params.get("vkey") || "").replace(/ /g, "+") || localStorage.getItem(VKEY_STORE);
    if (r.params.get("vkey")) state.vkeySource = "link";
    if (vtext) $("signin-vkey").value = vtext;
    if (state.apiKey === null || !vtext) return;
    try {
      await signIn(state.apiKey, vtext);
    } catch (e) {
      state.session = null;
      $("signin-error").textContent = e.message;
    }
  }

  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("signin-error").textContent = "";
    try {
      await signIn($("signin-key").value.trim(), $("signin-vkey").value.trim());
      $("signin-key").value = "";
      if (!location.hash || location.hash === "#") location.hash = "#/search";
      else await route();
    } catch (e) {
      $("signin-error").textContent = "Sign-in failed: " + e.message;
    }
  });

  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    state.apiKey = null;
    state.session = null;
    $("sign-out").hidden = true;
    $("caller").textContent = "";
    show("signin-view");
  });

  // --- search ------------------------------------------------------------------

  const FILTERS = ["correlation_id", "agent_id", "principal", "tool_name", "kinds", "risk_tiers", "outcomes", "occurred_from", "occurred_to"];

  function fillSelect(select, values) {
    if (select.options.length) return;
    for (const v of values.slice(1)) select.append(el("option", { value: v, text: v.replace(/_/g, " ") }));
  }

  function formParams() {
    const f = $("search-form");
    const p = new URLSearchParams();
    for (const name of FILTERS) {
      const input = f.elements[name];
      if (input.multiple) {
        const vals = Array.from(input.selectedOptions, (o) => o.value);
        if (vals.length) p.set(name, vals.join(","));
      } else if (input.value.trim()) {
        p.set(name, input.value.trim());
      }
    }
    if (f.elements.descending.checked) p.set("descending", "true");
    return p;
  }

  function fillForm(params) {
    const f = $("search-form");
    for (const name of FILTERS) {
      const input = f.elements[name];
      const v = params.get(name) || "";
      if (input.multiple) {
        const set = new Set(v.split(",").filter(Boolean));
        for (const o of input.options) o.selected = set.has(o.value);
      } else {
        input.value = v;
      }
    }
    f.elements.descending.checked = params.get("descending") === "true";
  }

  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = "#/search?" + formParams().toString();
  });
  $("search-clear").addEventListener("click", () => {
    location.hash = "#/search";
  });

  function resultRow(it, fresh) {
    const ev = it.ev || {};
    const red = it.check.entry && it.check.entry.redaction;
    const what = red ? "redaction of #" + red.target_index : [ev.tool_name, ev.action].filter(Boolean).join(" · ");
    return el(
      "tr",
      { "data-index": it.rec.index, "data-status": it.check.ok ? "verified" : "failed", class: (it.check.ok ? "" : "failed") + (fresh ? " new" : "") },
      el("td", {}, badge(it.check)),
      el("td", { class: "mono", text: it.rec.index }),
      el("td", { class: "mono", text: ev.occurred_at || "" }),
      el("td", {}, el("span", { class: "kind-chip k-" + (ev.kind || "custom"), text: red ? "redaction" : (ev.kind || "").replace(/_/g, " ") })),
      el("td", { text: ev.agent_id || "" }),
      el("td", { text: what }),
      el("td", { text: ev.principal || "" }),
      el("td", { text: ev.risk_tier && ev.risk_tier !== "unspecified" ? ev.risk_tier : "" }),
      el("td", { text: ev.outcome && ev.outcome !== "unspecified" ? ev.outcome : "" }),
      el("td", {}, ev.correlation_id ? el("a", { href: "#/trace/" + ev.correlation_id, class: "mono", text: ev.correlation_id.slice(0, 12) + "…" }) : ""),
    );
  }

  async function openSearch(params) {
    show("search-view");
    fillSelect($("search-form").elements.kinds, V.KINDS);
    fillSelect($("search-form").elements.risk_tiers, V.RISKS);
    fillSelect($("search-form").elements.outcomes, V.OUTCOMES);
    fillForm(params);
    const q = new URLSearchParams();
    for (const name of FILTERS) if (params.get(name)) q.set(name, params.get(name));
    if (params.get("descending")) q.set("descending", params.get("descending"));
    const filters = new URLSearchParams(q);
    if (params.get("page_token")) q.set("page_token", params.get("page_token"));
    q.set("page_size", params.get("page_size") || "100");
    q.set("with_proofs", "true");
    const body = $("results").tBodies[0];
    body.replaceChildren();
    $("search-summary").textContent = "Searching…";
    let answer;
    try {
      answer = await api("events", q);
    } catch (e) {
      $("search-summary").textContent = "";
      banner("Search failed: " + e.message, "warn");
      return;
    }
    const { items, cpError } = await verifyView(answer);
    state.items = items;
    for (const it of items) body.append(resultRow(it));
    report(cpError);
    const ok = items.filter((i) => i.check.ok).length;
    $("search-summary").textContent = items.length
      ? items.length + " events on this page; " + ok + " verified against checkpoint " + (state.cp ? state.cp.size : "?")
      : "No events match.";
    const next = answer.next_page_token;
    const nextLink = new URLSearchParams(filters);
    nextLink.set("page_token", next);
    $("page-next").hidden = !next;
    $("page-next").href = "#/search?" + nextLink.toString();
    $("page-first").hidden = !params.get("page_token");
    $("page-first").href = "#/search?" + filters.toString();
    $("search-follow").onclick = () => toggleFollow($("search-follow"), filters, (it) => {
      state.items.push(it);
      const row = resultRow(it, true);
      if (params.get("descending") === "true") body.prepend(row);
      else body.append(row);
    });
    document.body.dataset.ready = "search";
  }

  // --- trace -------------------------------------------------------------------

  // The span tree, from the verified entries (not from the server's word):
  // rows in depth-first order, children by their first event's time, the
  // events of a span by time then log index.
  function traceRows(items) {
    const spans = new Map();
    const node = (id) => {
      if (!spans.has(id)) spans.set(id, { id, parent: "", items: [], children: [] });
      return spans.get(id);
    };
    for (const it of items) {
      const id = it.ev && it.ev.span_id ? it.ev.span_id : "#" + it.rec.index;
      const n = node(id);
      n.items.push(it);
      if (it.ev && it.ev.parent_span_id && !n.parent) n.parent = it.ev.parent_span_id;
    }
    const byTime = (a, b) => a.t - b.t || a.rec.index - b.rec.index;
    const first = (n) => n.items[0];
    const roots = [];
    for (const n of spans.values()) {
      n.items.sort(byTime);
      if (n.parent && spans.has(n.parent) && n.parent !== n.id) spans.get(n.parent).children.push(n);
      else roots.push(n);
    }
    const rows = [];
    const seen = new Set();
    const walk = (n, depth) => {
      if (seen.has(n.id)) return;
      seen.add(n.id);
      n.items.forEach((it, i) => rows.push({ it, depth, end: i + 1 < n.items.length ? n.items[i + 1].t : it.t }));
      n.children.sort((a, b) => byTime(first(a), first(b))).forEach((c) => walk(c, depth + 1));
    };
    roots.sort((a, b) => byTime(first(a), first(b))).forEach((r) => walk(r, 0));
    return rows;
  }

  const MARKS = { approval_granted: "✔", approval_denied: "✖", policy_violation: "⚠", kill_switch: "■" };

  function duration(ms) {
    if (ms < 1) return (ms * 1000).toFixed(0) + " µs";
    if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + " ms";
    if (ms < 120000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    return (ms / 60000).toFixed(1) + " min";
  }

  function renderWaterfall() {
    const rows = traceRows(state.items);
    const times = state.items.map((i) => i.t);
    const t0 = Math.min(...times);
    const range = Math.max(Math.max(...times) - t0, 1);
    const pct = (t) => ((t - t0) / range) * 100;
    const ticks = el("div", { class: "ticks" });
    for (let i = 0; i <= 4; i++) {
      ticks.append(el("span", { style: "left:" + Math.min(Math.max(i * 25, 3), 96) + "%", text: "+" + duration((range * i) / 4) }));
    }
    const wf = $("waterfall");
    wf.replaceChildren(el("div", { class: "wf-axis" }, el("div", { style: "padding:4px 6px", text: "Event" }), ticks));
    for (const { it, depth, end } of rows) {
      const ev = it.ev || {};
      const kind = ev.kind || "custom";
      const outcome = ev.outcome && ev.outcome !== "unspecified" ? " o-" + ev.outcome : "";
      const name = ev.tool_name || ev.action || kind.replace(/_/g, " ");
      const left = pct(it.t);
      const width = Math.max(pct(end) - left, 0.4);
      const row = el(
        "div",
        {
          class: "wf-row" + (MARKS[kind] ? " marked m-" + kind : "") + (it.check.ok ? "" : " failed") + (it.fresh ? " new" : "") + (state.selected === it.rec.index ? " selected" : ""),
          "data-index": it.rec.index,
          "data-status": it.check.ok ? "verified" : "failed",
          "data-kind": kind,
          onclick: () => select(it),
        },
        el(
          "div",
          { class: "wf-label", style: "padding-left:" + (6 + depth * 16) + "px" },
          badge(it.check),
          MARKS[kind] ? el("span", { class: "marker mark m-" + kind, text: MARKS[kind], title: kind.replace(/_/g, " ") }) : null,
          el("span", { class: "kind-chip k-" + kind, text: kind.replace(/_/g, " ") }),
          el("span", { class: "name", text: name }),
          el("span", { class: "agent", text: ev.agent_id || "" }),
        ),
        el(
          "div",
          { class: "wf-track" },
          el("div", {
            class: "wf-bar k-" + kind + outcome,
            style: "left:" + Math.min(left, 99.6) + "%;width:" + width + "%",
            title: (ev.occurred_at || "") + (end > it.t ? " · " + duration(end - it.t) : ""),
          }),
        ),
      );
      wf.append(row);
    }
  }

  function payloadView(it) {
    const p = it.check.payload;
    if (!p || p.state === "none") return el("p", { class: "hint", text: "No payload." });
    if (p.state === "redacted") {
      const r = it.check.redaction;
      if (!r) return el("div", { class: "redacted", "data-redacted": "true", text: "Payload redacted. The server shows no redaction entry for it." });
      return el(
        "div",
        { class: "redacted", "data-redacted": "true" },
        el("strong", { text: "Payload redacted" }),
        el("div", { text: "by " + r.writer + " at " + r.at }),
        el("div", { text: "reason: " + r.reason }),
        el("div", {
          text: "redaction entry #" + r.index + ": " + (r.ok ? (r.covered ? "✓ verified" : "not yet covered by this checkpoint") : "✗ FAILED verification"),
        }),
      );
    }
    if (p.state === "withheld") return el("p", { class: "hint", text: "Payload not included in this answer." });
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(p.bytes);
      try {
        text = JSON.stringify(JSON.parse(text), null, 2);
      } catch (e) {
        /* not JSON: shown as text */
      }
    } catch (e) {
      text = "(" + p.bytes.length + " bytes of binary) " + V.b64encode(p.bytes.subarray(0, 4096));
    }
    return el(
      "div",
      {},
      el("div", { class: p.state === "verified" ? "badge verified" : "badge failed", text: p.state === "verified" ? "✓ matches its commitment" : "✗ does NOT match its commitment" }),
      el("pre", { "data-payload": "true", text }),
    );
  }

  function select(it) {
    state.selected = it.rec.index;
    for (const r of document.querySelectorAll(".wf-row.selected")) r.classList.remove("selected");
    const row = document.querySelector('.wf-row[data-index="' + it.rec.index + '"]');
    if (row) row.classList.add("selected");
    const ev = it.ev || {};
    const e = it.check.entry;
    const field = (k, v) => el("tr", {}, el("th", { text: k }), el("td", { class: "mono", text: v === undefined || v === null ? "" : String(v) }));
    const fields = [
      ["index", it.rec.index],
      ...Object.entries(ev).filter(([k]) => k !== "attributes"),
      ["integrated_at", e && e.integrated_at ? V.rfc3339(e.integrated_at) : ""],
      ["writer", e ? e.writer : ""],
      ["leaf_hash", it.check.leaf ? V.hex(it.check.leaf) : ""],
      ["payload_commitment", e ? V.hex(e.payload_commitment) : ""],
      ["payload_size", e ? e.payload_size : ""],
    ];
    if (e && e.redaction) fields.push(["redaction", "of entry #" + e.redaction.target_index + ": " + e.redaction.reason]);
    const attrs = Object.entries(ev.attributes || {});
    $("detail").replaceChildren(
      el("h2", {}, (ev.kind || "entry").replace(/_/g, " ") + " · " + (ev.tool_name || ev.action || "#" + it.rec.index)),
      it.check.ok
        ? el("p", { class: "badge verified", "data-detail-status": "verified", text: "✓ Verified: entry #" + it.rec.index + " is in the log of " + state.cp.size + " entries signed by " + state.vkey.name })
        : el("div", { class: "problems", "data-detail-status": "failed" }, el("div", { class: "badge failed", text: "✗ FAILED verification" }), el("ul", {}, it.check.problems.map((p) => el("li", { text: p })))),
      el("table", {}, fields.map(([k, v]) => field(k, v))),
      el("h3", { text: "Attributes" }),
      attrs.length ? el("table", {}, attrs.map(([k, v]) => field(k, v))) : el("p", { class: "hint", text: "None." }),
      el("h3", { text: "Payload" }),
      payloadView(it),
    );
  }

  async function openTrace(id) {
    show("trace-view");
    $("trace-id").textContent = id;
    $("waterfall").replaceChildren(el("p", { class: "hint", style: "padding:8px", text: "Loading…" }));
    $("detail").replaceChildren(el("p", { class: "hint", text: "Select an event." }));
    const started = performance.now();
    let answer;
    try {
      answer = await api("traces/" + encodeURIComponent(id), { include_payloads: "true", with_proofs: "true" });
    } catch (e) {
      $("waterfall").replaceChildren(el("p", { class: "error", style: "padding:8px", text: e.message }));
      return;
    }
    const fetched = performance.now();
    const { items, cpError } = await verifyView(answer);
    const verified = performance.now();
    state.items = items;
    if (items.length === 0) {
      $("waterfall").replaceChildren(el("p", { class: "hint", style: "padding:8px", text: "No events in this trace." }));
    } else {
      renderWaterfall();
    }
    report(cpError);
    summarizeTrace();
    const rendered = performance.now();
    window.ledgerTiming = {
      events: items.length,
      fetch_ms: fetched - started,
      verify_ms: verified - fetched,
      render_ms: rendered - verified,
      since_navigation_ms: rendered,
    };
    $("trace-follow").onclick = () => toggleFollow($("trace-follow"), new URLSearchParams({ correlation_id: id }), (it) => {
      it.fresh = true;
      state.items.push(it);
      renderWaterfall();
      summarizeTrace();
    });
    document.body.dataset.ready = "trace";
  }

  function summarizeTrace() {
    const ok = state.items.filter((i) => i.check.ok).length;
    $("trace-summary").textContent = state.items.length + " events · " + ok + " verified" + (state.cp ? " against checkpoint " + state.cp.size : "");
  }

  $("download-json").addEventListener("click", () => {
    const r = parseRoute();
    const doc = {
      correlation_id: r.id,
      verifier_key: state.vkey.text,
      checkpoint: state.cpJson,
      entries: state.items.map((i) => ({ ...i.rec, verified: i.check.ok, problems: i.check.problems })),
    };
    download("trace-" + r.id + ".json", new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }));
  });

  $("download-bundle").addEventListener("click", async () => {
    const r = parseRoute();
    const idx = state.items.map((i) => i.rec.index);
    if (!idx.length) return;
    try {
      const resp = await api("export", { start: Math.min(...idx), end: Math.max(...idx) + 1, include_payloads: "true" }, { raw: true });
      download("trace-" + r.id + ".bundle", await resp.blob());
    } catch (e) {
      banner("Bundle download failed: " + e.message + (e.status === 403 ? " (exports need the auditor role)" : ""), "warn");
    }
  });

  // --- follow (live tail) ------------------------------------------------------

  function stopFollow() {
    if (state.follow) state.follow.abort();
    state.follow = null;
    for (const b of document.querySelectorAll("button.follow")) b.setAttribute("aria-pressed", "false");
  }

  function toggleFollow(button, filters, add) {
    if (state.follow) {
      stopFollow();
      return;
    }
    if (!state.cp) {
      // Following proves each new checkpoint from the one the view verified.
      banner("Follow needs a verified checkpoint: this view has none.", "warn");
      return;
    }
    const ctl = new AbortController();
    state.follow = ctl;
    button.setAttribute("aria-pressed", "true");
    const size = state.cp.size;
    const q = new URLSearchParams(filters);
    q.delete("descending");
    q.set("from_index", String(size));
    q.set("known_size", String(size));
    q.set("include_payloads", "true");
    tail(q, ctl.signal, add).catch((e) => {
      if (ctl.signal.aborted) return;
      banner("Follow stopped: " + e.message, "warn");
      stopFollow();
    });
  }

  // Reads the server-sent events of /tail: each `checkpoint` must verify and
  // be consistent with the one before; each `entry` is checked against it.
  async function tail(q, signal, add) {
    const r = await api("tail", q, { raw: true, signal });
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the server closed the stream");
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let type = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) type = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue;
        const msg = JSON.parse(data.join("\n"));
        if (type === "checkpoint") await nextCheckpoint(msg);
        else if (type === "entry") {
          const it = item(msg, await check(msg, state.cp));
          add(it);
          report(null);
        } else if (type === "error") throw new Error(msg.message);
      }
    }
  }

  async function nextCheckpoint(msg) {
    const cp = await V.openCheckpoint(msg.note, state.vkey);
    const c = msg.consistency;
    const old = state.cp;
    let ok;
    if (!old) ok = true;
    else {
      ok = c && c.old_size === old.size && c.new_size === cp.size &&
        (await V.verifyConsistency(old.size, cp.size, old.root, cp.root, c.hashes.map(V.b64decode)));
    }
    if (!ok) {
      setCheckpointStatus(null, "not consistent with the previous checkpoint");
      state.cp = null;
      throw new Error("the new checkpoint is NOT consistent with the one the page verified: the log was rewritten");
    }
    state.cp = cp;
    state.cpJson = msg;
    setCheckpointStatus(cp, null);
    remember(cp);
  }

  // --- start -------------------------------------------------------------------

  window.addEventListener("hashchange", () => {
    route().catch((e) => banner(e.message));
  });
  trySavedSession()
    .then(route)
    .catch((e) => banner(e.message));
})();
