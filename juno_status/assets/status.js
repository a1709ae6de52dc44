"use strict";
// Draws the status (the same object as `juno-dci status --json`) with DOM calls only: every text
// from Rucio goes in through textContent, never as HTML.
(function () {
  const config = JSON.parse(document.getElementById("page-config").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const SITE_COLORS = { IHEP: "#d1495b", CNAF: "#2a9d5c", JINR: "#2f6fdb", IN2P3: "#8e5cd9" };
  const EXTRA_COLORS = ["#e08a1e", "#17a2b8", "#6c757d", "#b5651d"];

  // -- formatting: the same rules as juno_common/units.py -------------------------------------------
  function fmtBytes(n) {
    if (n === null || n === undefined) return "-";
    const units = [["PB", 1e15], ["TB", 1e12], ["GB", 1e9], ["MB", 1e6], ["kB", 1e3]];
    for (const [unit, scale] of units) {
      if (Math.abs(n) >= scale) {
        const v = n / scale;
        return (v < 1000 ? String(Number(v.toPrecision(3))) : String(Math.round(v))) + " " + unit;
      }
    }
    return Math.trunc(n) + " B";
  }
  function fmtCount(n) { return n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"); }
  function pct(part, whole) {
    if (!whole) return "-";
    const share = 100 * part / whole;
    if (part < whole && share > 99.9) return ">99.9 %";
    return share < 100 ? share.toFixed(1) + " %" : "100 %";
  }
  function fmtAge(s) {
    if (s === null || s === undefined) return "-";
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) { const r = s % 60; return Math.floor(s / 60) + "m" + (r ? r + "s" : ""); }
    if (s < 86400) { const r = Math.floor(s % 3600 / 60); return Math.floor(s / 3600) + "h" + (r ? r + "m" : ""); }
    const r = Math.floor(s % 86400 / 3600); return Math.floor(s / 86400) + "d" + (r ? r + "h" : "");
  }
  function when(iso) { return iso ? iso.replace("T", " ").replace("Z", " UTC") : "-"; }

  // -- DOM helpers -------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  // A number cell: the human text shows, the exact value is in data-value (tests read it).
  function num(field, value, text, extra) {
    return el("td", Object.assign({ class: "num", "data-field": field, "data-value": value }, extra || {}),
      text === undefined ? fmtCount(value) : text);
  }
  function card(title, note, ...body) {
    return el("section", { class: "card" }, el("h2", {}, el("span", { text: title }),
      note ? el("span", { class: "note", text: note }) : null), ...body);
  }
  function siteColor(site, index) { return SITE_COLORS[site] || EXTRA_COLORS[index % EXTRA_COLORS.length]; }

  // -- sections ----------------------------------------------------------------------------------
  function verdictOf(s) {
    if (s.complete) return ["COMPLETE", "ok"];
    const stuck = (s.rules.states.STUCK || 0) + (s.rules.states.SUSPENDED || 0);
    return stuck ? ["STUCK", "bad"] : ["INCOMPLETE", "warn"];
  }

  function tile(field, label, value, hint, tone, exact) {
    return el("div", { class: "tile " + (tone || ""), "data-field": field, "data-value": exact },
      el("div", { class: "label", text: label }), el("div", { class: "value", text: value }),
      el("div", { class: "hint", text: hint || "" }));
  }

  function tiles(s) {
    const t = s.totals, r = s.rules, tr = s.transfers, ing = s.ingest;
    const stuck = (r.states.STUCK || 0) + (r.states.SUSPENDED || 0);
    const pending = (r.states.REPLICATING || 0) + (r.states.WAITING_APPROVAL || 0) + (r.states.INJECT || 0);
    let ingValue = "not checked", ingHint = "--no-ingest", ingTone = "";
    if (ing) {
      if (ing.state === "running") { ingValue = fmtCount(ing.lag) + " msgs"; ingHint = "lag · " + ing.topic; ingTone = ing.lag ? "warn" : "ok"; }
      else if (ing.state === "not running" || ing.state === "stopped") { ingValue = ing.state; ingHint = ing.lag ? fmtCount(ing.lag) + " messages waiting" : ing.topic + " · group " + ing.group; ingTone = ing.lag ? "warn" : ""; }
      else { ingValue = ing.state; ingHint = ing.detail; ingTone = "bad"; }
    }
    return el("div", { class: "tiles" },
      tile("total-expected-files", "Expected files", fmtCount(t.expected.files), fmtBytes(t.expected.bytes) + " by the policy", "info", t.expected.files),
      tile("total-present-files", "Present", pct(t.present.files, t.expected.files), fmtCount(t.present.files) + " files · " + fmtBytes(t.present.bytes),
        t.present.files >= t.expected.files ? "ok" : "warn", t.present.files),
      tile("total-verified-files", "Verified (adler32)", pct(t.verified.files, t.expected.files), fmtCount(t.verified.files) + " files · " + fmtBytes(t.verified.bytes),
        t.verified.files >= t.expected.files ? "ok" : "warn", t.verified.files),
      tile("rules-ok", "Rules OK", fmtCount(r.states.OK), "of " + fmtCount(r.total) + " · " + fmtCount(pending) + " replicating · " + fmtCount(stuck) + " stuck",
        stuck ? "bad" : (pending ? "warn" : "ok"), r.states.OK),
      tile("in-flight-files", "Transfers in flight", fmtCount(tr.in_flight_files), fmtBytes(tr.in_flight_bytes), tr.in_flight_files ? "info" : "", tr.in_flight_files),
      tile("failed-attempts", "Failed transfers", fmtCount(tr.failed_attempts), fmtCount(tr.failed_files) + " files · " + tr.failed.length + " reasons · since " + when(s.selection.failed_since).slice(5, 16),
        tr.failed_attempts ? "bad" : "ok", tr.failed_attempts),
      tile("ingest", "Ingest", ingValue, ingHint, ingTone, ing ? ing.state : "not checked"));
  }

  function missingCard(s) {
    if (s.complete) return null;
    return el("section", { class: "card", id: "incomplete" },
      el("h2", {}, el("span", { text: "What is not there yet" }), el("span", { class: "note", text: "exit code 3 of juno-dci status" })),
      el("ul", { class: "flat" }, s.incomplete.map((line) => el("li", { text: line }))));
  }

  function sitesTable(s) {
    const head = el("tr", {}, el("th", { text: "Site" }), el("th", { text: "RSE" }),
      el("th", { class: "num", text: "Expected" }), el("th", { class: "num", text: "bytes" }),
      el("th", { class: "num", text: "Present" }), el("th", { class: "num", text: "bytes" }),
      el("th", { text: "present / verified" }),
      el("th", { class: "num", text: "Verified" }), el("th", { class: "num", text: "bytes" }),
      el("th", { text: "" }), el("th", { text: "Notes" }));
    const body = el("tbody");
    const bySite = {};
    for (const r of s.rses) (bySite[r.site] = bySite[r.site] || []).push(r);
    for (const site of s.sites) {
      const rows = bySite[site.site] || [];
      rows.forEach((r, i) => {
        const e = r.expected.files;
        const notes = [];
        if (r.blocks_without_rule) notes.push(el("span", { class: "pill bad", text: r.blocks_without_rule + " blocks without rule" }));
        if (r.pending_blocks) notes.push(el("span", { class: "pill info", text: r.pending_blocks + " pending placement" }));
        for (const [state, n] of Object.entries(r.not_available || {})) notes.push(el("span", { class: "pill warn", text: fmtCount(n) + " " + state.toLowerCase() }));
        if (r.other.files) notes.push(el("span", { class: "pill info", title: "replicas of these blocks the policy does not ask for here", text: "+" + fmtCount(r.other.files) + " not wanted" }));
        const presentW = e ? Math.min(100, 100 * r.present.files / e) : (r.present.files ? 100 : 0);
        const verifiedW = e ? Math.min(100, 100 * r.verified.files / e) : 0;
        const dagger = r.verified_by.startsWith("SPADE") ? " †" : "";
        body.appendChild(el("tr", { "data-rse": r.rse, "data-site": r.site, class: i === 0 ? "site-first" : null },
          el("td", { class: "sitename", text: i === 0 ? site.site : "" }),
          el("td", { class: "rse" }, r.rse, " ", el("span", { class: "small", text: r.type.toLowerCase() })),
          num("expected-files", e), num("expected-bytes", r.expected.bytes, fmtBytes(r.expected.bytes)),
          num("present-files", r.present.files), num("present-bytes", r.present.bytes, fmtBytes(r.present.bytes)),
          el("td", { title: pct(r.present.files, e) + " present, " + pct(r.verified.files, e) + " verified" },
            el("div", { class: "bar" }, el("span", { class: "present", style: "width:" + presentW + "%" }),
              el("span", { class: "verified", style: "width:" + verifiedW + "%" })),
            el("div", { class: "small", text: pct(r.present.files, e) })),
          num("verified-files", r.verified.files, fmtCount(r.verified.files) + dagger, { title: "verified by " + r.verified_by }),
          num("verified-bytes", r.verified.bytes, fmtBytes(r.verified.bytes)),
          el("td", {}, el("span", { class: "pill " + (r.complete ? "ok" : "bad"), "data-field": "complete", "data-value": String(r.complete), text: r.complete ? "complete" : "missing " + fmtCount(r.missing.files) })),
          el("td", {}, notes)));
      });
    }
    const t = s.totals;
    body.appendChild(el("tr", { class: "site-total", "data-rse": "all" }, el("td", { text: "All" }), el("td", {}),
      num("expected-files", t.expected.files), num("expected-bytes", t.expected.bytes, fmtBytes(t.expected.bytes)),
      num("present-files", t.present.files), num("present-bytes", t.present.bytes, fmtBytes(t.present.bytes)),
      el("td", { class: "small", text: pct(t.present.files, t.expected.files) }),
      num("verified-files", t.verified.files), num("verified-bytes", t.verified.bytes, fmtBytes(t.verified.bytes)),
      el("td", {}), el("td", {})));
    return card("Per site: expected by the policy, present, verified", "files and bytes of the selected raw blocks",
      el("table", { id: "sites" }, el("thead", {}, head), body),
      el("p", { class: "small" }, "Verified = adler32 compared at the destination by the transfer service (a Rucio transfer reached DONE). † at ",
        el("b", { text: s.source.landing_rse }), ": SPADE's adler32 as registered by the ingester."));
  }

  function niceStep(max, count) {
    const raw = max / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  function chart(s) {
    const h = s.history;
    const wrap = el("div", { class: "chart", id: "history-chart" });
    const sites = Object.keys(h.points || {}).filter((k) => (h.totals[k] || 0) > 0);
    if (!h.start || !sites.length) {
      wrap.appendChild(el("p", { class: "muted", text: "No transfer finished since " + when(s.selection.history_since) + "." }));
      return card("Bytes replicated per site", "cumulative, DONE transfers", wrap);
    }
    const W = 640, H = 270, L = 62, R = 14, T = 12, B = 30;
    const t0 = Date.parse(h.start) / 1000, t1 = Date.parse(h.end) / 1000;
    const ymaxRaw = Math.max(...sites.map((k) => h.totals[k]));
    const step = niceStep(ymaxRaw, 4), ymax = Math.ceil(ymaxRaw / step) * step || 1;
    const x = (t) => L + (W - L - R) * (t - t0) / Math.max(1, t1 - t0);
    const y = (v) => T + (H - T - B) * (1 - v / ymax);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "bytes replicated per site over time" });
    for (let v = 0; v <= ymax + 1e-9; v += step) {
      root.appendChild(svg("line", { class: v ? "gridline" : "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtBytes(v)));
    }
    const span = t1 - t0;
    const fmtT = (t) => { const d = new Date(t * 1000).toISOString(); return span > 2 * 86400 ? d.slice(5, 10) : d.slice(11, 16); };
    for (let i = 0; i <= 5; i++) {
      const t = t0 + span * i / 5;
      root.appendChild(svg("line", { class: "axis", x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4 }));
      root.appendChild(svg("text", { x: x(t), y: H - B + 17, "text-anchor": i === 0 ? "start" : (i === 5 ? "end" : "middle") }, fmtT(t)));
    }
    const legend = el("div", { class: "legend" });
    sites.sort().forEach((site, i) => {
      const color = siteColor(site, i);
      const pts = [[t0, 0]].concat(h.points[site]);
      let d = "";
      pts.forEach(([t, v], j) => { d += (j ? " L" : "M") + x(Math.min(t, t1)).toFixed(1) + "," + y(v).toFixed(1); });
      const lastX = x(Math.min(pts[pts.length - 1][0], t1)).toFixed(1);
      root.appendChild(svg("path", { d: `${d} L${lastX},${y(0)} L${x(t0)},${y(0)} Z`, fill: color, "fill-opacity": "0.08", stroke: "none" }));
      root.appendChild(svg("path", { d, fill: "none", stroke: color, "stroke-width": "2.2", "stroke-linejoin": "round",
        "data-site": site, "data-total": h.totals[site] }));
      const last = pts[pts.length - 1];
      root.appendChild(svg("circle", { cx: x(Math.min(last[0], t1)), cy: y(last[1]), r: 3.2, fill: color }));
      legend.appendChild(el("span", { "data-site": site, "data-field": "replicated-bytes", "data-value": h.totals[site] },
        el("i", { style: "background:" + color }), site + " " + fmtBytes(h.totals[site])));
    });
    wrap.appendChild(root);
    wrap.appendChild(legend);
    return card("Bytes replicated per site", `cumulative since ${when(h.start)} · ${fmtCount(h.transfers)} transfers · bucket ${fmtAge(h.bucket_s)}`, wrap);
  }

  function rulesCard(s) {
    const states = ["OK", "REPLICATING", "STUCK", "SUSPENDED"];
    const head = el("tr", {}, el("th", { text: "RSE expression" }), states.map((st) => el("th", { class: "num", text: st })));
    const body = el("tbody");
    const cell = (field, n, st) => num(field, n, fmtCount(n), { class: "num" + (n ? (st === "STUCK" || st === "SUSPENDED" ? " bad-text" : "") : " state-zero") });
    for (const r of s.rules.by_rse_expression) {
      body.appendChild(el("tr", { "data-rse-expression": r.rse_expression }, el("td", { text: r.rse_expression }),
        states.map((st) => cell("rules-" + st.toLowerCase(), r.states[st] || 0, st))));
    }
    body.appendChild(el("tr", { class: "site-total", "data-rse-expression": "all" }, el("td", { text: "All" }),
      states.map((st) => cell("rules-" + st.toLowerCase(), s.rules.states[st] || 0, st))));
    const stuck = s.rules.stuck.length ? el("div", {}, el("h3", { class: "small", text: "Stuck or suspended" }),
      el("ul", { class: "flat" }, s.rules.stuck.slice(0, 8).map((r) => el("li", {},
        el("span", { class: "pill bad", text: r.state }), " ", el("code", { text: r.did }), " → " + r.rse_expression + ": ",
        el("span", { class: "reason", text: r.error || "no error text" }))))) : null;
    return card("Rules on the selected blocks", fmtCount(s.rules.total) + " rules",
      s.rules.total ? el("table", { id: "rules" }, el("thead", {}, head), body) : el("p", { class: "muted", text: "No rules." }), stuck);
  }

  function transfersCard(s) {
    const tr = s.transfers;
    const scope = s.selection.transfers === "all" ? "every scope" : "files of the selected blocks";
    const parts = [];
    if (tr.in_flight.length) {
      const body = el("tbody", {}, tr.in_flight.map((t) => el("tr", { "data-link": (t.source || "?") + ">" + t.destination },
        el("td", { text: t.source || "(not chosen yet)" }), el("td", { text: "→ " + t.destination }),
        el("td", {}, el("span", { class: "pill info", text: t.state })),
        num("in-flight-files", t.files), num("in-flight-bytes", t.bytes, fmtBytes(t.bytes)),
        el("td", { class: "num", text: fmtAge(t.age_s) }))));
      parts.push(el("table", { id: "in-flight" }, el("thead", {}, el("tr", {}, el("th", { text: "From" }), el("th", { text: "To" }),
        el("th", { text: "State" }), el("th", { class: "num", text: "Files" }), el("th", { class: "num", text: "Bytes" }),
        el("th", { class: "num", text: "Oldest" }))), body));
    } else {
      parts.push(el("p", { class: "muted", id: "in-flight-none", text: "No transfer in flight." }));
    }
    parts.push(el("h3", { class: "small", text: "Failed since " + when(s.selection.failed_since) + (tr.failed_rows_truncated ? " (newest attempts only)" : "") }));
    if (tr.failed.length) {
      const body = el("tbody", {}, tr.failed.map((f) => el("tr", { class: "failed-reason", "data-reason": f.reason, "data-checksum": String(f.checksum) },
        num("failed-attempts", f.attempts), num("failed-files", f.files),
        el("td", {}, el("div", { class: "reason", title: f.example || "", text: f.reason }),
          el("div", { class: "small" }, f.links.map((l) => l.link + " ×" + l.attempts).join(", ") + " · last " + when(f.last_at) + " · e.g. ",
            el("code", { text: f.example_did }))))));
      parts.push(el("table", { id: "failed" }, el("thead", {}, el("tr", {}, el("th", { class: "num", text: "Attempts" }),
        el("th", { class: "num", text: "Files" }), el("th", { text: "Reason (paths, URLs and checksums folded)" }))), body));
    } else {
      parts.push(el("p", { class: "muted", id: "failed-none", text: "No failed transfer." }));
    }
    return card("Transfers", scope, ...parts);
  }

  function blocksCard(s) {
    const b = s.blocks;
    const rses = b.rses;
    const head = el("tr", {}, el("th", { text: "Block" }), el("th", { class: "num", text: "Files" }), el("th", { class: "num", text: "Size" }),
      rses.map((r) => el("th", { class: "num", text: r })));
    const body = el("tbody");
    for (const row of b.rows) {
      const cells = rses.map((rse) => {
        const c = row.cells[rse];
        if (!c) return el("td", { class: "cell c-none", "data-rse": rse, "data-state": "not expected", title: "the policy does not want this block here", text: "·" });
        let cls = "c-none", text = "·", title = "";
        if (c.state === "complete") { cls = "c-complete"; text = c.present + "/" + c.expected; title = "all files present"; }
        else if (c.state === "incomplete") { cls = c.present ? "c-partial" : "c-missing"; text = c.present + "/" + c.expected; title = "files present / expected"; }
        else if (c.state === "no rule") { cls = "c-norule"; text = c.present + "/" + c.expected; title = "the policy wants it here but the block has no such rule"; }
        else if (c.state === "pending") { cls = "c-pending"; text = "pending"; title = "fraction placement decided when the block closes"; }
        else if (c.state === "not wanted") { cls = "c-extra"; text = "+" + c.present; title = "replicas the policy does not ask for"; }
        else if (c.state === "skipped") { cls = "c-none"; text = c.present ? "+" + c.present : "–"; title = "fraction rule: not this block (recorded placement decision)"; }
        return el("td", { class: "cell " + cls, "data-rse": rse, "data-state": c.state, "data-present": c.present, "data-expected": c.expected,
          "data-verified": c.verified, title: title + (c.expected ? ` (${c.verified} verified)` : ""), text });
      });
      body.appendChild(el("tr", { "data-block": row.block, "data-complete": String(row.complete) },
        el("td", { class: "blk", text: row.block + (row.open ? " (open)" : "") }), num("files", row.files),
        num("bytes", row.bytes, fmtBytes(row.bytes)), cells));
    }
    const keys = el("div", { class: "keys" },
      [["c-complete", "complete"], ["c-partial", "partial"], ["c-missing", "none yet"], ["c-norule", "no rule"],
        ["c-pending", "placement pending"], ["c-extra", "not wanted"], ["c-none", "not expected (·), not placed (–)"]]
        .map(([cls, label]) => el("span", {}, el("span", { class: "k " + cls }), label)));
    const note = `${fmtCount(b.blocks)} blocks: ${fmtCount(b.complete)} complete, ${fmtCount(b.incomplete)} incomplete, ${fmtCount(b.empty)} empty` +
      (b.truncated ? ` · showing ${fmtCount(b.rows.length)} of ${fmtCount(b.rows_total)} (incomplete first)` : "");
    return card("Per-block completeness", note,
      b.rows.length ? el("div", { class: "heat-wrap" }, el("table", { class: "heat", id: "blocks" }, el("thead", {}, head), body))
        : el("p", { class: "muted", text: "No block with files matches " + s.selection.blocks + "." }), keys);
  }

  // Production (juno-prod): the figures of `juno-prod status --json`, made by the same function.
  function productionCard(s) {
    const p = s.production;
    if (p === undefined) return null;
    if (p === null || !p.available) {
      return el("section", { class: "card", id: "production", "data-available": "false" },
        el("h2", {}, el("span", { text: "Production" }), el("span", { class: "note", text: "juno-prod" })),
        el("p", { class: "muted", id: "production-none", text: p === null ? "Not checked (--no-production)." : p.detail }));
    }
    const states = ["waiting", "assigned", "processed", "failed", "problematic"];
    const tones = { processed: "ok", failed: "warn", problematic: "bad", assigned: "info" };
    const parts = [];
    for (const t of p.transformations) {
      const head = el("tr", {}, el("th", { text: "Step" }), states.map((st) => el("th", { class: "num", text: st })),
        el("th", { text: "done" }), el("th", { text: "Jobs by site and state" }));
      const body = el("tbody");
      for (const st of t.steps) {
        const total = states.reduce((a, k) => a + (st.files[k] || 0), 0);
        const done = (st.files.processed || 0);
        const jobs = Object.keys(st.jobs).sort().map((site) => el("div", { class: "jobs-site", "data-site": site },
          el("b", { text: site }), " ", Object.keys(st.jobs[site]).sort().map((state) =>
            el("span", { class: "pill " + (state === "done" ? "ok" : state === "failed" || state === "held" ? "bad" : "info"),
              "data-site": site, "data-state": state, "data-value": st.jobs[site][state], text: state + " " + fmtCount(st.jobs[site][state]) }))));
        body.appendChild(el("tr", { "data-transformation": t.name, "data-step": st.step },
          el("td", { class: "blk", text: st.step }),
          states.map((k) => num("files-" + k, st.files[k] || 0, fmtCount(st.files[k] || 0),
            { class: "num" + (st.files[k] ? (k === "problematic" ? " bad-text" : "") : " state-zero") })),
          el("td", { title: pct(done, total) + " processed" }, el("div", { class: "bar" },
            el("span", { class: "verified", style: "width:" + (total ? 100 * done / total : 0) + "%" })),
            el("div", { class: "small", text: pct(done, total) })),
          el("td", {}, jobs.length ? jobs : el("span", { class: "muted", text: "no jobs yet" }))));
      }
      const problems = t.steps.reduce((a, st) => a + (st.files.problematic || 0), 0);
      parts.push(el("div", { class: "prod-tf", "data-transformation": t.name, "data-processed-per-hour": t.processed_per_hour,
        "data-eta-s": t.eta_s === null ? "" : t.eta_s, "data-datasets-open": t.datasets.open, "data-datasets-closed": t.datasets.closed },
        el("h3", { class: "prod-name" }, el("span", { text: t.name }), " ",
          el("span", { class: "pill " + (t.state === "active" ? (problems ? "bad" : "ok") : "warn"), text: t.state }), " ",
          el("span", { class: "small", text: t.kind + " · " + fmtCount(t.processed_per_hour) + " files/h in the last hour · ETA " +
            (t.eta_s === null ? "-" : fmtAge(t.eta_s)) + " · datasets " + t.datasets.closed + " closed, " + t.datasets.open + " open" })),
        el("table", { class: "prod" }, el("thead", {}, head), body)));
    }
    const nt = p.transformations.length;
    return card("Production", fmtCount(nt) + (nt === 1 ? " transformation" : " transformations") + " · as juno-prod status",
      el("div", { id: "production", "data-available": "true" },
        parts.length ? parts : el("p", { class: "muted", id: "production-none", text: "No transformation yet." })),
      el("p", { class: "footer" }, "Bookkeeping: ", el("code", { text: p.database }), " (read-only)"));
  }

  function definitions(s) {
    const defs = el("dl", { class: "defs" });
    for (const [k, v] of Object.entries(s.definitions)) { defs.appendChild(el("dt", { text: k })); defs.appendChild(el("dd", { text: v })); }
    const ingest = s.ingest ? el("p", { class: "small", text: "Ingest: " + s.ingest.state + " — " + s.ingest.detail }) : null;
    const probs = s.problems.length ? el("div", {}, el("h3", { class: "small", text: "Policy problems (" + s.problems_total + ")" }),
      el("ul", { class: "flat" }, s.problems.map((p) => el("li", { class: "reason", text: p })))) : null;
    return card("What the numbers mean", "", defs, ingest, probs,
      el("p", { class: "footer" }, "Selection: ", el("code", { text: s.selection.scope + ":" + s.selection.blocks }),
        " · source: ", el("code", { text: s.source.rucio_database }), " (read-only) · policy ", el("code", { text: s.source.policy }),
        " · collected in " + s.seconds.toFixed(2) + " s"));
  }

  function render(s, error) {
    const banner = document.getElementById("banner");
    banner.hidden = !error;
    banner.textContent = error ? "Status not updated: " + error : "";
    const app = document.getElementById("app");
    if (!s) { app.replaceChildren(el("p", { class: "muted", text: "No status collected yet." })); return; }
    const [label, tone] = verdictOf(s);
    const badge = document.getElementById("verdict");
    badge.textContent = label;
    badge.className = "badge " + tone;
    badge.setAttribute("data-complete", String(s.complete));
    document.getElementById("updated").textContent = "generated " + when(s.generated_at) +
      (config.live ? " · refreshes every " + config.refresh_s + " s" : " · static report");
    app.replaceChildren(...[
      tiles(s), missingCard(s), sitesTable(s),
      el("div", { class: "grid2" }, chart(s), rulesCard(s)),
      transfersCard(s), productionCard(s), blocksCard(s), definitions(s)].filter(Boolean));
    document.body.setAttribute("data-rendered", s.generated_at);
  }

  render(JSON.parse(document.getElementById("status-data").textContent), config.error);
  if (config.live) {
    setInterval(async () => {
      try {
        const response = await fetch("/api/status", { cache: "no-store" });
        const body = await response.json();
        if (response.ok) render(body, null);
        else render(body.last, body.error);
      } catch (err) {
        document.getElementById("banner").hidden = false;
        document.getElementById("banner").textContent = "Status not updated: the server does not answer (" + err + ")";
      }
    }, config.refresh_s * 1000);
  }
})();
