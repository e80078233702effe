// runstate dashboard: small behaviours on top of htmx. Every page works without this file;
// it only makes times easier to read.
"use strict";

(function () {
  // A <time datetime="…Z"> shows "3 min ago" (rendered on the server); its tooltip gives
  // the moment in the reader's own time zone rather than UTC.
  function localiseTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (element) {
      var moment = new Date(element.getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        element.title = moment.toLocaleString();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localiseTimes(document);
  });
  // After the live refresh swaps the rows in.
  document.addEventListener("htmx:afterSettle", function (event) {
    localiseTimes(event.target);
  });
})();
