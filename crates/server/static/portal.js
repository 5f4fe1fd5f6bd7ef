// gigafab portal: follows a job's output while it runs (the only script;
// the pages work without it).
"use strict";
(function () {
  const logs = Array.from(document.querySelectorAll("pre.log[data-src]"));
  const state = document.getElementById("job-state");
  const ended = (s) => ["completed", "failed", "timeout", "cancelled"].includes(s);
  async function poll(pre) {
    if (pre.dataset.follow !== "true") return;
    const enc = new TextEncoder();
    try {
      const off = Number(pre.dataset.offset || "0");
      const res = await fetch(pre.dataset.src + "&offset=" + off, { credentials: "same-origin" });
      if (!res.ok) { pre.dataset.follow = "false"; return; }
      const text = await res.text();
      if (text.length > 0) {
        pre.append(document.createTextNode(text));
        pre.dataset.offset = String(off + enc.encode(text).length);
        pre.scrollTop = pre.scrollHeight;
      }
      const s = res.headers.get("x-job-state");
      if (s && state && state.textContent !== s) {
        state.textContent = s;
        state.className = "state state-" + s;
      }
      if (s && ended(s)) {
        const cancel = document.getElementById("cancel-form");
        if (cancel) cancel.remove();
      }
      if (s && ended(s)) {
        // one more read for what it wrote last, then stop
        pre.dataset.follow = text.length > 0 ? "true" : "false";
        if (text.length === 0) return;
      }
    } catch (e) {
      // the server went away for a moment: try again later
    }
    setTimeout(() => poll(pre), 1000);
  }
  logs.forEach((pre) => setTimeout(() => poll(pre), 1000));
})();
