/*
 * Status banner for your own product (served at /status/embed.js). One tag:
 *   <script src="https://status.example.com/status/embed.js" data-components="checkout,api" async></script>
 * data-components: service slugs (all public components when absent); data-refresh: seconds between
 * checks (default 60); data-position: "top" (default) or "bottom".
 * No dependencies, no cookies, no eval, no markup strings: elements are built with the DOM API and
 * styled through element.style (CSSOM), which a strict Content-Security-Policy allows. The host's CSP
 * needs this origin in script-src and connect-src. Dismissals last for the browser tab (sessionStorage).
 */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector('script[src*="/status/embed.js"]');
  if (!script) return;
  var base = new URL(script.src, location.href);
  var components = (script.getAttribute("data-components") || "").replace(/\s+/g, "");
  var refresh = Math.max(1, parseFloat(script.getAttribute("data-refresh")) || 60) * 1000;
  var bottom = script.getAttribute("data-position") === "bottom";
  var url = base.origin + "/status/api/embed.json" + (components ? "?components=" + encodeURIComponent(components) : "");
  var COLORS = { critical: "#b42318", major: "#b54708", minor: "#8a6100", none: "#475467", maintenance: "#175cd3" };
  var STORE = "status-embed-dismissed";
  var dismissed = load();
  var region, shown = "";

  function load() {
    try { return JSON.parse(sessionStorage.getItem(STORE)) || []; } catch (e) { return []; }
  }
  function save() {
    try { sessionStorage.setItem(STORE, JSON.stringify(dismissed.slice(-50))); } catch (e) { /* storage off */ }
  }
  function css(el, styles) {
    for (var name in styles) el.style.setProperty(name, styles[name]);
    return el;
  }
  function el(tag, styles, text) {
    var node = css(document.createElement(tag), styles || {});
    if (text) node.textContent = text;
    return node;
  }
  function key(item) { return item.id + ":" + item.latest_update_id; }

  function mount() {
    var host = el("div", {
      position: "fixed", left: "0", right: "0", "z-index": "2147483000", "pointer-events": "none"
    });
    css(host, bottom ? { bottom: "0" } : { top: "0" });
    host.setAttribute("data-status-embed", "");
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    region = el("div", { display: "flex", "flex-direction": "column", gap: "4px", padding: "4px" });
    region.setAttribute("role", "status");
    region.setAttribute("aria-live", "polite");
    region.setAttribute("aria-label", "Service status");
    root.appendChild(region);
    document.body.appendChild(host);
  }

  function banner(item) {
    var box = el("div", {
      display: "flex", "flex-wrap": "wrap", "align-items": "center", gap: "4px 12px",
      padding: "10px 14px", "border-radius": "6px", color: "#fff", background: COLORS[item.impact] || COLORS.none,
      font: "14px/1.4 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
      "box-shadow": "0 2px 8px rgba(0,0,0,.25)", "pointer-events": "auto", "max-width": "60rem",
      width: "100%", margin: "0 auto", "box-sizing": "border-box"
    });
    box.setAttribute("data-status-banner", item.id);
    var text = el("span", { flex: "1 1 14rem", "min-width": "0", "overflow-wrap": "anywhere" });
    text.appendChild(el("strong", {}, item.name));
    text.appendChild(document.createTextNode(" \u2014 " + item.status_label));
    var link = el("a", { color: "#fff", "text-decoration": "underline", "white-space": "nowrap" }, "Details");
    link.href = item.url;
    link.target = "_blank";
    link.rel = "noopener";
    var close = el("button", {
      background: "transparent", border: "1px solid rgba(255,255,255,.6)", color: "#fff", cursor: "pointer",
      "border-radius": "4px", font: "inherit", "line-height": "1", padding: "4px 8px"
    }, "\u00d7");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss: " + item.name);
    close.addEventListener("click", function () {
      dismissed.push(key(item));
      save();
      box.remove();
    });
    box.appendChild(text);
    box.appendChild(link);
    box.appendChild(close);
    return box;
  }

  function show(doc) {
    var items = (doc.incidents || []).concat(doc.maintenances || []).filter(function (item) {
      return dismissed.indexOf(key(item)) < 0;
    });
    var signature = JSON.stringify(items.map(function (i) { return [key(i), i.name, i.status_label]; }));
    if (signature === shown) return; // unchanged: leave the DOM (and the keyboard focus) alone
    shown = signature;
    region.replaceChildren.apply(region, items.map(banner));
  }

  function check() {
    if (document.hidden) return;
    // "no-cache": the browser revalidates with the ETag it kept (a 304 costs almost nothing).
    fetch(url, { credentials: "omit", cache: "no-cache", mode: "cors" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(show)
      .catch(function (error) {
        if (window.console) console.warn("status embed: " + error.message);
      });
  }

  function start() {
    mount();
    check();
    setInterval(check, refresh);
    document.addEventListener("visibilitychange", check);
  }
  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
