// A request record's page: the record feed, as `mirapi replay ID --show` shows it (no body).
"use strict";

(function () {
  const api = window.MirApi;
  const el = api.el;
  const LABELS = [
    ["request_id", "request id"], ["time", "time (UTC)"], ["method", "method"],
    ["route", "route"], ["url", "url"], ["status", "status"], ["rescue", "rescue"],
    ["headers", "headers"], ["body", "body"], ["withheld", "not recorded"],
  ];

  function shown(name, value) {
    if (name === "headers") {
      return value.length ? value.map(function (h) { return h[0] + ": " + h[1]; }).join("\n") : "none";
    }
    if (name === "withheld") {
      return value.length ? value.join(", ") : "nothing";
    }
    return value === null || value === undefined ? "none" : value;
  }

  async function load() {
    const id = document.getElementById("record").dataset.requestId;
    const data = await api.get("/_mirapi/ui/feed/requests/" + encodeURIComponent(id));
    if (!data) {
      return;
    }
    const missing = document.getElementById("record-missing");
    if (data.failed) {
      missing.hidden = false;
      missing.textContent = data.failed === 404
        ? "No record of this request: unknown id, or older than the newest kept."
        : "The record cannot be read now (" + data.failed + " " + data.code + ").";
      return;
    }
    missing.hidden = true;
    api.fill(document.querySelector("#record-fields tbody"), LABELS.map(function (pair) {
      const row = el("tr");
      row.appendChild(el("th", "", pair[1]));
      row.appendChild(el("td", pair[0] === "headers" ? "mono pre" : "mono", shown(pair[0], data[pair[0]])));
      return row;
    }));
  }

  document.addEventListener("DOMContentLoaded", function () {
    // A record does not change: read once (and again once a key is given).
    api.poll(load, 60000);
  });
})();
