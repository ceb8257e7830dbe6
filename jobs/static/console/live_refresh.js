/* Live parts of console pages, without a full reload.
 *
 * consoleLive.fetchDoc(url): the page at `url` (same origin, session cookie), parsed.
 * consoleLive.swapParts(doc): replaces every element of this page marked data-live-part="name" by the element of
 *   `doc` with the same name (the server renders both: one truth), and the document title.
 *
 * Change lists whose ModelAdmin sets `live_refresh` (templates/admin/change_list.html renders #live-refresh with
 * data-seconds) re-fetch their own URL every few seconds and swap the results table, the counts, the paginator and
 * the filters; they pause while a row is selected, an action is chosen, a field of the page has the focus, or the
 * tab is hidden. */
(function () {
  "use strict";

  function fetchDoc(url) {
    return fetch(url, {credentials: "same-origin", headers: {"X-Requested-With": "live-refresh"}})
      .then(function (resp) {
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.text();
      })
      .then(function (html) { return new DOMParser().parseFromString(html, "text/html"); });
  }

  function swapParts(doc) {
    document.querySelectorAll("[data-live-part]").forEach(function (el) {
      var name = el.getAttribute("data-live-part");
      var fresh = doc.querySelector('[data-live-part="' + name + '"]');
      if (fresh) el.replaceWith(document.importNode(fresh, true));
    });
    if (doc.title) document.title = doc.title;
  }

  window.consoleLive = {fetchDoc: fetchDoc, swapParts: swapParts};

  // --- change lists -----------------------------------------------------------------------------------
  function busy() {
    if (document.hidden) return "hidden";
    if (document.querySelector("#result_list input.action-select:checked, #action-toggle:checked")) return "selection";
    var action = document.querySelector("#changelist-form select[name=action]");
    if (action && action.value) return "action chosen";
    var active = document.activeElement;
    if (active && (/^(SELECT|TEXTAREA)$/.test(active.tagName) || (active.tagName === "INPUT" &&
        !/^(checkbox|radio|submit|button|reset|hidden)$/.test(active.type)))) return "typing";
    return "";
  }

  function swapList(doc, status) {
    var results = document.querySelector("#changelist-form .results");
    var freshResults = doc.querySelector("#changelist-form .results");
    if (!results !== !freshResults) {  // the list became empty or stopped being empty: the page changes shape
      window.location.reload();
      return;
    }
    if (results) results.replaceWith(document.importNode(freshResults, true));
    [".changelist-footer", "#changelist-filter", "#changelist-search .small.quiet", ".paginator"].forEach(function (sel) {
      var el = document.querySelector(sel), fresh = doc.querySelector(sel);
      if (el && fresh && !el.contains(document.activeElement)) el.replaceWith(document.importNode(fresh, true));
    });
    var counter = document.querySelector(".action-counter"), freshCounter = doc.querySelector(".action-counter");
    if (counter && freshCounter) {
      counter.setAttribute("data-actions-icnt", freshCounter.getAttribute("data-actions-icnt"));
      counter.textContent = freshCounter.textContent;
    }
    var boxes = document.querySelectorAll("tr input.action-select");
    if (boxes.length && window.Actions) window.Actions(boxes);  // rebind Django's select-all and counter
    if (doc.title) document.title = doc.title;
    status.setAttribute("data-refreshed", String(Number(status.getAttribute("data-refreshed") || 0) + 1));
  }

  function startList(status) {
    var seconds = Math.max(1, Number(status.getAttribute("data-seconds")) || 5);
    var inFlight = false;
    function tick() {
      var why = busy();
      if (why) {
        status.textContent = "Auto-refresh paused (" + why + ")";
        return;
      }
      if (inFlight) return;
      inFlight = true;
      fetchDoc(window.location.href).then(function (doc) {
        if (busy()) return;  // the user started something while we fetched
        swapList(doc, status);
        status.textContent = "Auto-refresh every " + seconds + " s, last at " + new Date().toTimeString().slice(0, 8);
      }).catch(function () {
        status.textContent = "Auto-refresh: the last refresh failed; retrying";
      }).then(function () { inFlight = false; });
    }
    status.textContent = "Auto-refresh every " + seconds + " s";
    window.setInterval(tick, seconds * 1000);
  }

  function ready(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }

  ready(function () {
    var status = document.getElementById("live-refresh");
    if (status) startList(status);
  });
})();
