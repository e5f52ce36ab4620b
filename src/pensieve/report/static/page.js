/* pensieve report: what every page shares.  Only ever sets text (textContent), never markup. */
"use strict";
var Report = (function () {
  /** The JSON embedded in the page's <script type="application/json" id="report-data">. */
  function data() {
    var el = document.getElementById("report-data");
    return el ? JSON.parse(el.textContent) : null;
  }
  /** A new element TAG with optional class and text. */
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  /** The containers table of the summary, filtered as one types. */
  function containerFilter() {
    var input = document.getElementById("container-filter");
    var table = document.getElementById("containers");
    if (!input || !table) return;
    input.addEventListener("input", function () {
      var q = input.value.toLowerCase();
      var rows = table.tBodies[0].rows;
      for (var i = 0; i < rows.length; i++) {
        rows[i].hidden = q !== "" && rows[i].textContent.toLowerCase().indexOf(q) < 0;
      }
    });
  }
  document.addEventListener("DOMContentLoaded", containerFilter);
  return { data: data, el: el };
})();
