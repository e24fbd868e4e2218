// cimdeploy dashboard: follows a run live. The page is rendered with the run's state; this script
// opens the run's event stream (server-sent events, GET /runs/{id}/events), skips the events the
// page already shows (data-seq) and folds the others into the same markup, the way the server
// folds them (dashboard_view.go). It builds elements with textContent only.
"use strict";
(function () {
  var body = document.body;
  if (!body || body.id !== "run") return;
  var runId = body.getAttribute("data-run");
  var seen = Number(body.getAttribute("data-seq") || 0);
  var stagesEl = document.getElementById("stages");
  var liveEl = document.getElementById("live");
  var logEl = document.getElementById("log");
  var base = "/runs/" + encodeURIComponent(runId);
  var finalStatus = { success: 1, failed: 1, skipped: 1, cancelled: 1 };

  function setStatus(el, status) {
    el.textContent = status;
    el.className = "status " + status;
  }
  // dur reads a Go time.Duration (nanoseconds) as Go prints it, rounded to the millisecond.
  function dur(ns) {
    if (!ns || ns <= 0) return "";
    var ms = Math.round(ns / 1e6);
    if (ms < 1000) return ms + "ms";
    var h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60, s = (ms % 60000) / 1000;
    return (h ? h + "h" : "") + (h || m ? m + "m" : "") + s + "s";
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  }
  function child(parent, attr, name) {
    for (var c = parent.firstElementChild; c; c = c.nextElementSibling) {
      if (c.getAttribute(attr) === name) return c;
    }
    return null;
  }
  function part(li, cls) {
    for (var c = li.firstElementChild; c; c = c.nextElementSibling) {
      if (c.classList.contains(cls)) return c;
    }
    return null;
  }
  function setError(pre, text) {
    pre.textContent = text || "";
    pre.hidden = !text;
  }
  function stage(name) {
    var li = child(stagesEl, "data-stage", name);
    if (li) return li;
    li = el("li", "stage");
    li.setAttribute("data-stage", name);
    li.append(el("span", "name", name), " ", el("span", "status queued", "queued"), " ", el("span", "dur"));
    var err = el("pre", "err");
    err.hidden = true;
    li.append(err, el("ul", "nodes"));
    stagesEl.append(li);
    return li;
  }
  function node(st, name) {
    var ul = part(st, "nodes");
    var li = child(ul, "data-node", name);
    if (li) return li;
    li = el("li");
    li.setAttribute("data-node", name);
    li.append(el("span", "name", name), " ", el("span", "status queued", "queued"), " ", el("span", "dur"), " ", el("span", "note"));
    var err = el("pre", "err");
    err.hidden = true;
    li.append(err);
    var after = ul.firstElementChild;
    while (after && after.getAttribute("data-node") < name) after = after.nextElementSibling;
    ul.insertBefore(li, after); // sorted by name, as the server renders them
    return li;
  }
  function step(st, r) {
    if (!r || !r.node) return;
    var li = node(st, r.node);
    setStatus(part(li, "status"), r.status);
    part(li, "dur").textContent = dur(r.duration);
    part(li, "note").textContent = r.note ? "(" + r.note + ")" : "";
    var text = r.error || "";
    if (r.last_lines && r.last_lines.length) text += "\n" + r.last_lines.join("\n");
    setError(part(li, "err"), text);
  }
  function finishStage(r) {
    var name = r.name || r.stage;
    if (!name) return;
    var li = stage(name);
    setStatus(part(li, "status"), r.status);
    part(li, "dur").textContent = dur(r.duration);
    setError(part(li, "err"), r.error);
    (r.steps || []).forEach(function (s) { step(li, s); });
  }
  function progress(d) {
    var s = d.expected > 0 ? d.done + "/" + d.expected : "";
    if (d.activity) s += (s ? " " : "") + d.activity;
    return s;
  }

  var logTimer = null;
  function refreshLog() {
    if (!logEl || logTimer) return;
    logTimer = setTimeout(function () {
      logTimer = null;
      fetch(base + "/log", { cache: "no-store" }).then(function (resp) {
        return resp.ok ? resp.text() : null;
      }).then(function (text) {
        if (text === null) return;
        var atEnd = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 4;
        logEl.textContent = text;
        if (atEnd) logEl.scrollTop = logEl.scrollHeight;
      }).catch(function () {});
    }, 1000);
  }

  var runStatus = document.getElementById("run-status");
  var finished = !!finalStatus[body.getAttribute("data-status")];
  function apply(ev) {
    var d = ev.data || {};
    switch (ev.event_type) {
      case "RunStarted":
        setStatus(runStatus, "running");
        break;
      case "StageStarted":
        if (d.stage) setStatus(part(stage(d.stage), "status"), "running");
        break;
      case "StageFinished":
        finishStage(d);
        refreshLog();
        break;
      case "StepStarted":
      case "StepFinished":
        if (d.stage) step(stage(d.stage), d.step);
        if (ev.event_type === "StepFinished") refreshLog();
        break;
      case "StepProgress":
        if (d.stage && d.node) part(node(stage(d.stage), d.node), "note").textContent = progress(d);
        break;
      case "RunFinished":
        finished = true;
        setStatus(runStatus, d.status);
        body.setAttribute("data-status", d.status);
        document.getElementById("run-duration").textContent = dur(d.duration);
        setError(document.getElementById("run-error"), d.error);
        document.getElementById("why").hidden = !d.error;
        (d.stages || []).forEach(finishStage);
        refreshLog();
        break;
    }
  }

  if (finished || !body.hasAttribute("data-live") || !window.EventSource) return;
  var es = new EventSource(base + "/events");
  es.onopen = function () { liveEl.textContent = "live"; };
  es.onmessage = function (m) {
    var ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    if (ev.event_type !== "RunFinished" && ev.sequence && ev.sequence <= seen) return;
    seen = Math.max(seen, ev.sequence || 0);
    apply(ev);
    if (finished) {
      es.close();
      liveEl.textContent = "";
    }
  };
  // The run ended without a RunFinished in the stream: the page reloads to show its final state.
  es.addEventListener("end", function () { es.close(); location.reload(); });
  es.onerror = function () {
    liveEl.textContent = es.readyState === EventSource.CLOSED ? "offline: reload to retry" : "reconnecting";
  };
})();
