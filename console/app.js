// The AdClick web console. Everything it shows comes from the bridge (/api/*), which asks the
// query service (adclick.query.*) and the read-only admin subjects (adclick.admin.status,
// adclick.admin.actors): the page never computes a count of its own.

const $ = (id) => document.getElementById(id);
const FILTERS = ["country", "ip", "user_id"];

/** The page's state, kept in the address bar so a view can be shared or reloaded. */
function readState() {
  const q = new URLSearchParams(location.search);
  return {
    mode: q.has("from") || q.has("to") ? "range" : "minutes",
    minutes: q.get("minutes") ?? "5",
    from: q.get("from") ?? "",
    to: q.get("to") ?? "",
    n: q.get("n") ?? "10",
    country: q.get("country") ?? "",
    ip: q.get("ip") ?? "",
    user_id: q.get("user_id") ?? "",
    ad: q.get("ad") ?? "",
    hours: q.get("hours") ?? "3",
  };
}

let state = readState();

/** The top query's parameters (what /api/top and /api/events take). */
function topParams(s) {
  const p = new URLSearchParams();
  if (s.n) p.set("n", s.n);
  if (s.mode === "range") {
    p.set("from", s.from);
    p.set("to", s.to);
  } else p.set("minutes", s.minutes);
  for (const f of FILTERS) if (s[f]) p.set(f, s[f]);
  return p;
}

/** The series query's parameters: the page's range when one is given, else the last hours. */
function seriesParams(s) {
  const p = new URLSearchParams();
  p.set("ad_id", s.ad);
  if (s.mode === "range") {
    p.set("from", s.from);
    p.set("to", s.to);
  } else p.set("minutes", String(Math.round(Number(s.hours) * 60)));
  for (const f of FILTERS) if (s[f]) p.set(f, s[f]);
  return p;
}

function pageParams(s) {
  const p = topParams(s);
  if (s.ad) p.set("ad", s.ad);
  if (s.mode !== "range" && s.hours !== "3") p.set("hours", s.hours);
  return p;
}

function fillForm(s) {
  for (const r of document.querySelectorAll('input[name="mode"]')) r.checked = r.value === s.mode;
  for (const k of ["minutes", "from", "to", "n", ...FILTERS]) $(k).value = s[k];
  $("ad").value = s.ad;
  $("hours").value = s.hours;
}

function readForm() {
  const mode = document.querySelector('input[name="mode"]:checked')?.value ?? "minutes";
  const s = { ...state, mode, ad: $("ad").value.trim(), hours: $("hours").value };
  for (const k of ["minutes", "from", "to", "n", ...FILTERS]) s[k] = $(k).value.trim();
  return s;
}

// --- helpers -----------------------------------------------------------------------------

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, attrs = {}) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    if (c instanceof Node) {
      const td = document.createElement("td");
      td.append(c);
      tr.append(td);
    } else {
      const [text, cls] = Array.isArray(c) ? c : [c];
      tr.append(el("td", text, cls));
    }
  }
  for (const [k, v] of Object.entries(attrs)) tr.setAttribute(k, v);
  return tr;
}

const fmt = new Intl.NumberFormat("en-US");
const iso = (ms) =>
  typeof ms === "number" && Number.isFinite(ms)
    ? `${new Date(ms).toISOString().slice(0, 19)}Z`
    : "–";
