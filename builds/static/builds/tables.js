// Filter and sort the long tables (manifest, targets, profiles) in place.
// The pages work without it: the tools stay hidden and the tables keep server order.
(function () {
  "use strict";

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function rowsOf(table) {
    return Array.prototype.slice.call(table.tBodies[0].rows);
  }

  function setUpFilter(input) {
    var table = document.getElementById(input.dataset.filterTable);
    var counter = document.getElementById(input.dataset.filterCount);
    if (!table) return;
    var rows = rowsOf(table);
    var texts = rows.map(function (row) { return row.textContent.toLowerCase(); });
    var tools = input.closest(".table-tools");
    if (tools) tools.hidden = false;

    function apply() {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      rows.forEach(function (row, i) {
        var match = words.every(function (word) { return texts[i].indexOf(word) !== -1; });
        row.hidden = !match;
        if (match) shown += 1;
      });
      if (counter) {
        counter.textContent = words.length ? shown + " of " + rows.length + " shown" : "";
      }
    }
    input.addEventListener("input", apply);
    apply();  // the browser may restore a typed value on back navigation
  }

  function setUpSorting(table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, column) {
      if (!th.dataset.sort) return;
      // A button inside the header, so the sort is reachable by keyboard and announced.
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.innerHTML = th.innerHTML;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var rows = rowsOf(table);
        rows.sort(function (a, b) {
          var x = a.cells[column].textContent.trim();
          var y = b.cells[column].textContent.trim();
          return ascending ? collator.compare(x, y) : collator.compare(y, x);
        });
        var body = table.tBodies[0];
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  // build.js calls it again on the content it swaps in.
  window.asuTables = {
    init: function (root) {
      root.querySelectorAll("input[data-filter-table]").forEach(setUpFilter);
      root.querySelectorAll("table[data-sortable]").forEach(setUpSorting);
    }
  };
  window.asuTables.init(document);
})();
