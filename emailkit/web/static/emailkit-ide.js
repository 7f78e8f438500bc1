// emailkit's GraphiQL page: an API-key field plus a fetcher that authenticates every operation.
// React, ReactDOM and GraphiQL are the UMD builds vendored under /static/graphiql/.
(function () {
  "use strict";

  var STORAGE_KEY = "emailkit.apiKey";
  var DEFAULT_QUERY = [
    "# Paste your API key in the field above, then press the run button (Ctrl-Enter).",
    "# No key yet? emailkit create-api-key --name me --role admin",
    "{",
    "  viewer {",
    "    name",
    "    role",
    "  }",
    "  lists(first: 10) {",
    "    totalCount",
    "    edges {",
    "      node {",
    "        id",
    "        name",
    "      }",
    "    }",
    "  }",
    "}",
    "",
  ].join("\n");

  var keyInput = document.getElementById("api-key");
  var toggle = document.getElementById("api-key-toggle");
  var forget = document.getElementById("api-key-forget");
  var status = document.getElementById("api-key-status");
  var bar = document.getElementById("emailkit-bar");
  var container = document.getElementById("graphiql");

  // Storage can be unavailable (privacy modes, sandboxed frames); the page still works for this visit.
  function loadKey() {
    try {
      return window.localStorage.getItem(STORAGE_KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function saveKey(key) {
    try {
      if (key) {
        window.localStorage.setItem(STORAGE_KEY, key);
      } else {
        window.localStorage.removeItem(STORAGE_KEY);
      }
      return true;
    } catch (e) {
      return false;
    }
  }

  // The endpoint is wherever this page was served from, so a reverse proxy under a path prefix works too.
  function endpoint(protocol) {
    var url = new URL(window.location.pathname, window.location.origin);
    if (protocol) {
      url.protocol = protocol;
    }
    return url.toString();
  }

  function makeFetcher(key) {
    var auth = key ? { Authorization: "Bearer " + key } : {};
    return GraphiQL.createFetcher({
      url: endpoint(),
      headers: auth,
      // Subscriptions use graphql-transport-ws; the server reads the key from connection_init.
      subscriptionUrl: endpoint(window.location.protocol === "https:" ? "wss:" : "ws:"),
      wsConnectionParams: auth,
      // emailkit answers plain JSON; multipart incremental delivery would only add a round of parsing.
      enableIncrementalDelivery: false,
    });
  }

  var root = ReactDOM.createRoot(container);
  var appliedKey = null;

  function render(key) {
    if (key === appliedKey) {
      return;
    }
    appliedKey = key;
    // A new fetcher makes GraphiQL introspect again, so the docs appear as soon as a valid key is entered.
    root.render(
      React.createElement(GraphiQL, {
        fetcher: makeFetcher(key),
        defaultQuery: DEFAULT_QUERY,
        shouldPersistHeaders: false,
      })
    );
  }

  function apply() {
    var key = keyInput.value.trim();
    var stored = saveKey(key);
    if (!key) {
      status.textContent = "No key: operations will be refused (401).";
      status.dataset.state = "missing";
    } else {
      status.textContent = stored ? "Key saved in this browser." : "Key in use for this visit (storage unavailable).";
      status.dataset.state = "set";
    }
    render(key);
  }

  var pending = null;
  keyInput.addEventListener("input", function () {
    window.clearTimeout(pending);
    pending = window.setTimeout(apply, 250);
  });
  bar.addEventListener("submit", function (event) {
    event.preventDefault();
    window.clearTimeout(pending);
    apply();
  });
  toggle.addEventListener("click", function () {
    var hidden = keyInput.type === "password";
    keyInput.type = hidden ? "text" : "password";
    toggle.textContent = hidden ? "Hide" : "Show";
    toggle.setAttribute("aria-pressed", String(hidden));
  });
  forget.addEventListener("click", function () {
    window.clearTimeout(pending);
    keyInput.value = "";
    apply();
  });

  keyInput.value = loadKey();
  apply();
})();
