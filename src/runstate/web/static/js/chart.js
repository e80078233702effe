// runstate: the response-time chart of a monitor's page, drawn with uPlot.
// The page works without this file: the same points are in a table under the chart, and the
// range links load the page again with ?range=. With it, the range links fetch the points
// from /monitors/{id}/response-times.json and redraw the chart and the table in place.
"use strict";

(function () {
  const box = document.getElementById("chart");
  const embedded = document.getElementById("chart-data");
  if (!box || !embedded || typeof uPlot === "undefined") {
    return;
  }
  const DASH = "\u2013";
  let plot = null;

  function colour(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function ms(value) {
    return value == null ? DASH : Math.round(value) + " ms";
  }

  function utcText(seconds) {
    return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ");
  }

  function options(series) {
    const raw = series.resolution === "raw";
    const axis = { stroke: colour("--muted"), grid: { stroke: colour("--chart-grid") } };
    return {
      width: Math.max(box.clientWidth, 160),
      height: 260,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true } },
      series: [
        { value: (u, ts) => (ts == null ? DASH : utcText(ts) + " UTC") },
        {
          label: raw ? "Response time" : "Average",
          stroke: colour("--chart-avg"),
          width: 2,
          value: (u, v) => ms(v),
        },
        {
          label: "95th percentile",
          stroke: colour("--chart-p95"),
          width: 1,
          dash: [4, 3],
          show: !raw,
          value: (u, v) => ms(v),
        },
      ],
      axes: [axis, Object.assign({ size: 64, values: (u, ticks) => ticks.map(ms) }, axis)],
    };
  }

  function draw(series) {
    if (plot) {
      plot.destroy();
      plot = null;
    }
    box.textContent = "";
    if (series.x.length === 0) {
      box.classList.remove("drawn");
      box.textContent = "No response times in the last " + series.range + ".";
      return;
    }
    box.classList.add("drawn");
    plot = new uPlot(options(series), [series.x, series.avg, series.p95], box);
  }

  function fillTable(series) {
    const details = document.querySelector(".chart-table");
    const body = details && details.querySelector("tbody");
    const summary = details && details.querySelector("summary");
    if (!body || !summary) {
      return; // the page had no points: a reload shows the table of the new range
    }
    body.textContent = "";
    for (let i = series.x.length - 1; i >= 0; i -= 1) {
      const row = body.insertRow();
      row.insertCell().textContent = utcText(series.x[i]);
      for (const value of [series.avg[i], series.p95[i]]) {
        const cell = row.insertCell();
        cell.className = "num";
        cell.textContent = ms(value);
      }
    }
    const n = series.x.length;
    summary.textContent = "The figures as a table (" + n + " point" + (n === 1 ? "" : "s") + ")";
  }

  function describe(series) {
    const note = document.getElementById("chart-note");
    if (!note) {
      return;
    }
    const width = series.bucket_seconds;
    const bucket = width >= 86400 ? width / 86400 + " d" : width >= 3600 ? width / 3600 + " h" : width / 60 + " min";
    note.textContent =
      series.resolution === "raw"
        ? "Each check, as measured. Times are UTC."
        : "Average and 95th percentile of each " + bucket + ", from the " + series.resolution +
          "ly rollups. Times are UTC.";
  }

  async function show(range, link) {
    const answer = await fetch(box.dataset.src + "?range=" + encodeURIComponent(range), {
      credentials: "same-origin",
      headers: { accept: "application/json" },
    });
    if (!answer.ok) {
      window.location.href = link.href; // signed out, or gone: let the page say so
      return;
    }
    const series = await answer.json();
    draw(series);
    fillTable(series);
    describe(series);
    for (const other of document.querySelectorAll(".ranges a")) {
      other.removeAttribute("aria-current");
    }
    link.setAttribute("aria-current", "true");
    history.replaceState(null, "", "?range=" + encodeURIComponent(range));
  }

  for (const link of document.querySelectorAll(".ranges a[data-range]")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      show(link.dataset.range, link).catch(() => {
        window.location.href = link.href;
      });
    });
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      if (plot) {
        plot.setSize({ width: Math.max(box.clientWidth, 160), height: 260 });
      }
    }, 150);
  });

  draw(JSON.parse(embedded.textContent));
})();
