// The "Request this build" buttons of /upgrade/: POST the build request the upgrade
// check prepared, then link to the build's page, where its progress shows.
(function () {
  "use strict";

  document.querySelectorAll("button.build-button").forEach(function (button) {
    var status = button.parentNode.querySelector(".build-status");
    button.addEventListener("click", function () {
      button.disabled = true;
      status.textContent = "Asking for the build…";
      fetch("/api/v1/build", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: button.dataset.build,
      })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          if (!answer.request_hash) {
            status.textContent = answer.detail || "The server refused the build.";
            button.disabled = false;
            return;
          }
          status.textContent = answer.status === 200 ? "Built: " : "Queued: ";
          var link = document.createElement("a");
          link.href = "/builds/" + answer.request_hash + "/";
          link.textContent = "follow the build";
          status.appendChild(link);
        })
        .catch(function () {
          status.textContent = "The server did not answer; try again.";
          button.disabled = false;
        });
    });
  });
})();
