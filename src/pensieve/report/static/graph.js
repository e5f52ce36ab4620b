/* pensieve report: the graph.  Nodes [kind, label, title, page] and edges [a, b, kind] or
 * [a, b, kind, label] (drawn at the edge's middle: the processes of a process.talk) come from
 * the page's JSON; a force-directed layout (springs along edges, repulsion between nodes
 * that are near, found through a grid, and a pull to the centre) is computed here, a few
 * iterations a frame; the SVG pans (drag) and zooms (wheel); a click on a node highlights it and
 * its neighbours and shows it in the side panel, a double click opens a container's page. */
"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var PAGE_RE = /^containers\/[A-Za-z0-9_.-]+\.html$/;
  var ITERATIONS = 300, PER_FRAME = 15, SPRING = 60, CELL = 120;
  var data = Report.data() || { kinds: [], nodes: [], edges: [] };
  var nodes = data.nodes, edges = data.edges, n = nodes.length;
  var x = new Float64Array(n), y = new Float64Array(n), dx = new Float64Array(n), dy = new Float64Array(n);
  var hidden = {}, neighbours = [], circles = [], labels = [], lines = [], edgeLabels = [];
  var view = { x: 0, y: 0, k: 1 }, root = null, selected = -1, iteration = 0;

  for (var i = 0; i < n; i++) neighbours.push([]);
  edges.forEach(function (e, j) { neighbours[e[0]].push([e[1], j]); neighbours[e[1]].push([e[0], j]); });

  function seed() {  // the same start every time: a small linear congruential generator
    var s = 42;
    return function () { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648; };
  }
  function place() {
    var rnd = seed(), radius = 30 * Math.sqrt(n + 1);
    for (var i = 0; i < n; i++) {
      var a = rnd() * 2 * Math.PI, r = radius * Math.sqrt(rnd());
      x[i] = r * Math.cos(a); y[i] = r * Math.sin(a);
    }
    iteration = 0;
  }

  function step(temperature) {
    var i, j, grid = {};
    dx.fill(0); dy.fill(0);
    for (i = 0; i < n; i++) {
      var key = Math.floor(x[i] / CELL) + "," + Math.floor(y[i] / CELL);
      (grid[key] || (grid[key] = [])).push(i);
    }
    for (i = 0; i < n; i++) {
      var cx = Math.floor(x[i] / CELL), cy = Math.floor(y[i] / CELL);
      for (var gx = cx - 1; gx <= cx + 1; gx++) for (var gy = cy - 1; gy <= cy + 1; gy++) {
        var cell = grid[gx + "," + gy];
        if (!cell) continue;
        for (var c = 0; c < cell.length; c++) {
          j = cell[c];
          if (j <= i) continue;
          var ex = x[i] - x[j], ey = y[i] - y[j], d2 = ex * ex + ey * ey + 0.01;
          if (d2 > CELL * CELL) continue;
          var f = SPRING * SPRING / d2;
          dx[i] += ex * f; dy[i] += ey * f; dx[j] -= ex * f; dy[j] -= ey * f;
        }
      }
    }
    for (var k = 0; k < edges.length; k++) {
      var a = edges[k][0], b = edges[k][1];
      var ux = x[b] - x[a], uy = y[b] - y[a], d = Math.sqrt(ux * ux + uy * uy) + 0.01;
      var pull = (d - SPRING) / d * 0.5;
      dx[a] += ux * pull; dy[a] += uy * pull; dx[b] -= ux * pull; dy[b] -= uy * pull;
    }
    for (i = 0; i < n; i++) {
      dx[i] -= x[i] * 0.01; dy[i] -= y[i] * 0.01;
      var m = Math.sqrt(dx[i] * dx[i] + dy[i] * dy[i]);
      if (m > temperature) { dx[i] *= temperature / m; dy[i] *= temperature / m; }
      x[i] += dx[i]; y[i] += dy[i];
    }
  }

  function draw() {
    for (var i = 0; i < n; i++) {
      circles[i].setAttribute("cx", x[i].toFixed(1)); circles[i].setAttribute("cy", y[i].toFixed(1));
      if (labels[i]) { labels[i].setAttribute("x", (x[i] + 7).toFixed(1)); labels[i].setAttribute("y", (y[i] + 3).toFixed(1)); }
    }
    for (var k = 0; k < edges.length; k++) {
      var l = lines[k], e = edges[k];
      l.setAttribute("x1", x[e[0]].toFixed(1)); l.setAttribute("y1", y[e[0]].toFixed(1));
      l.setAttribute("x2", x[e[1]].toFixed(1)); l.setAttribute("y2", y[e[1]].toFixed(1));
      if (edgeLabels[k]) {  // one line per connection, centred on the edge's middle
        var mx = ((x[e[0]] + x[e[1]]) / 2).toFixed(1), t = edgeLabels[k];
        t.setAttribute("x", mx);
        t.setAttribute("y", ((y[e[0]] + y[e[1]]) / 2 - 3 - 5 * (t.childNodes.length - 1)).toFixed(1));
        for (var c = 0; c < t.childNodes.length; c++) t.childNodes[c].setAttribute("x", mx);
      }
    }
  }

  function animate() {
    for (var s = 0; s < PER_FRAME && iteration < ITERATIONS; s++, iteration++) {
      step(Math.max(1, 30 * (1 - iteration / ITERATIONS)));
    }
    draw();
    if (iteration < ITERATIONS) requestAnimationFrame(animate);
    else { fit(); document.body.dataset.graphReady = "1"; }
  }

  function fit() {
    if (!n) return;
    var svg = document.getElementById("g-svg"), box = svg.getBoundingClientRect();
    var lx = Infinity, ly = Infinity, hx = -Infinity, hy = -Infinity;
    for (var i = 0; i < n; i++) { lx = Math.min(lx, x[i]); ly = Math.min(ly, y[i]); hx = Math.max(hx, x[i]); hy = Math.max(hy, y[i]); }
    var w = Math.max(1, box.width), h = Math.max(1, box.height);
    view.k = Math.min(4, 0.9 * Math.min(w / Math.max(1, hx - lx), h / Math.max(1, hy - ly)));
    view.x = w / 2 - view.k * (lx + hx) / 2; view.y = h / 2 - view.k * (ly + hy) / 2;
    transform();
  }
  function transform() { root.setAttribute("transform", "translate(" + view.x + "," + view.y + ") scale(" + view.k + ")"); }

  function build() {
    var svg = document.getElementById("g-svg");
    root = document.createElementNS(SVGNS, "g");
    svg.appendChild(root);
    var edgeLayer = document.createElementNS(SVGNS, "g"), nodeLayer = document.createElementNS(SVGNS, "g");
    root.appendChild(edgeLayer); root.appendChild(nodeLayer);
    edges.forEach(function (e, k) {
      var l = document.createElementNS(SVGNS, "line");
      l.dataset.kind = e[2];
      edgeLayer.appendChild(l); lines.push(l);
      if (e[3]) {
        var t = document.createElementNS(SVGNS, "text");
        t.setAttribute("class", "edge-label"); t.setAttribute("text-anchor", "middle");
        t.dataset.kind = e[2];
        String(e[3]).split("; ").forEach(function (line, m) {
          var span = document.createElementNS(SVGNS, "tspan");
          span.setAttribute("dy", m ? "1.1em" : "0"); span.textContent = line;
          t.appendChild(span);
        });
        edgeLayer.appendChild(t); edgeLabels[k] = t;
        l.classList.add("labelled");
      }
    });
    var labelAll = n <= 400;
    nodes.forEach(function (nd, i) {
      var c = document.createElementNS(SVGNS, "circle");
      c.setAttribute("r", nd[0] === "container" ? "6" : nd[0] === "image" ? "5" : "3.5");
      c.setAttribute("class", "node k-" + nd[0]);
      c.id = "g-node-" + i; c.dataset.i = String(i); c.dataset.kind = nd[0];
      var t = document.createElementNS(SVGNS, "title");
      t.textContent = nd[0] + ": " + nd[2];
      c.appendChild(t);
      c.addEventListener("click", function (ev) { ev.stopPropagation(); select(i); });
      c.addEventListener("dblclick", function () { if (PAGE_RE.test(nd[3])) window.location.href = nd[3]; });
      nodeLayer.appendChild(c); circles.push(c);
      if (labelAll || nd[0] === "container" || nd[0] === "image") {
        var tx = document.createElementNS(SVGNS, "text");
        tx.textContent = nd[1];
        nodeLayer.appendChild(tx); labels[i] = tx;
      }
    });
    panZoom(svg);
  }

  function panZoom(svg) {
    var drag = null;
    svg.addEventListener("mousedown", function (ev) { if (ev.target === svg) drag = [ev.clientX - view.x, ev.clientY - view.y]; });
    window.addEventListener("mousemove", function (ev) { if (drag) { view.x = ev.clientX - drag[0]; view.y = ev.clientY - drag[1]; transform(); } });
    window.addEventListener("mouseup", function () { drag = null; });
    svg.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var box = svg.getBoundingClientRect(), px = ev.clientX - box.left, py = ev.clientY - box.top;
      var f = ev.deltaY < 0 ? 1.2 : 1 / 1.2;
      view.x = px - (px - view.x) * f; view.y = py - (py - view.y) * f; view.k *= f;
      transform();
    }, { passive: false });
    svg.addEventListener("click", function (ev) { if (ev.target === svg) clear(); });
  }

  function clear() {
    selected = -1;
    document.getElementById("g-svg").classList.remove("focus");
    document.querySelectorAll("#g-svg .hl, #g-svg .sel").forEach(function (e) { e.classList.remove("hl", "sel"); });
    var panel = document.getElementById("g-panel");
    panel.textContent = "";
    panel.appendChild(Report.el("p", "dim", "Click a node: it and its neighbours are highlighted; a container opens from here."));
  }

  function select(i) {
    clear();
    selected = i;
    var svg = document.getElementById("g-svg");
    svg.classList.add("focus");
    circles[i].classList.add("hl", "sel");
    if (labels[i]) labels[i].classList.add("hl");
    neighbours[i].forEach(function (p) {
      circles[p[0]].classList.add("hl"); lines[p[1]].classList.add("hl");
      if (edgeLabels[p[1]]) edgeLabels[p[1]].classList.add("hl");
      if (labels[p[0]]) labels[p[0]].classList.add("hl");
    });
    panel(i);
  }

  function panel(i) {
    var nd = nodes[i], box = document.getElementById("g-panel");
    box.textContent = "";
    var h = Report.el("h3");
    h.appendChild(Report.el("span", "legend-dot k-" + nd[0]));
    h.appendChild(document.createTextNode(nd[0] + " " + nd[1]));
    box.appendChild(h);
    box.appendChild(Report.el("p", "id", nd[2]));
    if (PAGE_RE.test(nd[3])) {
      var a = Report.el("a", null, "open the container's page"); a.href = nd[3]; a.id = "g-open";
      box.appendChild(a);
    }
    box.appendChild(Report.el("h3", null, neighbours[i].length + " linked"));
    var ul = Report.el("ul");
    neighbours[i].slice(0, 200).forEach(function (p) {
      var li = Report.el("li"), b = Report.el("a", null, nodes[p[0]][0] + " " + nodes[p[0]][1]);
      b.href = "#"; b.className = "g-neighbour";
      b.addEventListener("click", function (ev) { ev.preventDefault(); select(p[0]); });
      var e = edges[p[1]];
      li.appendChild(b); li.appendChild(Report.el("span", "dim", " (" + e[2] + (e[3] ? ": " + e[3] : "") + ")"));
      ul.appendChild(li);
    });
    box.appendChild(ul);
  }

  function applyHidden() {
    for (var i = 0; i < n; i++) {
      var off = !!hidden[nodes[i][0]];
      circles[i].style.display = off ? "none" : "";
      if (labels[i]) labels[i].style.display = off ? "none" : "";
    }
    edges.forEach(function (e, k) {
      lines[k].style.display = hidden[nodes[e[0]][0]] || hidden[nodes[e[1]][0]] ? "none" : "";
      if (edgeLabels[k]) edgeLabels[k].style.display = lines[k].style.display;
    });
  }

  function controls() {
    var box = document.getElementById("g-kinds");
    var counts = {};
    nodes.forEach(function (nd) { counts[nd[0]] = (counts[nd[0]] || 0) + 1; });
    data.kinds.forEach(function (k) {
      var label = Report.el("label"), cb = document.createElement("input");
      cb.type = "checkbox"; cb.checked = true; cb.id = "g-kind-" + k; cb.className = "g-kind";
      cb.addEventListener("change", function () { hidden[k] = !cb.checked; applyHidden(); });
      label.appendChild(cb); label.appendChild(Report.el("span", "legend-dot k-" + k));
      label.appendChild(document.createTextNode(k + " (" + (counts[k] || 0) + ")"));
      box.appendChild(label);
    });
    var search = document.getElementById("g-search");
    search.addEventListener("change", function () {
      var q = search.value.toLowerCase();
      if (!q) return;
      for (var i = 0; i < n; i++) {
        if ((nodes[i][1] + " " + nodes[i][2]).toLowerCase().indexOf(q) >= 0) { select(i); return; }
      }
    });
    document.getElementById("g-relayout").addEventListener("click", function () { place(); animate(); });
    document.getElementById("g-clear").addEventListener("click", clear);
    document.getElementById("g-status").textContent = n + " nodes, " + edges.length + " edges";
  }

  document.addEventListener("DOMContentLoaded", function () {
    build(); controls(); place();
    if (!n) {
      document.getElementById("g-panel").textContent = "Nothing to draw: the case holds no containers or images.";
      document.body.dataset.graphReady = "1";
      return;
    }
    animate();
  });
})();
