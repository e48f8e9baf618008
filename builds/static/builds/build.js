// Two small enhancements of the build pages; without JavaScript both pages still work
// (the build page says to reload it, the device page shows how else to ask for an image).
//
// - The device page's form asks the API for an image (POST /api/v1/build, as the
//   Firmware Selector does) and opens the build's page, or shows the API's `detail`.
// - A queued or running build's page polls /api/v1/build/<hash> and shows the queue
//   position and the step; once the build is done or failed it loads its own page again
//   in the background and swaps the content in, so the images or the error appear
//   without a reload.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var RETRY_MS = 5000;

  function words(text) {
    return text.split(/[\s,]+/).filter(Boolean);
  }

  function unique(list) {
    return list.filter(function (item, i) { return list.indexOf(item) === i; });
  }

  // The device page's form -------------------------------------------------------------

  function setUpForm(form) {
    var defaults = JSON.parse(document.getElementById("device-defaults").textContent);
    var version = form.elements.version;
    var packages = form.elements.packages;
    var status = document.getElementById("build-form-status");
    var error = document.getElementById("build-form-error");
    var button = form.querySelector("button[type=submit]");
    var shown = "";

    function fill() {
      // A list the visitor edited stays; an untouched one follows the version.
      if (packages.value.trim() === shown.trim()) {
        shown = (defaults[version.value] || []).join(" ");
        packages.value = shown;
      }
    }

    function fail(message) {
      error.textContent = message;
      error.hidden = false;
      status.textContent = "";
      button.disabled = false;
    }

    version.addEventListener("change", fill);
    fill();
    form.hidden = false;

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      error.hidden = true;
      button.disabled = true;
      status.textContent = "Sending the request…";
      var body = {
        version: version.value,
        target: form.dataset.target,
        profile: form.dataset.profile,
        packages: unique(words(packages.value).concat(words(form.elements.extra.value))),
        // The list is the whole image: defaults left out are removed.
        diff_packages: true,
        client: form.dataset.client
      };
      fetch(form.dataset.api, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(body)
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (answer) {
          if ((response.status === 200 || response.status === 202) && answer.request_hash) {
            status.textContent = "Accepted, opening the build…";
            window.location.assign(form.dataset.buildUrl + answer.request_hash + "/");
          } else {
            fail(answer.detail || "The server answered " + response.status + ".");
          }
        });
      }).catch(function () {
        fail("The server could not be reached. Check the connection and try again.");
      });
    });
  }

  // A build page following its build ---------------------------------------------------

  function followBuild(box) {
    var url = box.dataset.follow;
    var text = box.querySelector(".live-text");
    var badge = document.querySelector(".build-facts .badge");
    box.querySelectorAll(".reload-hint").forEach(function (hint) { hint.hidden = true; });

    function show(answer) {
      var html;
      if (answer.detail === "queued") {
        var ahead = answer.queue_position;
        html = "<strong>Waiting in the queue</strong>: " +
          (ahead ? ahead + " build" + (ahead === 1 ? "" : "s") + " ahead of it" : "next to start");
        setBadge("queued", "Queued");
      } else {
        var step = String(answer.imagebuilder_status || "init").replace(/[^\w]/g, "");
        html = "<strong>Building now</strong>, step <code>" + step + "</code>";
        setBadge("started", "Started");
      }
      text.innerHTML = html + ". This page follows it.";
    }

    function setBadge(status, label) {
      if (!badge) return;
      badge.className = "badge badge-" + status;
      badge.textContent = label;
    }

    function finished() {
      text.textContent = "Finished, loading the result…";
      fetch(window.location.href, { headers: { "Accept": "text/html" } })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var main = document.getElementById("main");
          main.innerHTML = fresh.getElementById("main").innerHTML;
          document.title = fresh.title;
          if (window.asuTables) window.asuTables.init(main);
        })
        .catch(function () {
          text.textContent = "The build finished. Reload this page to see it.";
        });
    }

    function poll() {
      fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 202) {
            return response.json().then(function (answer) {
              show(answer);
              window.setTimeout(poll, POLL_MS);
            });
          }
          if (response.status === 200 || response.status === 500) return finished();
          if (response.status === 404) {
            text.textContent = "This build is no longer on the server: it expired or was deleted.";
            return undefined;
          }
          // 503 and the like: the server says when to ask again.
          var wait = parseInt(response.headers.get("Retry-After"), 10);
          window.setTimeout(poll, wait > 0 ? wait * 1000 : RETRY_MS);
          return undefined;
        })
        .catch(function () { window.setTimeout(poll, RETRY_MS); });
    }

    window.setTimeout(poll, POLL_MS);
  }

  var form = document.getElementById("build-form");
  if (form && window.fetch) setUpForm(form);
  var box = document.querySelector("[data-follow]");
  if (box && window.fetch) followBuild(box);
})();