/** A duration to the unit that reads best: 42 s, 17 min, 5 h, 876 d. */
const ago = (ms) => {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} d`;
};

/** A service error as the service said it: its message and code. */
function errorText(body) {
  const e = body?.error ?? {};
  return `${e.message ?? "the service answered with an error"}${e.code ? ` [${e.code}]` : ""}`;
}

function showError(id, body) {
  const p = $(id);
  if (body) {
    p.textContent = errorText(body);
    p.hidden = false;
  } else {
    p.textContent = "";
    p.hidden = true;
  }
}

/** open / final / amended, with the revision: what a number's mark says. */
function markOf(state, revision) {
  const m = el("span", null, `mark ${state}`);
  m.textContent = revision !== null && revision !== undefined ? `${state} · r${revision}` : state;
  m.dataset.state = state;
  m.dataset.revision = revision === null || revision === undefined ? "" : String(revision);
  return m;
}

/** A whole answer's mark: final (amended when its newest revision is past 1) or open. */
function answerState(body) {
  if (!body.final) return "open";
  return body.revision > 1 ? "amended" : "final";
}

function completion(body) {
  const parts = [
    `${body.from} → ${body.to}`,
    body.final ? "final" : "not final yet",
    `revision ${body.revision ?? "–"}`,
    `complete through ${body.complete_through ?? "–"}`,
  ];
  const behind = body.sources_behind ?? [];
  if (behind.length > 0)
    parts.push(
      `sources behind: ${behind.map((b) => `${b.source} (at ${b.progress ?? "nothing yet"})`).join(", ")}`,
    );
  return parts.join(" · ");
}

// --- top N ---------------------------------------------------------------------------------

function renderTop(body) {
  const tbody = $("top-table").querySelector("tbody");
  if (body.error) {
    showError("top-error", body);
    tbody.replaceChildren();
    $("top-meta").textContent = "";
    $("top-empty").hidden = true;
    return;
  }
  showError("top-error");
  $("top-meta").textContent = completion(body);
  const st = answerState(body);
  $("top-table").dataset.final = String(body.final);
  $("top-table").dataset.revision = String(body.revision);
  tbody.replaceChildren(
    ...body.ads.map((a, i) => {
      const link = el("a", a.ad_id);
      link.href = `#ad=${encodeURIComponent(a.ad_id)}`;
      link.addEventListener("click", (e) => {
        e.preventDefault();
        selectAd(a.ad_id);
      });
      const tr = row(
        [[i + 1, "num"], link, [fmt.format(a.count), "num count"], markOf(st, body.revision)],
        {
          "data-ad": a.ad_id,
          "data-count": String(a.count),
        },
      );
      if (a.ad_id === state.ad) tr.classList.add("selected");
      return tr;
    }),
  );
  $("top-empty").hidden = body.ads.length > 0;
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// --- series --------------------------------------------------------------------------------

let chart;
let seriesTimer;
let seriesAsk = 0;

function selectAd(ad) {
  state = { ...state, ad };
  $("ad").value = ad;
  history.replaceState(null, "", `?${pageParams(state)}`);
  for (const tr of $("top-table").querySelectorAll("tbody tr"))
    tr.classList.toggle("selected", tr.dataset.ad === ad);
  void loadSeries();
}

async function loadSeries() {
  clearTimeout(seriesTimer);
  if (!state.ad) return;
  const ask = ++seriesAsk;
  let body;
  try {
    const res = await fetch(`/api/series?${seriesParams(state)}`, { cache: "no-store" });
    body = await res.json();
  } catch (e) {
    body = { error: { message: `the console's server did not answer: ${e.message}` } };
  }
  if (ask !== seriesAsk) return; // a newer question is on its way
  renderSeries(body);
  // Open minutes change: ask again while the page looks at them.
  seriesTimer = setTimeout(loadSeries, 10_000);
}

function renderSeries(body) {
  const tbody = $("series-table").querySelector("tbody");
  $("series-title").textContent = `Series of ${state.ad}`;
  if (body.error) {
    showError("series-error", body);
    $("series-meta").textContent = "";
    $("series-notice").hidden = true;
    tbody.replaceChildren();
    drawChart([]);
    return;
  }
  showError("series-error");
  $("series-meta").textContent = completion(body);
  $("series-table").dataset.ad = body.ad_id;
  const total = body.series.reduce((n, p) => n + p.count, 0);
  $("series-notice").textContent = total === 0 ? `no clicks of ${body.ad_id} in this range` : "";
  $("series-notice").hidden = total !== 0;
  tbody.replaceChildren(
    ...body.series.map((p) =>
      row(
        [
          p.minute,
          [fmt.format(p.count), "num count"],
          markOf(p.state, p.revision),
          [p.revision ?? "–", "num"],
        ],
        {
          "data-minute": p.minute,
          "data-count": String(p.count),
          "data-state": p.state,
        },
      ),
    ),
  );
  drawChart(body.series);
}

