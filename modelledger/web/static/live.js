// The catalog follows the log: on each event from /api/v1/log/stream (server-sent events, id = position),
// fetch the same catalog page's results again (partial=1: same filters, escaped by the server) and swap
// them in. No data is turned into HTML here. A link that had the keyboard focus keeps it after the swap.
(function () {
  "use strict";
  var region = document.getElementById("results");
  if (!region || !region.dataset.stream || !window.EventSource) { return; }
  var live = document.getElementById("live");
  var since = Number(region.dataset.since) || 0;
  // An API may name its events by type (event: VersionRegistered) or send them unnamed (message).
  var TYPES = ["ModelRegistered", "VersionRegistered", "ParamsUpdated", "StructureUpdated", "OptimizerUpdated",
    "ModelDeleted", "ModelRestored", "VersionDeleted", "VersionRestored", "ArtifactStored", "ArtifactFailed",
    "ArtifactPurged", "ArtifactRequested", "Tagged", "Untagged", "Described", "MetricsRecorded", "AliasAssigned",
    "AliasRemoved", "event", "message"];
  var timer = null, busy = false, again = false;

  function refresh() {
    timer = null;
    if (busy) { again = true; return; }
    busy = true;
    var focused = document.activeElement && region.contains(document.activeElement) ?
      document.activeElement.getAttribute("href") : null;
    fetch(region.dataset.refresh, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        region.innerHTML = html;
        if (focused) {
          var links = region.querySelectorAll("a[href]");
          for (var i = 0; i < links.length; i++) {
            if (links[i].getAttribute("href") === focused) { links[i].focus(); break; }
          }
        }
        var count = document.getElementById("count");
        if (live) { live.textContent = "Live: updated at #" + since + (count ? " — " + count.textContent : ""); }
        region.dataset.since = String(since);
      })
      .catch(function () { /* the next event tries again */ })
      .then(function () { busy = false; if (again) { again = false; schedule(); } });
  }

  function schedule() { if (!timer) { timer = setTimeout(refresh, 200); } }

  function onEvent(ev) {
    var id = Number(ev.lastEventId);
    if (id && id <= since) { return; }
    if (id) { since = id; }
    schedule();
  }

  var source = new EventSource(region.dataset.stream + "?since=" + encodeURIComponent(String(since)));
  for (var i = 0; i < TYPES.length; i++) { source.addEventListener(TYPES[i], onEvent); }
  source.onerror = function () {
    if (live && source.readyState === EventSource.CLOSED) { live.textContent = "Live updates stopped (reload the page)."; }
  };
})();
