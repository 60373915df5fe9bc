// Usher console: forms and buttons call the JSON API with the session cookie and the CSRF
// header; the CSV import shows its upload progress and the errors against their lines; the
// dashboard follows the event stream (EventSource) and re-reads the counters when told to.
"use strict";

(function () {
  const csrf = () => {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  };

  const flash = (text, isError) => {
    const f = document.getElementById("flash");
    if (!f) return;
    f.textContent = text;
    f.className = isError ? "error" : "ok";
  };

  async function api(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!resp.ok) {
      const err = new Error((data && (data.detail || data.title)) || resp.statusText);
      err.problem = data || {};
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  // ---------------------------------------------------------------- forms → API

  const pad = (n) => String(n).padStart(2, "0");
  const toLocalInput = (iso) => {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  };

  function formBody(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.type === "hidden" || el.type === "submit" || el.type === "button") continue;
      if (el.dataset.type === "bool" || el.type === "checkbox") { body[el.name] = el.checked; continue; }
      let v = el.value;
      if (v === "") {
        if (el.dataset.empty === "omit") continue;
        if (el.dataset.empty === "null") { body[el.name] = null; continue; }
        if (el.dataset.type === "datetime") continue;
      }
      if (el.dataset.type === "datetime") v = new Date(v).toISOString();
      else if (el.dataset.type === "int") v = Number(v);
      body[el.name] = v;
    }
    return body;
  }

  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((e) => e.remove());
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  }

  function showErrors(form, err) {
    const errors = (err.problem && err.problem.errors) || [];
    let placed = false;
    for (const e of errors) {
      const input = form.querySelector(`[name="${CSS.escape(e.field || "")}"]`);
      if (!input) continue;
      const p = document.createElement("p");
      p.className = "field-error";
      p.id = `${input.id || input.name}-error`;
      p.textContent = e.message;
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", p.id);
      input.insertAdjacentElement("afterend", p);
      placed = true;
    }
    flash(err.message, true);
    if (!placed && err.problem && err.problem.field) {
      const input = form.querySelector(`[name="${CSS.escape(err.problem.field)}"]`);
      if (input) input.setAttribute("aria-invalid", "true");
    }
  }

  // Shows each `<time datetime>` under `root` in the browser's time zone and locale.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((t) => {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.textContent = d.toLocaleString();
    });
  }

  // Replaces the element with this id by the same element of this page as the server renders
  // it now; on failure the page stays as it is (a reload shows the same).
  async function refreshPart(id) {
    try {
      const resp = await fetch(location.pathname, { credentials: "same-origin" });
      if (!resp.ok) return;
      const html = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = html.getElementById(id);
      const old = document.getElementById(id);
      if (fresh && old) {
        const part = document.importNode(fresh, true);
        localTimes(part);
        old.replaceWith(part);
      }
    } catch (_) {
      // Nothing to do: the new key is shown either way.
    }
  }

  function after(then, result) {
    if (then === "reload") location.reload();
    else if (then === "show-key" && result && result.key) {
      // A new API key: shown once, in place (a reload would lose it).
      const box = document.getElementById("new-key");
      const value = document.getElementById("new-key-value");
      value.value = result.key;
      box.hidden = false;
      value.focus();
      value.select();
      // The list above gains the key (never its secret): re-read it as the server renders it.
      refreshPart("api-keys");
    }
    else if (then === "event" && result && result.id) location.href = `/events/${result.id}`;
  }

  document.addEventListener("submit", async (ev) => {
    const form = ev.target;
    if (!form.dataset || !form.dataset.api) return;
    ev.preventDefault();
    clearErrors(form);
    const button = form.querySelector('[type="submit"]');
    if (button) button.disabled = true;
    try {
      const result = await api(form.dataset.method || "POST", form.dataset.api, formBody(form));
      flash("Saved.", false);
      after(form.dataset.then, result);
    } catch (err) {
      showErrors(form, err);
    } finally {
      if (button) button.disabled = false;
    }
  });

  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-call]");
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      const result = await api(button.dataset.method || "POST", button.dataset.call, body);
      flash("Done.", false);
      after(button.dataset.then, result);
    } catch (err) {
      flash(err.message, true);
    } finally {
      button.disabled = false;
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll('input[data-type="datetime"][data-value]').forEach((el) => {
      el.value = toLocalInput(el.dataset.value);
    });
    localTimes(document);
    setupImport();
    setupDashboard();
  });

  // ---------------------------------------------------------------- CSV import

  function setupImport() {
    const form = document.getElementById("import-form");
    if (!form) return;
    const file = document.getElementById("csv-file");
    const dry = document.getElementById("dry-run");
    const go = document.getElementById("import-now");
    const partial = document.getElementById("partial");
    const progress = document.getElementById("upload-progress");
    const result = document.getElementById("import-result");
    const table = document.getElementById("import-errors");
    const event = form.dataset.event;
    file.addEventListener("change", () => { go.disabled = true; result.textContent = ""; table.hidden = true; });

    const send = (dryRun) => {
      const f = file.files[0];
      if (!f) { flash("Choose a CSV file first.", true); file.focus(); return; }
      dry.disabled = go.disabled = true;
      const reader = new FileReader();
      reader.onload = () => {
        const lines = String(reader.result).split(/\r\n|\n|\r/);
        const q = new URLSearchParams({ dry_run: dryRun ? "true" : "false" });
        if (partial.checked) q.set("partial", "true");
        const xhr = new XMLHttpRequest();
        xhr.open("POST", `/api/v1/events/${event}/participants/import?${q}`);
        xhr.setRequestHeader("Content-Type", "text/csv");
        xhr.setRequestHeader("X-CSRF-Token", csrf());
        xhr.upload.onprogress = (e) => {
          if (e.lengthComputable) {
            progress.value = Math.round((100 * e.loaded) / e.total);
            progress.textContent = `${progress.value}%`;
          }
        };
        xhr.onload = () => {
          progress.value = 100;
          let data = {};
          try { data = JSON.parse(xhr.responseText); } catch (_) { data = {}; }
          const errors = (data.errors || []).filter((e) => e.line);
          showImportErrors(table, errors, lines);
          dry.disabled = false;
          if (xhr.status === 200) {
            const verb = data.dry_run ? "would create" : "created";
            result.textContent = `${data.dry_run ? "Dry run: " : "Imported: "}${verb} ${data.created}, updated ${data.updated}, unchanged ${data.unchanged}` +
              (errors.length ? `, ${errors.length} line(s) with errors skipped.` : ".");
            result.className = "ok";
            go.disabled = !data.dry_run;
          } else {
            result.textContent = data.detail || `The import failed (${xhr.status}).`;
            result.className = "error";
            go.disabled = !(dryRun && partial.checked);
          }
        };
        xhr.onerror = () => { dry.disabled = false; result.textContent = "The upload failed."; result.className = "error"; };
        progress.value = 0;
        xhr.send(f);
      };
      reader.readAsText(f);
    };
    dry.addEventListener("click", () => send(true));
    go.addEventListener("click", () => send(false));
    partial.addEventListener("change", () => { go.disabled = true; });
  }

  function showImportErrors(table, errors, lines) {
    const body = table.querySelector("tbody");
    body.replaceChildren();
    for (const e of errors) {
      const tr = document.createElement("tr");
      tr.className = "bad-line";
      tr.dataset.line = e.line;
      for (const v of [`line ${e.line}`, e.field, e.message]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      const code = document.createElement("code");
      code.textContent = lines[e.line - 1] !== undefined ? lines[e.line - 1] : "";
      td.appendChild(code);
      tr.appendChild(td);
      body.appendChild(tr);
    }
    table.hidden = errors.length === 0;
  }

  // ---------------------------------------------------------------- live dashboard

  function setupDashboard() {
    const root = document.getElementById("dashboard");
    if (!root) return;
    const event = root.dataset.event;
    const staff = root.dataset.staff === "true";
    const state = document.getElementById("live-state");
    let running = false;
    let again = false;

    const text = (id, v) => { const el = document.getElementById(id); if (el) el.textContent = v; };
    const when = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");
    const opt = (v) => (v === undefined || v === null ? "–" : String(v));
    const row = (cells) => {
      const tr = document.createElement("tr");
      for (const c of cells) {
        const td = document.createElement("td");
        if (c instanceof Node) td.appendChild(c); else td.textContent = c;
        tr.appendChild(td);
      }
      return tr;
    };

    async function refresh() {
      if (running) { again = true; return; }
      running = true;
      try {
        do {
          again = false;
          const base = `/api/v1/events/${event}`;
          const [att, gates, arrivals, conflicts, alerts] = await Promise.all([
            api("GET", `${base}/attendance`),
            api("GET", `${base}/gates`),
            api("GET", `${base}/arrivals?minutes=60`),
            api("GET", `${base}/conflicts?status=open&limit=50`),
            api("GET", `${base}/alerts?state=firing&limit=50`),
          ]);
          render(att, gates, arrivals, conflicts);
          renderAlerts(alerts, gates);
        } while (again);
      } catch (err) {
        state.textContent = `Could not read the counters: ${err.message}`;
      } finally {
        running = false;
      }
    }

    function render(att, gates, arrivals, conflicts) {
      text("checked-in", `${att.attended} / ${att.registered}`);
      text("inside", String(att.inside));
      text("open-conflicts", String(att.open_conflicts));
      const types = document.querySelector("#ticket-types tbody");
      types.replaceChildren(...(att.ticket_types || []).map((t) =>
        row([t.ticket_type || "(no type)", t.registered, t.admitted, t.inside])));
      const zones = document.querySelector("#zones tbody");
      zones.replaceChildren(...att.zones.map((z) => row([z.zone || "(no zone)", z.inside, z.entries, z.exits])));
      const info = new Map(gates.items.map((g) => [g.id, g]));
      const gateRows = att.gates.map((a) => {
        const g = info.get(a.gate_id) || {};
        const online = g.online === undefined || g.online === null ? "–" : g.online ? "online" : "offline";
        return row([a.name, a.zone || "", a.entries, a.exits, a.rejected, online,
          when(g.last_seen_at || a.last_seen_at), when(g.last_sync_at), opt(g.outbox_depth), opt(g.agent_version)]);
      });
      document.querySelector("#gate-status tbody").replaceChildren(...gateRows);
      const rows = conflicts.items.map((c) => {
        const cell = document.createElement("span");
        if (staff) {
          for (const [action, label] of [["acknowledge", "Acknowledge"], ["revoke_ticket", "Revoke ticket"]]) {
            const b = document.createElement("button");
            b.type = "button";
            b.textContent = label;
            b.className = `resolve-${action}`;
            b.setAttribute("aria-label", `${label}: ${c.kind} of ticket ${c.ticket_serial}`);
            b.addEventListener("click", async () => {
              b.disabled = true;
              try {
                await api("POST", `/api/v1/events/${event}/conflicts/${c.id}/resolve`, { action });
                flash(`Conflict ${c.kind} resolved.`, false);
                refresh();
              } catch (err) { flash(err.message, true); b.disabled = false; }
            });
            cell.appendChild(b);
          }
        }
        return row([when(c.detected_at), c.kind.replaceAll("_", " "), String(c.ticket_serial), cell]);
      });
      if (rows.length === 0) rows.push(row(["–", "No open conflicts", "", ""]));
      document.querySelector("#conflicts tbody").replaceChildren(...rows);
      chart(arrivals);
    }

    const alertTitles = {
      gate_offline: "Gate offline", outbox_depth: "Gate outbox deep", conflict_created: "Unresolved conflicts",
      attendance: "Attendance threshold reached", error_rate: "High share of rejected scans",
    };
    function renderAlerts(alerts, gates) {
      const names = new Map(gates.items.map((g) => [g.id, g.name]));
      const rows = alerts.items.map((a) => {
        const tr = row([when(a.fired_at), alertTitles[a.kind] || a.kind,
          a.subject === "event" ? "Event" : names.get(a.subject) || a.subject]);
        tr.className = "alert-firing";
        tr.dataset.kind = a.kind;
        return tr;
      });
      text("active-alerts", String(alerts.items.length));
      if (rows.length === 0) rows.push(row(["–", "No active alerts", ""]));
      document.querySelector("#alerts tbody").replaceChildren(...rows);
    }

    function chart(arrivals) {
      const svg = document.getElementById("arrivals-chart");
      const ns = "http://www.w3.org/2000/svg";
      const since = new Date(arrivals.since).getTime();
      const counts = new Array(60).fill(0);
      for (const m of arrivals.minutes) {
        const i = Math.floor((new Date(m.minute).getTime() - since) / 60000);
        if (i >= 0 && i < 60) counts[i] += m.entries;
      }
      const total = counts.reduce((a, b) => a + b, 0);
      const peak = Math.max(1, ...counts);
      const w = 720, h = 200, left = 30, bottom = 20, bw = (w - left) / 60;
      const nodes = [];
      const axis = document.createElementNS(ns, "line");
      axis.setAttribute("x1", left); axis.setAttribute("x2", w); axis.setAttribute("y1", h - bottom); axis.setAttribute("y2", h - bottom);
      axis.setAttribute("class", "axis");
      nodes.push(axis);
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", 2); label.setAttribute("y", 12); label.textContent = String(peak);
      nodes.push(label);
      counts.forEach((n, i) => {
        if (!n) return;
        const bar = document.createElementNS(ns, "rect");
        const bh = ((h - bottom - 16) * n) / peak;
        bar.setAttribute("x", left + i * bw + 1);
        bar.setAttribute("y", h - bottom - bh);
        bar.setAttribute("width", Math.max(1, bw - 2));
        bar.setAttribute("height", bh);
        bar.setAttribute("class", "bar");
        const t = document.createElementNS(ns, "title");
        t.textContent = `${new Date(since + i * 60000).toLocaleTimeString()}: ${n}`;
        bar.appendChild(t);
        nodes.push(bar);
      });
      const now = document.createElementNS(ns, "text");
      now.setAttribute("x", w - 40); now.setAttribute("y", h - 4); now.textContent = "now";
      nodes.push(now);
      svg.replaceChildren(...nodes);
      svg.dataset.total = String(total);
      document.getElementById("arrivals-caption").textContent = total
        ? `${total} arrival(s) in the last hour; busiest minute ${Math.max(...counts)}.`
        : "No arrivals in the last hour.";
    }

    const source = new EventSource(`/api/v1/events/${event}/stream`);
    source.onopen = () => { state.textContent = "Live: updates arrive as gates report."; refresh(); };
    source.onerror = () => { state.textContent = "Connection lost; reconnecting…"; };
    for (const kind of ["admission", "conflict", "alert", "changes", "message", "gate"]) {
      source.addEventListener(kind, () => refresh());
    }
    window.addEventListener("pagehide", () => source.close());
    refresh();
  }
})();
