/* pensieve report: the timeline.  Events come from the page's JSON as rows
 * [ms, iso time, kind index, description, message, path, host, container page];
 * a track (histogram) over the current time range -- drag across it or click a bar to zoom in --
 * and the list of the events in range that pass the kind and text filters. */
"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var BINS = 120, LIST_MAX = 1000, PAGE_RE = /^containers\/[A-Za-z0-9_.-]+\.html$/;
  var data = Report.data() || { kinds: [], events: [], derived: false };
  var events = data.events, kinds = data.kinds;
  var full = extent(events), range = full.slice();
  var enabled = kinds.map(function () { return true; });
  var query = "";
  var hay = null;  // lower-cased text of each event, made on the first search

  function extent(evs) {
    if (!evs.length) return [0, 1];
    var lo = evs[0][0], hi = evs[evs.length - 1][0];
    for (var i = 0; i < evs.length; i++) { if (evs[i][0] < lo) lo = evs[i][0]; if (evs[i][0] > hi) hi = evs[i][0]; }
    if (hi <= lo) { lo -= 500; hi += 500; }
    return [lo, hi];
  }
  function iso(ms) {
    var d = new Date(ms);
    return isNaN(d.getTime()) ? "" : d.toISOString();
  }
  function passes(i) {
    var e = events[i];
    if (!enabled[e[2]]) return false;
    if (query) {
      if (!hay) hay = events.map(function (x) { return (x[3] + "\n" + x[4] + "\n" + x[5] + "\n" + x[6] + "\n" + kinds[x[2]]).toLowerCase(); });
      if (hay[i].indexOf(query) < 0) return false;
    }
    return true;
  }

  function kindBoxes() {
    var box = document.getElementById("tl-kinds");
    kinds.forEach(function (k, i) {
      var label = Report.el("label");
      var cb = document.createElement("input");
      cb.type = "checkbox"; cb.checked = true; cb.id = "tl-kind-" + i; cb.className = "tl-kind";
      cb.dataset.kind = k;
      cb.addEventListener("change", function () { enabled[i] = cb.checked; render(); });
      label.appendChild(cb);
      label.appendChild(document.createTextNode(" " + (k || "(none)")));
      box.appendChild(label);
    });
    if (!kinds.length) box.appendChild(Report.el("span", "dim", "no events"));
  }

  function setRange(lo, hi) {
    if (!(hi > lo)) return;
    range = [lo, hi];
    render();
  }

  function drawTrack(counts, width) {
    var svg = document.getElementById("tl-track");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var height = 110, base = 92, top = 6;
    var peak = Math.max.apply(null, counts.concat([1]));
    var bw = width / BINS;
    counts.forEach(function (n, b) {
      if (!n) return;
      var h = Math.max(1, (base - top) * n / peak);
      var r = document.createElementNS(SVGNS, "rect");
      r.setAttribute("class", "bin");
      r.setAttribute("x", String(b * bw)); r.setAttribute("y", String(base - h));
      r.setAttribute("width", String(Math.max(1, bw - 1))); r.setAttribute("height", String(h));
      r.dataset.bin = String(b);
      var t = document.createElementNS(SVGNS, "title");
      t.textContent = n + " events from " + iso(range[0] + b * (range[1] - range[0]) / BINS);
      r.appendChild(t);
      svg.appendChild(r);
    });
    [[0, "start", iso(range[0])], [width, "end", iso(range[1])]].forEach(function (a) {
      var tx = document.createElementNS(SVGNS, "text");
      tx.setAttribute("x", String(a[0])); tx.setAttribute("y", String(height - 4));
      tx.setAttribute("text-anchor", a[1]); tx.textContent = a[2];
      svg.appendChild(tx);
    });
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  }

  function row(e) {
    var tr = document.createElement("tr");
    var t = Report.el("td", "time");
    if (e[7] && PAGE_RE.test(e[7])) {
      var a = Report.el("a", null, e[1]); a.href = e[7]; t.appendChild(a);
    } else t.textContent = e[1];
    tr.appendChild(t);
    tr.appendChild(Report.el("td", null, kinds[e[2]]));
    tr.appendChild(Report.el("td", null, e[3]));
    tr.appendChild(Report.el("td", "msg", e[4]));
    tr.appendChild(Report.el("td", "path", e[5]));
    tr.appendChild(Report.el("td", null, e[6]));
    return tr;
  }

  function render() {
    var svg = document.getElementById("tl-track");
    var width = Math.max(200, svg.clientWidth || 1000);
    var counts = new Array(BINS).fill(0);
    var span = range[1] - range[0];
    var body = document.querySelector("#tl-list tbody");
    var frag = document.createDocumentFragment();
    var shown = 0, inRange = 0, passing = 0;
    for (var i = 0; i < events.length; i++) {
      if (!passes(i)) continue;
      passing++;
      var ms = events[i][0];
      if (ms < range[0] || ms > range[1]) continue;
      inRange++;
      counts[Math.min(BINS - 1, Math.floor((ms - range[0]) / span * BINS))]++;
      if (shown < LIST_MAX) { frag.appendChild(row(events[i])); shown++; }
    }
    body.textContent = "";
    body.appendChild(frag);
    drawTrack(counts, width);
    document.getElementById("tl-from").value = iso(range[0]);
    document.getElementById("tl-to").value = iso(range[1]);
    document.getElementById("tl-status").textContent =
      inRange + " events in range (" + passing + " pass the filters, " + events.length + " in all)" +
      (inRange > shown ? "; the first " + shown + " are listed" : "");
  }

  function trackMs(svg, clientX) {
    var box = svg.getBoundingClientRect();
    var f = Math.min(1, Math.max(0, (clientX - box.left) / Math.max(1, box.width)));
    return range[0] + f * (range[1] - range[0]);
  }

  function brush() {
    var svg = document.getElementById("tl-track");
    var start = null, rect = null;
    svg.addEventListener("mousedown", function (ev) {
      start = ev.clientX;
      rect = document.createElementNS(SVGNS, "rect");
      rect.setAttribute("class", "brush"); rect.setAttribute("y", "0"); rect.setAttribute("height", "92");
      svg.appendChild(rect);
      ev.preventDefault();
    });
    svg.addEventListener("mousemove", function (ev) {
      if (start === null) return;
      var box = svg.getBoundingClientRect(), scale = svg.viewBox.baseVal.width / Math.max(1, box.width);
      var a = (Math.min(start, ev.clientX) - box.left) * scale, b = (Math.max(start, ev.clientX) - box.left) * scale;
      rect.setAttribute("x", String(a)); rect.setAttribute("width", String(Math.max(0, b - a)));
    });
    window.addEventListener("mouseup", function (ev) {
      if (start === null) return;
      var a = trackMs(svg, Math.min(start, ev.clientX)), b = trackMs(svg, Math.max(start, ev.clientX));
      var moved = Math.abs(ev.clientX - start) > 3;
      var bin = ev.target && ev.target.dataset ? ev.target.dataset.bin : undefined;
      start = null;
      if (moved) setRange(a, b);
      else if (bin !== undefined) {
        var w = (range[1] - range[0]) / BINS, lo = range[0] + Number(bin) * w;
        setRange(lo, lo + w);
      } else render();
    });
  }

  function controls() {
    var search = document.getElementById("tl-search"), timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { query = search.value.toLowerCase(); render(); }, 150);
    });
    document.getElementById("tl-apply").addEventListener("click", function () {
      var lo = Date.parse(document.getElementById("tl-from").value);
      var hi = Date.parse(document.getElementById("tl-to").value);
      if (!isNaN(lo) && !isNaN(hi)) setRange(lo, hi);
    });
    document.getElementById("tl-zoom-in").addEventListener("click", function () {
      var q = (range[1] - range[0]) / 4;
      setRange(range[0] + q, range[1] - q);
    });
    document.getElementById("tl-zoom-out").addEventListener("click", function () {
      var h = (range[1] - range[0]) / 2;
      setRange(Math.max(full[0], range[0] - h), Math.min(full[1], range[1] + h));
    });
    document.getElementById("tl-reset").addEventListener("click", function () {
      enabled = kinds.map(function () { return true; });
      document.querySelectorAll("input.tl-kind").forEach(function (cb) { cb.checked = true; });
      search.value = ""; query = "";
      setRange(full[0], full[1]);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var note = document.getElementById("tl-note");
    if (!events.length) note.textContent = "The case has no timestamped events yet.";
    else if (data.derived) note.textContent = "The case's events table is empty: this timeline is made from the " +
      "records' own times (containers created, started, finished; images created; findings).";
    kindBoxes(); controls(); brush(); render();
    window.addEventListener("resize", render);
  });
})();
