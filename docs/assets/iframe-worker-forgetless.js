// A Web Worker stand-in for pages opened from disk (file://), where browsers refuse `new Worker(url)`.
// Material's search runs in a worker; its offline plugin would otherwise load a shim from a CDN, which
// an offline site cannot reach (the plugin skips that when a script named "iframe-worker" is listed in
// extra.polyfills, as this one is in mkdocs.yml). Written for forgetless's site: the worker script runs
// in a hidden same-origin iframe (srcdoc), whose global addEventListener("message") and postMessage
// are redirected to this object; messages are copied through JSON into the receiving window, so no
// object crosses between the two JavaScript realms. Only what Material's search uses is provided:
// addEventListener / removeEventListener / onmessage / postMessage / terminate.
(function () {
  "use strict";
  if (location.protocol !== "file:" || typeof window === "undefined") return;

  function FileWorker(url) {
    var worker = this;
    var listeners = [];
    var pending = [];
    var inner = null;
    this.onmessage = null;

    this.addEventListener = function (type, fn) {
      if (type === "message" && listeners.indexOf(fn) < 0) listeners.push(fn);
    };
    this.removeEventListener = function (type, fn) {
      var i = listeners.indexOf(fn);
      if (type === "message" && i >= 0) listeners.splice(i, 1);
    };
    this.postMessage = function (data) {
      var text = JSON.stringify(data);
      if (inner) inner(text);
      else pending.push(text);
    };
    this.terminate = function () {
      if (frame.parentNode) frame.parentNode.removeChild(frame);
      inner = null;
    };

    function deliver(text) {  // a message from the worker script
      var event = { data: JSON.parse(text), target: worker };
      setTimeout(function () {
        listeners.slice().forEach(function (fn) { fn.call(worker, event); });
        if (typeof worker.onmessage === "function") worker.onmessage(event);
      }, 0);
    }

    var frame = document.createElement("iframe");
    frame.style.display = "none";
    frame.setAttribute("aria-hidden", "true");
    var src = new URL(url, location.href).href;
    var bridge = [
      "(function () {",
      "  var handlers = [], native = window.addEventListener.bind(window);",
      "  window.addEventListener = function (type, fn, opt) {",
      "    if (type === 'message') handlers.push(fn); else native(type, fn, opt);",
      "  };",
      "  window.postMessage = function (data) { parent.__fileWorkerDeliver[" + FileWorker.count + "](JSON.stringify(data)); };",
      "  window.importScripts = function () { throw new Error('importScripts is not available from file://'); };",
      "  window.__fileWorkerReceive = function (text) {",
      "    var event = { data: JSON.parse(text) };",
      "    handlers.forEach(function (fn) { fn(event); });",
      "    if (typeof window.onmessage === 'function') window.onmessage(event);",
      "  };",
      "})();"
    ].join("\n");
    window.__fileWorkerDeliver = window.__fileWorkerDeliver || {};
    window.__fileWorkerDeliver[FileWorker.count] = deliver;
    FileWorker.count += 1;
    frame.srcdoc = "<!doctype html><meta charset='utf-8'><script>" + bridge + "<\/script>" +
      "<script src='" + src.replace(/'/g, "%27") + "'><\/script>";
    frame.onload = function () {
      var receive = frame.contentWindow && frame.contentWindow.__fileWorkerReceive;
      if (typeof receive !== "function") return;
      inner = function (text) { setTimeout(function () { receive(text); }, 0); };
      pending.splice(0).forEach(inner);
    };
    (document.body || document.documentElement).appendChild(frame);
  }
  FileWorker.count = 0;

  window.Worker = FileWorker;
})();
