"use strict";
// The console's few actions. Every change is same-origin JSON carrying the page's CSRF token
// (guard.py refuses anything else); the pages themselves are rendered on the server.
const token = document.querySelector('meta[name="csrf-token"]').content;

async function post(url, body) {
  const response = await fetch(url, {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": token}});
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function say(text, kind) {
  const where = document.getElementById("result");
  where.textContent = text;
  where.className = kind || "";
}

function redriveReport(answer) {
  const sent = answer.redriven.map((t) => t.id);
  const skipped = Object.entries(answer.skipped).map(([id, why]) => `${id}: ${why}`);
  return (sent.length ? `re-driven: ${sent.join(", ")}` : "nothing re-driven") +
    (skipped.length ? `; skipped ${skipped.join("; ")}` : "");
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  button.disabled = true;
  try {
    const action = button.dataset.action;
    if (action === "redrive") {
      say(redriveReport(await post("/api/redrive", {ids: button.dataset.ids.split(" ")})), "ok");
    } else if (action === "cancel") {
      const answer = await post("/api/cancel", {id: button.dataset.id, reason: "cancelled from the console"});
      say(answer.cancelled ? `cancelled ${answer.id}` : `${answer.id} had already finished: not cancelled`,
          answer.cancelled ? "ok" : "muted");
    } else if (action === "redrive-matching") {
      const filter = JSON.parse(button.dataset.filter);
      const counted = await (await fetch("/api/tasks/count?" + new URLSearchParams(filter))).json();
      const dialog = document.getElementById("confirm");
      dialog.querySelector(".question").textContent = counted.count === 0 ? "No task matches these filters." :
        `Re-drive ${counted.count}${counted.capped ? "+" : ""} ${filter.status} task${counted.count === 1 ? "" : "s"} ` +
        "matching these filters? Each runs again with a fresh retry budget.";
      dialog.querySelector("button.primary").hidden = counted.count === 0;
      dialog.returnValue = "";
      dialog.showModal();
      await new Promise((done) => dialog.addEventListener("close", done, {once: true}));
      if (dialog.returnValue === "yes") {
        say(redriveReport(await post("/api/redrive", {filter, expect: counted.count})), "ok");
      }
    }
    if (button.dataset.reload !== undefined) setTimeout(() => location.reload(), 800);
  } catch (error) {
    say(String(error.message || error), "error");
  } finally {
    button.disabled = false;
  }
});

// The overview's live figures and charts, from server-sent events.
const live = document.getElementById("live");
if (live) {
  const events = new EventSource("/api/events");
  let charted = 0;
  events.onmessage = (message) => {
    const data = JSON.parse(message.data);
    for (const [name, value] of Object.entries(data.figures)) {
      const cell = document.getElementById(name);
      if (cell) cell.textContent = value;
    }
    for (const row of data.totals) {
      for (const [name, value] of Object.entries(row)) {
        const cell = document.querySelector(`tr[data-pair="${CSS.escape(row.queue + "/" + row.type)}"] td[data-n="${name}"]`);
        if (cell) cell.textContent = value;
      }
    }
    document.getElementById("updated").textContent = "updated " + new Date(data.at).toLocaleTimeString();
    if (Date.now() - charted > 10000) {
      charted = Date.now();
      for (const img of document.querySelectorAll("img.chart")) img.src = img.dataset.src + "&t=" + charted;
    }
  };
  events.onerror = () => { document.getElementById("updated").textContent = "reconnecting…"; };
}