/** Final (and amended) minutes in one colour, open and closed-not-final ones in another. */
function drawChart(points) {
  const box = $("chart");
  const xs = points.map((p) => Date.parse(p.minute) / 1000);
  const done = (p) => p.state === "final" || p.state === "amended";
  const data = [
    xs,
    points.map((p) => (done(p) ? p.count : null)),
    points.map((p) => (done(p) ? null : p.count)),
  ];
  const width = Math.max(320, box.clientWidth || 600);
  if (chart) {
    chart.destroy();
    chart = undefined;
  }
  if (points.length === 0 || typeof uPlot === "undefined") return;
  const bars = uPlot.paths.bars({ size: [0.9, 24] });
  chart = new uPlot(
    {
      width,
      height: 220,
      // Half a minute of room either side: the first and last minutes' bars are whole.
      scales: { x: { time: true, range: (_u, min, max) => [min - 30, max + 30] } },
      series: [
        {},
        {
          label: "final",
          stroke: "#1b7f4b",
          fill: "rgba(27,127,75,0.55)",
          paths: bars,
          points: { show: false },
        },
        {
          label: "open / closed",
          stroke: "#c76b00",
          fill: "rgba(230,140,20,0.45)",
          paths: bars,
          points: { show: false },
        },
      ],
      axes: [{}, { label: "clicks / minute" }],
    },
    data,
    box,
  );
}

// --- health --------------------------------------------------------------------------------

