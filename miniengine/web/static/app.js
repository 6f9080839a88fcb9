// The web view's live parts: plain JavaScript, no library, nothing fetched from elsewhere.
// Values from the server are put in the page with textContent only, never as HTML.
"use strict";

(function () {
  const body = document.body;
  const root = body.dataset.root || "";

  function cell(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined && text !== null) element.textContent = String(text);
    return element;
  }

  function isoTime(seconds) {
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  // the process list --------------------------------------------------------------------------
  function processRow(p) {
    const row = document.createElement("tr");
    row.dataset.pk = String(p.pk);
    row.appendChild(cell("td", "pk", p.pk));
    const label = cell("td", "label");
    const link = cell("a", "process-link", p.process_label || "?");
    link.href = root + "/process/" + encodeURIComponent(p.pk);
    label.appendChild(link);
    row.appendChild(label);
    row.appendChild(cell("td", "state", p.state));
    row.appendChild(cell("td", "ctime", isoTime(p.ctime)));
    return row;
  }

  function onListProcess(p) {
    const table = document.getElementById("process-list");
    if (!table) return;
    const tbody = table.tBodies[0];
    const existing = tbody.querySelector('tr[data-pk="' + p.pk + '"]');
    if (existing) {
      existing.querySelector("td.state").textContent = p.state;
      return;
    }
    if (table.dataset.live !== "yes") return;
    const first = tbody.rows[0];
    if (first && Number(first.dataset.pk) > p.pk) return;  // older than the page's newest
    tbody.insertBefore(processRow(p), first || null);
    const empty = document.querySelector("p.empty");
    if (empty) empty.remove();
  }

  // the process page --------------------------------------------------------------------------
  const TERMINAL = ["finished", "excepted", "killed"];

  function onProcess(p) {
    const state = document.getElementById("state");
    if (state) state.textContent = p.state;
    const exit = document.getElementById("exit-status");
    if (exit) exit.textContent = p.exit_status === null ? "" : String(p.exit_status);
    const status = document.getElementById("process-status");
    if (status) status.textContent = p.process_status || "";
    // Pause while it runs, Play while it is paused
    const pause = document.querySelector('form.control button[data-action="pause"]');
    if (pause) pause.hidden = p.paused;
    const play = document.querySelector('form.control button[data-action="play"]');
    if (play) play.hidden = !p.paused;
    // it just ended: its outputs, exit message or traceback are on the page once reloaded
    if (TERMINAL.includes(p.process_state) && !TERMINAL.includes(body.dataset.shownState)) {
      body.dataset.shownState = p.process_state;
      window.location.reload();
    }
  }

  function onReport(r) {
    const list = document.getElementById("reports");
    if (!list || list.querySelector('li[data-id="' + r.id + '"]')) return;
    const item = cell("li", "report level-" + String(r.level).toLowerCase());
    item.dataset.id = String(r.id);
    item.appendChild(cell("span", "time", r.time));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(cell("span", "level", r.level));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(cell("span", "message", r.message));
    list.appendChild(item);
  }

  function onTree(rows) {
    const holder = document.getElementById("call-tree");
    if (!holder) return;
    const lists = new Map();
    const top = document.createElement("ul");
    for (const row of rows) {
      const item = cell("li");
      item.dataset.pk = String(row.pk);
      const link = cell("a", "process-link", row.label || "?");
      link.href = root + "/process/" + encodeURIComponent(row.pk);
      item.appendChild(link);
      item.appendChild(document.createTextNode(" "));
      item.appendChild(cell("span", "pk", "#" + row.pk));
      item.appendChild(document.createTextNode(" "));
      item.appendChild(cell("span", "state", row.state));
      const parent = row.parent !== null && lists.get(row.parent);
      (parent || top).appendChild(item);
      const children = document.createElement("ul");
      item.appendChild(children);
      lists.set(row.pk, children);
    }
    top.querySelectorAll("ul").forEach(function (list) {
      if (!list.children.length) list.remove();
    });
    holder.replaceChildren(top);
  }

  // the event stream --------------------------------------------------------------------------
  const url = body.dataset.events;
  if (url && window.EventSource) {
    const source = new EventSource(url);
    source.addEventListener("hello", function () {
      body.dataset.stream = "open";
    });
    source.addEventListener("process", function (event) {
      const p = JSON.parse(event.data);
      if (body.dataset.page === "processes") onListProcess(p);
      else onProcess(p);
    });
    source.addEventListener("report", function (event) {
      onReport(JSON.parse(event.data));
    });
    source.addEventListener("tree", function (event) {
      onTree(JSON.parse(event.data));
    });
    source.addEventListener("error", function () {
      body.dataset.stream = "reconnecting";
    });
    window.addEventListener("pagehide", function () {
      source.close();
    });
  }
})();
