// The Sluice debugger: a live sample of arriving events (server-sent events from
// /debugger/stream), their JSON, traces (/v1/trace/ID) and a stats panel (/debugger/stats).
"use strict";

const MAX_ROWS = 500;
const rows = document.getElementById("events");
const counts = { shown: 0, dropped: 0 };
let paused = false;
let source = null;

function text(value) {
  return value === undefined || value === null ? "" : String(value);
}

function showCounts() {
  document.getElementById("counts").textContent =
    `${counts.shown} shown · ${counts.dropped} dropped from view` + (paused ? " · paused" : "");
}

function addEvent(item) {
  const tr = document.createElement("tr");
  tr.className = "event" + (item.rejected ? " rejected" : "") + (item.violations ? " warned" : "");
  const cells = [item.rejected ? `rejected ${item.type}` : item.type, item.event, item.user,
    item.source, item.receivedAt, item.messageId];
  for (const value of cells) {
    const td = document.createElement("td");
    td.textContent = text(value);
    tr.appendChild(td);
  }
  tr.title = item.rejected ? item.rejected : "";
  tr.addEventListener("click", () => {
    const shown = item.rejected ? { reason: item.rejected, payload: item.json } : item.json;
    document.getElementById("detail").textContent = JSON.stringify(shown, null, 2);
  });
  rows.insertBefore(tr, rows.firstChild);
  while (rows.childElementCount > MAX_ROWS) rows.removeChild(rows.lastChild);
}

function connect() {
  if (source) source.close();
  document.getElementById("status").textContent = "connecting…";
  const form = new FormData(document.getElementById("filters"));
  const query = new URLSearchParams();
  for (const [key, value] of form) if (value) query.set(key, value);
  source = new EventSource("/debugger/stream?" + query.toString());
  source.onopen = () => { document.getElementById("status").textContent = "live"; };
  source.onerror = () => { document.getElementById("status").textContent = "reconnecting…"; };
  source.onmessage = (message) => {
    const data = JSON.parse(message.data);
    counts.dropped += data.dropped;
    if (paused) {
      counts.dropped += data.events.length;
    } else {
      // Oldest first, so the newest ends on top.
      for (const item of data.events.slice().reverse()) addEvent(item);
      counts.shown += data.events.length;
    }
    showCounts();
  };
}

document.getElementById("filters").addEventListener("submit", (e) => {
  e.preventDefault();
  rows.textContent = "";
  connect();
});
document.getElementById("pause").addEventListener("click", (e) => {
  paused = !paused;
  e.target.textContent = paused ? "Resume" : "Pause";
  showCounts();
});
document.getElementById("clear").addEventListener("click", () => { rows.textContent = ""; });

document.getElementById("trace").addEventListener("submit", async (e) => {
  e.preventDefault();
  const id = new FormData(e.target).get("id");
  const out = document.getElementById("trace-result");
  out.textContent = "looking…";
  const answer = await fetch("/v1/trace/" + encodeURIComponent(id));
  out.textContent = JSON.stringify(await answer.json(), null, 2);
});

// Stats: rates from the difference of two polls, a minute of events/s on the chart.
const history = [];
let previous = null;

function rate(now, before, seconds) {
  return before === undefined ? 0 : Math.max(0, (now - before) / seconds);
}

function drawChart() {
  const canvas = document.getElementById("chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const top = Math.max(1, ...history);
  ctx.strokeStyle = "#3366cc";
  ctx.beginPath();
  history.forEach((value, i) => {
    const x = (i / 59) * canvas.width;
    const y = canvas.height - (value / top) * (canvas.height - 14);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#5b6475";
  ctx.fillText(`${Math.round(history[history.length - 1] || 0)} events/s (max ${Math.round(top)})`, 4, 11);
}

async function pollStats() {
  try {
    const stats = await (await fetch("/debugger/stats")).json();
    const logsBody = document.getElementById("logs");
    const sinksBody = document.getElementById("sinks");
    logsBody.textContent = "";
    sinksBody.textContent = "";
    const seconds = previous ? Math.max(0.001, stats.at - previous.at) : 1;
    let total = 0;
    for (const log of stats.logs) {
      const before = previous && previous.logs.find((l) => l.log === log.log);
      const inRate = rate(log.accepted, before && before.accepted, seconds);
      total += log.log === "_deadletter" ? 0 : inRate;
      const fill = (100 * log.held_bytes / log.capacity_bytes).toFixed(1) + "%";
      logsBody.insertAdjacentHTML("beforeend", "<tr><td></td><td></td><td></td><td></td></tr>");
      const cells = logsBody.lastChild.children;
      [log.log, inRate.toFixed(0), fill, log.loop_restarts].forEach((v, i) => { cells[i].textContent = text(v); });
      for (const [id, sink] of Object.entries(log.sinks)) {
        const was = before && before.sinks[id];
        const outRate = rate(sink.committed, was && was.committed, seconds);
        sinksBody.insertAdjacentHTML("beforeend", "<tr><td></td><td></td><td></td><td></td><td></td></tr>");
        const sc = sinksBody.lastChild.children;
        [`${log.log} → ${sink.uri}`, outRate.toFixed(0), sink.lag_s, sink.retries, sink.deadlettered]
          .forEach((v, i) => { sc[i].textContent = text(v); });
        sinksBody.lastChild.title = sink.last_error || "";
      }
    }
    if (previous) {
      history.push(total);
      if (history.length > 60) history.shift();
      drawChart();
    }
    previous = stats;
  } catch (err) {
    document.getElementById("status").textContent = "stats unavailable";
  }
}

connect();
showCounts();
pollStats();
setInterval(pollStats, 1000);