function renderHealth(body) {
  if (body.error) {
    showError("health-error", body);
    return;
  }
  showError("health-error");
  const now = Date.now();
  $("workers")
    .querySelector("tbody")
    .replaceChildren(
      ...body.status
        .slice()
        .sort((a, b) => a.worker.localeCompare(b.worker))
        .map((w) =>
          row([
            w.worker,
            typeof w.supervisor === "string" ? w.supervisor : JSON.stringify(w.supervisor),
            [`${w.running}/${w.actors}`, "num"],
            [w.restarts, "num"],
            [`${w.uptimeSeconds} s`, "num"],
            [`${Math.round(w.rssBytes / 1048576)} MB`, "num"],
          ]),
        ),
    );
  const aggs = body.actors
    .filter((a) => a.kind === "aggregator" && a.status && a.status.lastSeq !== undefined)
    .sort((a, b) => a.partition - b.partition);
  $("partitions")
    .querySelector("tbody")
    .replaceChildren(
      ...aggs.map((a) => {
        const s = a.status;
        const rate = (n) =>
          s.events > 0
            ? `${fmt.format(n)} (${((100 * n) / s.events).toFixed(2)} %)`
            : fmt.format(n ?? 0);
        return row([
          [a.partition, "num"],
          iso(s.watermarkMs),
          [Number.isFinite(s.watermarkMs) ? ago(now - s.watermarkMs) : "–", "num"],
          iso(s.completeThroughMs),
          s.heldBy && s.heldMs > 0 ? `${s.heldBy.source} (${ago(s.heldMs)})` : "–",
          [fmt.format(s.events ?? 0), "num"],
          [rate(s.duplicates ?? 0), "num"],
          [rate(s.late ?? 0), "num"],
          [rate(s.amended ?? 0), "num"],
        ]);
      }),
    );
  const sources = new Map();
  for (const w of body.status)
    for (const s of w.sources ?? []) {
      const have = sources.get(s.source);
      if (!have || s.lagMs > have.lagMs) sources.set(s.source, s);
    }
  const srcRows = [...sources.values()].sort(
    (a, b) => b.lagMs - a.lagMs || a.source.localeCompare(b.source),
  );
  $("sources")
    .querySelector("tbody")
    .replaceChildren(
      ...(srcRows.length === 0
        ? [row([["none heard from yet", "muted"], "", "", ""])]
        : srcRows.map((s) =>
            row([
              s.source,
              [s.standing, `standing ${s.standing}`],
              iso(s.progressMs),
              [ago(s.lagMs), "num"],
            ]),
          )),
    );
  // The scheduled reconciliation: its actor, and its last run's result (its status).
  const rec = body.actors.filter((a) => a.id === "reconcile-schedule");
  const runOf = (a) => {
    const r = a.status?.lastReport;
    const run = r
      ? `last run ${r.from} → ${r.to} (at ${iso(r.atMs)}): ${fmt.format(r.mismatchCount)} differing cells of ${fmt.format(r.cellsCompared)}, ${r.topMismatches} minutes with a differing top N`
      : "no run finished yet";
    const failed = a.status?.lastError ? ` · last attempt failed: ${a.status.lastError}` : "";
    return `on ${a.worker} (${a.state}, ${a.restarts} restarts): ${run}${failed}`;
  };
  $("reconcile").textContent =
    rec.length === 0
      ? "not scheduled here (ADCLICK_RECONCILE_EVERY_MS=0, or no worker runs the reducer role)"
      : rec.map(runOf).join("; ");
  $("actors")
    .querySelector("tbody")
    .replaceChildren(
      ...body.actors
        .slice()
        .sort((a, b) => a.id.localeCompare(b.id) || a.worker.localeCompare(b.worker))
        .map((a) => {
          const s = a.status ?? {};
          const detail = [
            a.kind === "aggregator" && s.lastSeq === undefined
              ? `standby${s.standbyFor ? ` (aggregated by ${s.standbyFor})` : ""}`
              : "",
            s.lastSeq !== undefined ? `seq ${s.lastSeq}` : "",
            s.lagMessages !== undefined ? `lag ${s.lagMessages}` : "",
            s.url ? `at ${s.url}` : "",
            s.error ? String(s.error) : "",
            a.lastError ? `last error: ${a.lastError}` : "",
          ]
            .filter(Boolean)
            .join(", ");
          return row([
            a.id,
            a.kind,
            a.worker,
            [a.state, `state ${a.state}`],
            [a.restarts, "num"],
            detail,
          ]);
        }),
    );
}

// --- the live stream -----------------------------------------------------------------------

let source;

function connect() {
  source?.close();
  const live = $("live");
  live.textContent = "connecting…";
  live.className = "live off";
  source = new EventSource(`/api/events?${topParams(state)}`);
  source.addEventListener("open", () => {
    live.textContent = "live";
    live.className = "live on";
  });
  source.addEventListener("top", (e) => renderTop(JSON.parse(e.data)));
  source.addEventListener("health", (e) => renderHealth(JSON.parse(e.data)));
  source.addEventListener("error", async () => {
    live.textContent = "reconnecting…";
    live.className = "live off";
    if (source.readyState === EventSource.CLOSED) {
      // Refused outright (a bad parameter, a login): show why, as the server says it.
      try {
        const res = await fetch(`/api/top?${topParams(state)}`, { cache: "no-store" });
        renderTop(await res.json());
      } catch (err) {
        renderTop({ error: { message: `the console's server did not answer: ${err.message}` } });
      }
    }
  });
}

$("query").addEventListener("submit", (e) => {
  e.preventDefault();
  state = readForm();
  history.replaceState(null, "", `?${pageParams(state)}`);
  $("top-table").querySelector("tbody").replaceChildren();
  $("top-meta").textContent = "asking…";
  connect();
  void loadSeries();
});

$("ad-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const s = readForm();
  state = { ...state, hours: s.hours };
  selectAd(s.ad);
});

window.addEventListener("resize", () => {
  if (chart) chart.setSize({ width: Math.max(320, $("chart").clientWidth), height: 220 });
});

fillForm(state);
connect();
void loadSeries();
