// The console dashboard: re-fetches its panel every 10 s (and when a range is chosen) without reloading the page.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root) { return; }
  var url = root.getAttribute("data-panel-url");
  var range = root.getAttribute("data-range") || "hour";
  function refresh() {
    fetch(url + "?range=" + encodeURIComponent(range), {credentials: "same-origin"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) { root.innerHTML = html; root.setAttribute("data-refreshed", Date.now()); })
      .catch(function () { var live = document.getElementById("dash-live"); if (live) { live.textContent = "(refresh failed; retrying)"; } });
  }
  root.addEventListener("click", function (e) {
    var a = e.target.closest("a[data-range]");
    if (!a) { return; }
    e.preventDefault();
    range = a.getAttribute("data-range");
    history.replaceState(null, "", "?range=" + range);
    refresh();
  });
  setInterval(refresh, 10000);
})();
