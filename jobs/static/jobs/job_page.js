/* The job page (templates/admin/jobs/job/change_form.html): one truth, updated live.
 *
 * The log is exactly the job's stored events: the stream is opened with ?last_event_id=<the id before the shown
 * window> and replays every stored event after it, then follows; the browser's EventSource reconnects by itself
 * with Last-Event-ID, so nothing is lost, and an id at or below the last one shown is never drawn twice.
 * Everything else (subtitle, panel, fields, signals) is re-rendered by the server: each event schedules a fetch
 * of this page and the swap of its data-live-part elements (consoleLive, static/console/live_refresh.js). */
(function () {
  "use strict";
  var TERMINAL = ["COMPLETED", "FAILED", "CANCELLED"];

  function describe(kind, d) {
    if (kind === "state") {
      var text = d.state;
      if (d.waiting_for && d.waiting_for.length) text += ", waiting for " + d.waiting_for.join(" or ");
      if (d.wake_at) text += " until " + d.wake_at;
      if (d.error) text += ": " + d.error;
      return text;
    }
    if (kind === "progress") return d.progress + "%" + (d.step ? " - " + d.step : "");
    if (kind === "log") {
      var extra = Object.keys(d).filter(function (k) { return k !== "message" && k !== "at"; }).map(function (k) {
        var v = d[k];
        return k + ": " + (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v));
      });
      return String(d.message) + (extra.length ? "  (" + extra.join(", ") + ")" : "");
    }
    var rest = {};
    Object.keys(d).forEach(function (k) { if (k !== "at") rest[k] = d[k]; });
    if (d.name && d.state) return d.name + ": " + d.state;  // e.g. a workflow step
    return JSON.stringify(rest);
  }

  function start() {
    var panel = document.getElementById("job-live");
    if (!panel || !window.EventSource || !window.consoleLive) return;
    var log = document.getElementById("job-log"), status = document.getElementById("job-live-status");
    var lastId = 0, source = null, pending = false, inFlight = false, finished = false;

    function refresh() {
      if (inFlight) { pending = true; return; }
      inFlight = true; pending = false;
      window.consoleLive.fetchDoc(window.location.pathname).then(function (doc) {
        window.consoleLive.swapParts(doc);
      }).catch(function () {
        pending = true;
      }).then(function () {
        inFlight = false;
        if (pending) window.setTimeout(refresh, 300);
      });
    }

    function append(e) {
      var id = Number(e.lastEventId);
      if (!id || id <= lastId) return;  // a stored event is drawn once
      lastId = id;
      var d = JSON.parse(e.data);
      var li = document.createElement("li");
      li.className = "kind-" + e.type;
      li.setAttribute("data-id", String(id));
      var at = document.createElement("span");
      at.className = "at";
      at.textContent = d.at ? d.at.slice(11, 19) : "";
      if (d.at) at.title = d.at;
      var kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = e.type;
      var text = document.createElement("span");
      text.className = "text";
      text.textContent = describe(e.type, d);
      li.appendChild(at); li.appendChild(kind); li.appendChild(text);
      var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(li);
      if (atBottom) log.scrollTop = log.scrollHeight;
      if (e.type === "state" && TERMINAL.indexOf(d.state) >= 0) {
        finished = true;
        source.close();
        status.textContent = "(finished)";
      }
      refresh();
    }

    source = new EventSource(panel.getAttribute("data-events-url"));
    source.onopen = function () { if (!finished) status.textContent = "(live)"; };
    source.onerror = function () {
      if (!finished) status.textContent = "(reconnecting...)";
    };
    ["state", "progress", "log", "step"].forEach(function (kind) { source.addEventListener(kind, append); });
    // A job already finished when the page was drawn: its stream replays the log and closes.
    if (panel.getAttribute("data-terminal") === "1") status.textContent = "(finished)";
  }

  if (document.readyState !== "loading") start(); else document.addEventListener("DOMContentLoaded", start);
})();
