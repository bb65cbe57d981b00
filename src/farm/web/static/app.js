// The Farm: small progressive enhancements. Every page works without this file; it adds
// auto-submitting switches, charts (TradingView Lightweight Charts) and live updates (SSE).
(function () {
  "use strict";
  var LC = window.LightweightCharts;

  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  function chart(id, height) {
    var el = document.getElementById(id);
    if (!el || !LC) return null;
    return LC.createChart(el, {
      autoSize: true,
      layout: { background: { color: "#ffffff" }, textColor: "#1d2433" },
      grid: { vertLines: { color: "#eef1f6" }, horzLines: { color: "#eef1f6" } },
      timeScale: { timeVisible: false }
    });
  }

  function line(c, points, color, title) {
    var s = c.addSeries(LC.LineSeries, { color: color, lineWidth: 2, title: title || "" });
    s.setData(points);
    return s;
  }

  var charts = {};
  window.farmCharts = charts;  // for tests and the live view

  var dataEl = document.getElementById("chart-data");
  if (dataEl && LC) {
    var data = JSON.parse(dataEl.textContent);
    if (data.equity) {
      var eq = chart("equity-chart");
      if (eq) {
        charts.equity = line(eq, data.equity, "#1f6feb", "agent");
        if (data.benchmark && data.benchmark.length) line(eq, data.benchmark, "#98a2b3", data.benchmarkName);
        eq.timeScale().fitContent();
      }
    }
    if (data.drawdown) {
      var dd = chart("drawdown-chart");
      if (dd) {
        dd.addSeries(LC.AreaSeries, { lineColor: "#b42318", topColor: "rgba(180,35,24,0.05)",
          bottomColor: "rgba(180,35,24,0.35)", invertFilledArea: true }).setData(data.drawdown);
        dd.timeScale().fitContent();
      }
    }
    if (data.price) {
      var pc = chart("price-chart");
      if (pc) {
        var price = line(pc, data.price, "#1d2433");
        if (data.markers && data.markers.length) LC.createSeriesMarkers(price, data.markers);
        pc.timeScale().fitContent();
      }
    }
    if (data.actions) {
      var ac = chart("actions-chart");
      if (ac) {
        var colors = { buy: "#067647", sell: "#b42318", hold: "#98a2b3", mixed: "#b54708" };
        Object.keys(data.actions).forEach(function (name) {
          if (data.actions[name].length) line(ac, data.actions[name], colors[name], name);
        });
        ac.timeScale().fitContent();
      }
    }
    if (data.live) {
      var lc = chart("equity-chart");
      if (lc) { charts.live = line(lc, data.live, "#1f6feb", "equity"); lc.timeScale().fitContent(); }
    }
  }

  // Live pages: fields named by data-field take the event's values; a "progress" stream
  // that ends reloads the page (to show the results); a "paper" stream updates the chart.
  var live = document.querySelector("[data-events]");
  if (live && window.EventSource) {
    var source = new EventSource(live.getAttribute("data-events"));
    var show = function (values) {
      Object.keys(values).forEach(function (key) {
        live.querySelectorAll('[data-field="' + key + '"]').forEach(function (el) {
          el.textContent = values[key] === null ? "–" : String(values[key]);
        });
      });
    };
    source.addEventListener("progress", function (e) {
      var v = JSON.parse(e.data);
      show(v);
      var bar = live.querySelector("progress");
      if (bar) { bar.max = v.total || 1; bar.value = v.done; }
      if (v.status !== "queued" && v.status !== "running") { source.close(); window.location.reload(); }
    });
    source.addEventListener("paper", function (e) {
      var v = JSON.parse(e.data);
      show(v.fields);
      var rows = live.querySelector("[data-rows]");
      if (rows && v.rows !== undefined) rows.innerHTML = v.rows;  // server-rendered, escaped
      if (charts.live && v.point) charts.live.update(v.point);
      if (v.final) {
        source.close();
        live.querySelectorAll("[data-while-live]").forEach(function (el) { el.hidden = true; });
      }
    });
  }
})();
