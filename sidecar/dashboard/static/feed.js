// The dashboard's link to its feeds: GET with the client key, and the key prompt.
// The key lives in this tab's sessionStorage only (never a cookie, never localStorage)
// and goes out as X-MirApi-Key on feed requests, same-origin only.
"use strict";

(function () {
  const STORAGE = "mirapi.key";
  const pollers = [];
  let waiting = false;

  function storedKey() {
    try {
      return window.sessionStorage.getItem(STORAGE);
    } catch (error) {
      return null;
    }
  }

  function setStatus(text, kind) {
    const status = document.getElementById("status");
    if (status) {
      status.textContent = text;
      status.className = "status " + (kind || "");
    }
  }

  function showPrompt(message) {
    waiting = true;
    const prompt = document.getElementById("key-prompt");
    const main = document.getElementById("main");
    const error = document.getElementById("key-error");
    prompt.hidden = false;
    main.hidden = true;
    error.hidden = !message;
    error.textContent = message || "";
    setStatus("client key needed", "warn");
    document.getElementById("key-input").focus();
  }

  function hidePrompt() {
    document.getElementById("key-prompt").hidden = true;
    document.getElementById("main").hidden = false;
    document.getElementById("forget-key").hidden = storedKey() === null;
  }

  // GET a feed as JSON: null when it could not be had (the status line says why).
  async function get(path) {
    if (waiting) {
      return null;
    }
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) {
      headers["X-MirApi-Key"] = key;
    }
    let response;
    try {
      response = await fetch(path, {
        headers: headers,
        credentials: "omit",
        cache: "no-store",
        mode: "same-origin",
        redirect: "error",
      });
    } catch (error) {
      setStatus("sidecar unreachable", "bad");
      return null;
    }
    if (response.status === 401) {
      showPrompt(key ? "That key was refused (revoked, or mistyped)." : "");
      return null;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const code = body && body.error ? body.error.code || "" : "";
      setStatus("sidecar answered " + response.status + (code ? " " + code : ""), "bad");
      return { failed: response.status, code: code };
    }
    const now = new Date();
    setStatus("live · " + now.toISOString().slice(11, 19) + " UTC", "ok");
    return body;
  }

  // Call `tick` now and every `ms` milliseconds after it finished; paused while a key is asked for.
  function poll(tick, ms) {
    const poller = { tick: tick, ms: ms, timer: null };
    const run = async function () {
      poller.timer = null;
      if (!waiting) {
        try {
          await tick();
        } catch (error) {
          setStatus("dashboard error: " + error.message, "bad");
        }
      }
      poller.timer = window.setTimeout(run, ms);
    };
    poller.run = run;
    pollers.push(poller);
    run();
  }

  function resume() {
    waiting = false;
    hidePrompt();
    for (const poller of pollers) {
      if (poller.timer !== null) {
        window.clearTimeout(poller.timer);
      }
      poller.run();
    }
  }

  // A small DOM builder: text only, never HTML from a feed.
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + "%";
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.getElementById("key-form").addEventListener("submit", function (event) {
      event.preventDefault();
      const value = document.getElementById("key-input").value.trim();
      if (!value) {
        return;
      }
      try {
        window.sessionStorage.setItem(STORAGE, value);
      } catch (error) {
        showPrompt("This browser keeps no session storage: the key cannot be kept.");
        return;
      }
      document.getElementById("key-input").value = "";
      resume();
    });
    document.getElementById("forget-key").addEventListener("click", function () {
      try {
        window.sessionStorage.removeItem(STORAGE);
      } catch (error) {
        // nothing kept, nothing to forget
      }
      window.location.reload();
    });
    document.getElementById("forget-key").hidden = storedKey() === null;
  });

  window.MirApi = { get: get, poll: poll, el: el, fill: fill, percent: percent, setStatus: setStatus };
})();
