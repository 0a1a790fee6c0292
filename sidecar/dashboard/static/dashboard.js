// The dashboard page: polls its three feeds and fills the panels (text only, no HTML from a feed).
"use strict";

(function () {
  const api = window.MirApi;
  const el = api.el;

  function text(id, value) {
    document.getElementById(id).textContent = value;
  }

  function keyValueRows(tableId, emptyId, entries, format) {
    const rows = entries.map(function (entry) {
      const row = el("tr");
      row.appendChild(el("th", "", entry[0]));
      row.appendChild(el("td", "num", format(entry[0], entry[1])));
      return row;
    });
    api.fill(document.querySelector("#" + tableId + " tbody"), rows);
    document.getElementById(emptyId).hidden = rows.length > 0;
  }

  // Minor units as the currency shows them: two decimals but for the zero-decimal ones.
  const ZERO_DECIMAL = new Set(["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg",
    "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]);

  function money(currency, minor) {
    const digits = ZERO_DECIMAL.has(currency) ? 0 : 2;
    const amount = minor / Math.pow(10, digits);
    const shown = amount.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
    return shown + " " + currency.toUpperCase();
  }

  function renderOverview(data) {
    const chart = data.chart || [];
    const last = chart.length ? chart[chart.length - 1] : null;
    text("hour-rps", last ? last.rps.toFixed(2) : "–");
    text("hour-requests", data.hour.requests);
    text("hour-with", api.percent(data.hour.success_rate.with_rescues));
    text("hour-without", api.percent(data.hour.success_rate.without_rescues));
    text("hour-rescued", data.hour.rescued);
    window.MirApiChart.draw(document.getElementById("chart"), chart);
    const day = data.day;
    if (day) {
      keyValueRows("rescues", "rescues-empty", Object.entries(day.rescued), function (_, n) { return n; });
      keyValueRows("capital", "capital-empty", Object.entries(day.rescued_capital), money);
    } else {
      text("rescues-empty", "unavailable (" + data.day_unavailable + ")");
      text("capital-empty", "unavailable (" + data.day_unavailable + ")");
    }
    const budgets = data.llm.budgets || [];
    keyValueRows("llm", "llm-empty", budgets.map(function (b) { return [b.name, b]; }),
      function (_, b) { return b.spent + " / " + b.limit; });
    text("llm-empty", data.llm.note || "none");
  }

  function stateBadge(state) {
    return el("span", "badge " + state.replace("_", "-"), state.replace("_", " "));
  }

  function renderHealth(data) {
    const breakers = data.breakers || [];
    api.fill(document.querySelector("#breakers tbody"), breakers.map(function (b) {
      const row = el("tr");
      row.appendChild(el("td", "host", b.host));
      const state = el("td");
      state.appendChild(stateBadge(b.state));
      row.appendChild(state);
      row.appendChild(el("td", "num", b.failures));
      return row;
    }));
    const breakersEmpty = document.getElementById("breakers-empty");
    breakersEmpty.hidden = breakers.length > 0;
    if (data.breakers_unavailable) {
      breakersEmpty.hidden = false;
      breakersEmpty.textContent = "unavailable (" + data.breakers_unavailable + ")";
    }

    const jobs = data.jobs;
    text("jobs-depth", jobs.depth === null ? "?" : jobs.depth);
    const failed = jobs.failed || [];
    text("jobs-failed", jobs.failed === null ? "?" : failed.length + (jobs.failed_more ? "+" : ""));
    api.fill(document.querySelector("#failed-jobs tbody"), failed.map(function (job) {
      const row = el("tr");
      row.appendChild(el("td", "mono", job.id));
      row.appendChild(el("td", "num", job.attempts));
      row.appendChild(el("td", "num", job.response_status === null ? "–" : job.response_status));
      row.appendChild(el("td", "", job.last_error || ""));
      return row;
    }));

    const routes = data.routes || [];
    api.fill(document.querySelector("#routes tbody"), routes.map(function (route) {
      const row = el("tr");
      row.appendChild(el("td", "mono", route.name));
      row.appendChild(el("td", "", route.strategy));
      const cell = el("td");
      for (const endpoint of route.endpoints) {
        const item = el("span", "endpoint");
        item.appendChild(el("span", "host", endpoint.host));
        item.appendChild(stateBadge(endpoint.state));
        cell.appendChild(item);
      }
      row.appendChild(cell);
      return row;
    }));
    document.getElementById("routes-empty").hidden = routes.length > 0;
  }

  function renderEvents(data) {
    const select = document.getElementById("filter-route");
    const chosen = select.value;
    const names = [""].concat(data.routes || []);
    if (chosen && names.indexOf(chosen) < 0) {
      names.push(chosen);
    }
    const current = Array.from(select.options).map(function (o) { return o.value; });
    if (current.join("\n") !== names.join("\n")) {
      select.replaceChildren(...names.map(function (name) {
        const option = el("option", "", name || "any");
        option.value = name;
        return option;
      }));
      select.value = chosen;
    }
    const events = data.events || [];
    api.fill(document.querySelector("#events tbody"), events.map(function (event) {
      const row = el("tr", "kind-" + event.kind);
      row.appendChild(el("td", "mono", event.time.slice(0, 19).replace("T", " ")));
      row.appendChild(el("td", "", event.kind));
      row.appendChild(el("td", "", event.reason || ""));
      row.appendChild(el("td", "mono", event.route || ""));
      row.appendChild(el("td", "host", event.host || ""));
      row.appendChild(el("td", "num", event.status === null ? "" : event.status));
      row.appendChild(el("td", "num", event.attempts === null ? "" : event.attempts));
      const cell = el("td", "mono");
      if (event.request_id) {
        const link = el("a", "", event.request_id);
        link.href = "/_mirapi/ui/requests/" + encodeURIComponent(event.request_id);
        cell.appendChild(link);
      } else if (event.detail) {
        cell.textContent = event.detail;
      }
      row.appendChild(cell);
      return row;
    }));
    const empty = document.getElementById("events-empty");
    empty.hidden = events.length > 0;
    empty.textContent = data.unavailable ? "unavailable (" + data.unavailable + ")" : "no event yet";
  }

  function eventsPath() {
    const query = new URLSearchParams();
    const kind = document.getElementById("filter-kind").value;
    const route = document.getElementById("filter-route").value;
    if (kind) {
      query.set("kind", kind);
    }
    if (route) {
      query.set("route", route);
    }
    const text = query.toString();
    return "/_mirapi/ui/feed/events" + (text ? "?" + text : "");
  }

  async function overview() {
    const data = await api.get("/_mirapi/ui/feed/overview");
    if (data && !data.failed) {
      renderOverview(data);
    }
  }

  async function health() {
    const data = await api.get("/_mirapi/ui/feed/health");
    if (data && !data.failed) {
      renderHealth(data);
    }
  }

  async function events() {
    const data = await api.get(eventsPath());
    if (data && !data.failed) {
      renderEvents(data);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const ms = Number(document.getElementById("dashboard").dataset.pollMs) || 1000;
    api.poll(overview, ms);
    api.poll(health, ms);
    api.poll(events, ms);
    document.getElementById("filter-kind").addEventListener("change", events);
    document.getElementById("filter-route").addEventListener("change", events);
  });
})();
