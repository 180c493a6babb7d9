// Redraws the live part of the page every few seconds from the same URL, without
// a reload (the scroll position and an open retry form stay). No framework, no build.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh")) || 5;
  function busy(live) {
    var el = document.activeElement;
    return el && el !== document.body && live.contains(el) && el.tagName === "BUTTON";
  }
  function refresh() {
    fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        var live = document.getElementById("live");
        if (fresh && live && !busy(live)) {
          live.replaceWith(document.importNode(fresh, true));
        }
      })
      .catch(function () { /* the next round tries again */ })
      .finally(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  window.setTimeout(refresh, seconds * 1000);
})();
