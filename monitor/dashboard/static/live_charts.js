// klwatch live charts: a Streamlit custom component (v2) that draws a run's charts with
// uPlot (canvas) and keeps them current by polling klwatch's live endpoint — no Streamlit
// rerun for new rows. A rerun is asked for (setTriggerValue) only when the endpoint's
// `page` key changes: an alert, a status, the run list (monitor/dashboard/live_api.py).
//
// The layout (charts, series, colours, band, alerts) comes from Python in `data.spec`
// (monitor/dashboard/live_spec.py); rows come from the endpoint. Costs kept low on
// purpose: one fetch per poll, a redraw at most every 0.8 s, nothing while the tab is hidden.

const REDRAW_MIN_MS = 800; // new rows redraw the charts at most every 0.8 s: with a poll every
// 0.5 s, a step is on screen within ~1.3 s of its write (goal 1.5 s)
const PANEL_HEIGHT = 300; // px: a one-panel chart
const MULTI_PANEL_HEIGHT = 170; // px per panel of a chart with several
const LANE_HEIGHT = 0.035; // of the plot's height, per rule with spans (as charts.py)
const SPAN_ALPHA = 0.06;
const LANE_ALPHA = 0.75;
const RAW_ALPHA = 0.25; // the raw series behind a smoothed one
const MARKER_PX = 7;
const THEME_CHECK_MS = 2000;
const ASK_AGAIN_MS = 10000; // a rerun asked for and not landed with that key: ask again after
const QUIET_AFTER_MS = 5000; // no new rows for this long: a running run is asked …
const QUIET_POLL_MS = 1000; // … once a second instead of twice

function loadUPlot(src) {
  if (!window.__klwatchUPlot) {
    window.__klwatchUPlot = new Promise((resolve, reject) => {
      if (window.uPlot) return resolve(window.uPlot);
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve(window.uPlot);
      script.onerror = () => {
        window.__klwatchUPlot = null;
        reject(new Error(`could not load ${src}`));
      };
      document.head.appendChild(script);
    });
  }
  return window.__klwatchUPlot;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function withAlpha(hex, alpha) {
  const m = /^#([0-9a-f]{6})$/i.exec(hex || "");
  if (!m) return hex;
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "no data yet";
  // Coarser as it grows: the line changes at most once a second, and on a quiet run every
  // 5 s (each change costs a repaint).
  if (seconds < 10) return `${Math.floor(seconds)} s`;
  if (seconds < 60) return `${5 * Math.floor(seconds / 5)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function pageOf(sources) {
  // The page key of a page showing these sources (one per run, as live_api.page_key).
  return sources.map((src) => src.page_key).join("|");
}

function linearRange(min, max) {
  // 5 % of headroom; a flat series (β = 0 all run long) gets ±10 % (or ±1 at 0) around
  // its value, where uPlot's default would stretch 0 to 0…100.
  if (min === null || max === null) return [0, 1];
  if (min === max) {
    const pad = Math.abs(min) * 0.1 || 1;
    return [min - pad, max + pad];
  }
  const pad = (max - min) * 0.05;
  return [min - pad, max + pad];
}

function searchStep(xs, step) {
  let lo = 0;
  let hi = xs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < step) lo = mid + 1;
    else hi = mid - 1;
  }
  return lo;
}

function logNote(counts, keys) {
  const parts = keys.filter((k) => counts[k] > 0).map((k) => [k, counts[k]]);
  const total = parts.reduce((sum, [, n]) => sum + n, 0);
  if (!total) return "";
  let note = `${total.toLocaleString("en-US")} value${total === 1 ? "" : "s"} ≤ 0 not drawn on the log scale`;
  if (parts.length > 1) {
    note += " (" + parts.map(([k, n]) => `${k} ${n.toLocaleString("en-US")}`).join(", ") + ")";
  }
  return note;
}

class LivePage {
  constructor(root, setTriggerValue) {
    this.root = root;
    this.setTriggerValue = setTriggerValue;
    this.panels = []; // {chart, panel, plot, holder, note}
    this.rows = []; // per source (a run): the last rows the endpoint sent
    this.versions = []; // per source: the version of those rows
    this.lastDraw = 0;
    this.changedAt = Date.now(); // when the last new rows came
    this.draws = []; // [wall ms, last step drawn]
    this.drawTimer = null;
    this.pollTimer = null;
    this.asked = null; // the page key a rerun was asked for …
    this.askedAt = 0; // … and when
    this.lastRefresh = Date.now();
    this.zoom = null; // {min, max} of x while the user has zoomed
    this.head = null;
    this.destroyed = false;
    this.onVisible = () => {
      if (document.visibilityState === "visible") this.poll();
      else this.stopPolling();
    };
    document.addEventListener("visibilitychange", this.onVisible);
    this.resize = new ResizeObserver(() => this.fit());
  }

  update(data, setTriggerValue) {
    this.setTriggerValue = setTriggerValue;
    const layoutKey = JSON.stringify([data.spec, data.sources.map((src) => src.run)]);
    const queries = (d) => JSON.stringify(d.sources.map((src) => src.query));
    const sameRows = this.data !== undefined && queries(this.data) === queries(data);
    this.data = data;
    if (layoutKey !== this.layoutKey) {
      this.layoutKey = layoutKey;
      this.build(sameRows);
    }
    // The rerun asked for has drawn the page with that key. (Never reset otherwise: were the
    // two keys ever to disagree for good, each new key would ask once, never in a loop.)
    if (pageOf(data.sources) === this.asked) this.asked = null;
    this.lastRefresh = Date.now();
    if (this.announce) this.announce.textContent = "";
    if (this.newsBox) {
      this.newsBox.hidden = true; // the rerun landed: the banner says it now
      this.newsBox.replaceChildren();
    }
    this.poll();
  }

  theme() {
    const style = getComputedStyle(this.root instanceof Element ? this.root : this.root.host);
    const text = style.getPropertyValue("--st-text-color").trim() || "#31333f";
    const border = style.getPropertyValue("--st-border-color").trim() || "rgba(49,51,63,0.2)";
    const bg = style.getPropertyValue("--st-background-color").trim() || "#ffffff";
    const font = style.getPropertyValue("--st-font").trim() || "sans-serif";
    return { text, border, bg, font };
  }

  build(keepRows) {
    for (const p of this.panels) p.plot && p.plot.destroy();
    this.panels = [];
    if (!keepRows) {
      this.rows = [];
      this.versions = [];
      this.zoom = null;
    }
    const container = this.root.querySelector(".kw-live");
    container.replaceChildren();
    const status = el("div", "kw-status");
    // A rebuild (new options, new alerts) keeps the last status until the next answer.
    const said = keepRows && this.statusText ? this.statusText.textContent : "connecting …";
    this.statusText = el("span", "kw-status-text", said);
    status.appendChild(this.statusText);
    this.announce = el("span", "kw-sr");
    this.announce.setAttribute("role", "status");
    this.announce.setAttribute("aria-live", "polite");
    status.appendChild(this.announce);
    container.appendChild(status);
    this.newsBox = el("div", "kw-news");
    this.newsBox.setAttribute("role", "alert");
    this.newsBox.hidden = true;
    container.appendChild(this.newsBox);
    const grid = el("div", "kw-grid");
    container.appendChild(grid);
    const spec = this.data.spec;
    let group = null;
    for (const chart of spec.charts) {
      if (chart.group && chart.group !== group) {
        grid.appendChild(el("h3", "kw-group", chart.group));
      }
      group = chart.group || null;
      if (chart.id === "reward" && spec.beta_missing) {
        grid.appendChild(el("div", "kw-card kw-half kw-caption", spec.beta_missing));
      }
      const card = el("div", `kw-card kw-${chart.width}`);
      card.dataset.chart = chart.id;
      const header = el("div", "kw-card-head");
      header.appendChild(el("div", "kw-title", chart.title));
      const png = el("button", "kw-png", "PNG");
      png.type = "button";
      png.title = "Download this chart as PNG";
      png.setAttribute("aria-label", `Download ${chart.title} as PNG`);
      png.addEventListener("click", () => this.exportPng(chart, card));
      header.appendChild(png);
      card.appendChild(header);
      for (const panel of chart.panels) {
        if (panel.title) card.appendChild(el("div", "kw-panel-title", panel.title));
        const holder = el("div", "kw-plot");
        card.appendChild(holder);
        const note = el("div", "kw-note");
        card.appendChild(note);
        this.panels.push({ chart, panel, holder, note, plot: null });
      }
      if (chart.id === "kl" && chart.panels[0].lanes.length) {
        const lanes = el("div", "kw-lanes");
        const severity = {};
        for (const a of chart.panels[0].alerts) severity[a.rule] = severity[a.rule] || a.severity;
        for (const lane of chart.panels[0].lanes) {
          const item = el("span", "kw-lane");
          const swatch = el("span", "kw-swatch");
          swatch.style.background = lane.color;
          item.appendChild(swatch);
          item.appendChild(document.createTextNode(`${lane.rule} (${severity[lane.rule]})`));
          lanes.appendChild(item);
        }
        card.appendChild(lanes);
      }
      grid.appendChild(card);
    }
    this.tooltip = el("div", "kw-tooltip");
    this.tooltip.setAttribute("role", "tooltip");
    container.appendChild(this.tooltip);
    this.resize.disconnect();
    this.resize.observe(grid);
    if (this.rows.some(Boolean)) this.draw();
  }

  makePlot(entry) {
    const uPlot = window.uPlot;
    const { panel, holder } = entry;
    const theme = this.theme();
    this.themeKey = JSON.stringify(theme);
    const smoothing = this.data.spec.smoothing > 0;
    const height = entry.chart.panels.length > 1 ? MULTI_PANEL_HEIGHT : PANEL_HEIGHT;
    const series = [{ label: "step" }];
    for (const s of panel.series) {
      series.push({
        label: smoothing ? `${s.label} (raw)` : s.label,
        stroke: smoothing ? withAlpha(s.color, RAW_ALPHA) : s.color,
        width: 1.5,
        spanGaps: false,
        points: { show: false },
      });
    }
    if (smoothing) {
      for (const s of panel.series) {
        series.push({ label: s.label, stroke: s.color, width: 2, spanGaps: false, points: { show: false } });
      }
    }
    const axis = {
      stroke: theme.text,
      grid: { stroke: withAlpha("#808080", 0.15), width: 1 },
      ticks: { stroke: withAlpha("#808080", 0.3), width: 1 },
      font: `11px ${theme.font}`,
    };
    const opts = {
      width: Math.max(200, holder.clientWidth),
      height,
      pxAlign: 0,
      scales: {
        x: { time: false },
        y: panel.log ? { distr: 3 } : { range: (u, min, max) => linearRange(min, max) },
      },
      axes: [
        { ...axis, label: "step", labelFont: `11px ${theme.font}`, labelSize: 16 },
        { ...axis, label: panel.y_label, labelFont: `11px ${theme.font}`, labelSize: 16, size: 56 },
      ],
      series,
      legend: { live: true },
      cursor: { sync: { key: "klwatch-live" }, drag: { x: true, y: false } },
      hooks: {
        drawAxes: [(u) => this.drawUnder(u, panel)],
        draw: [(u) => this.drawMarkers(u, panel)],
        setSelect: [
          (u) => {
            if (u.select.width > 2) {
              this.zoom = { min: u.posToVal(u.select.left, "x"), max: u.posToVal(u.select.left + u.select.width, "x") };
            }
          },
        ],
        setCursor: [(u) => this.hover(u, panel)],
      },
    };
    const plot = new uPlot(opts, this.plotData(panel), holder);
    plot.over.addEventListener("dblclick", () => {
      this.zoom = null;
    });
    plot.over.addEventListener("mouseleave", () => {
      this.tooltip.style.display = "none";
    });
    return plot;
  }

  plotData(panel) {
    // uPlot's columns: x, each series raw, then (smoothing on) each series smoothed.
    const smoothing = this.data.spec.smoothing > 0;
    const pick = (values) =>
      panel.log ? values.map((v) => (v !== null && v > 0 ? v : null)) : values;
    const sources = panel.series.map((s) => s.source || 0);
    if (sources.every((i) => i === sources[0])) {
      const rows = this.rows[sources[0]];
      const empty = panel.series.map(() => []);
      if (!rows) return [[], ...empty, ...(smoothing ? empty : [])];
      const data = [rows.x];
      for (const s of panel.series) data.push(pick(rows.series[s.key] || []));
      if (smoothing) for (const s of panel.series) data.push(pick((rows.smooth || {})[s.key] || []));
      return data;
    }
    // Several runs on one chart (compare): each on its own steps, aligned by uPlot.join;
    // a run's own gaps (NaN) stay gaps, a step another run lacks is spanned.
    const width = smoothing ? 2 : 1;
    const tables = panel.series.map((s) => {
      const rows = this.rows[s.source];
      if (!rows) return [[], [], ...(smoothing ? [[]] : [])];
      const table = [rows.x, pick(rows.series[s.key] || [])];
      if (smoothing) table.push(pick((rows.smooth || {})[s.key] || []));
      return table;
    });
    const joined = window.uPlot.join(tables, tables.map(() => Array(width).fill(1)));
    const raw = panel.series.map((_, j) => joined[1 + j * width]);
    const smooth = smoothing ? panel.series.map((_, j) => joined[2 + j * width]) : [];
    return [joined[0], ...raw, ...smooth];
  }

  drawUnder(u, panel) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    const band = panel.band;
    if (band) {
      const y1 = u.valToPos(band.high, "y", true);
      const y0 = u.valToPos(band.low, "y", true);
      ctx.fillStyle = "rgba(44,160,44,0.10)";
      ctx.fillRect(left, Math.min(y0, y1), width, Math.abs(y0 - y1));
      ctx.fillStyle = "#2ca02c";
      ctx.font = `${10 * devicePixelRatio}px sans-serif`;
      ctx.textAlign = "left"; // uPlot leaves the y axis's "right" set
      ctx.textBaseline = "bottom";
      ctx.fillText(band.label, left + 4, y1 - 2);
      if (band.target) {
        const yt = u.valToPos(band.target, "y", true);
        ctx.strokeStyle = "#2ca02c";
        ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.beginPath();
        ctx.moveTo(left, yt);
        ctx.lineTo(left + width, yt);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.textAlign = "right";
        ctx.textBaseline = "top";
        ctx.fillText(`target ${band.target}`, left + width - 4, yt + 2);
        ctx.textAlign = "left";
      }
    }
    const xs = u.data[0];
    const last = xs.length ? xs[xs.length - 1] : 0;
    const lanes = {};
    panel.lanes.forEach((lane, i) => (lanes[lane.rule] = i));
    const laneH = height * LANE_HEIGHT;
    for (const a of panel.alerts) {
      const end = a.end === null ? last : a.end;
      const x0 = u.valToPos(a.step, "x", true);
      if (end <= a.step) {
        ctx.strokeStyle = withAlpha(a.color, 0.8);
        ctx.setLineDash([2 * devicePixelRatio, 3 * devicePixelRatio]);
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.beginPath();
        ctx.moveTo(x0, top);
        ctx.lineTo(x0, top + height);
        ctx.stroke();
        ctx.setLineDash([]);
        continue;
      }
      const x1 = u.valToPos(end, "x", true);
      ctx.fillStyle = withAlpha(a.color, SPAN_ALPHA);
      ctx.fillRect(x0, top, x1 - x0, height);
      ctx.fillStyle = withAlpha(a.color, LANE_ALPHA);
      ctx.fillRect(x0, top + (lanes[a.rule] || 0) * laneH, x1 - x0, laneH);
    }
    ctx.restore();
  }

  markerY(u, panel, a) {
    if (a.value !== null && (!panel.log || a.value > 0)) return a.value;
    const xs = u.data[0];
    const i = searchStep(xs, a.step);
    if (i < xs.length && xs[i] === a.step) {
      for (let s = 1; s < u.data.length; s++) {
        const v = u.data[s][i];
        if (v !== null && v !== undefined && Number.isFinite(v)) return v;
      }
    }
    return u.scales.y.max;
  }

  drawMarkers(u, panel) {
    if (!panel.alerts.length) return;
    const ctx = u.ctx;
    const r = MARKER_PX * devicePixelRatio;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - r, width, height + 2 * r);
    ctx.clip();
    for (const a of panel.alerts) {
      const y = this.markerY(u, panel, a);
      if (y === null || y === undefined || !Number.isFinite(y)) continue;
      const cx = u.valToPos(a.step, "x", true);
      const cy = Math.max(top, u.valToPos(y, "y", true));
      ctx.fillStyle = a.marker;
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = devicePixelRatio;
      ctx.beginPath();
      ctx.moveTo(cx - r, cy - r * 1.6);
      ctx.lineTo(cx + r, cy - r * 1.6);
      ctx.lineTo(cx, cy);
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
    }
    ctx.restore();
  }

  hover(u, panel) {
    const left = u.cursor.left;
    const near =
      left !== null && left >= 0
        ? panel.alerts.filter((a) => Math.abs(u.valToPos(a.step, "x") - left) <= MARKER_PX)
        : [];
    if (!near.length) {
      if (this.tooltipOwner === u) {
        this.tooltip.style.display = "none";
        this.tooltipOwner = null;
      }
      return;
    }
    // Only the chart under the mouse says its alerts (the others follow its cursor).
    if (!u.over.matches(":hover")) return;
    this.tooltip.replaceChildren(
      ...near.slice(0, 4).map((a) => el("div", "", `step ${a.step.toLocaleString("en-US")} · ${a.message}`))
    );
    const box = u.over.getBoundingClientRect();
    const rootBox = this.root.querySelector(".kw-live").getBoundingClientRect();
    this.tooltip.style.left = `${box.left - rootBox.left + left + 12}px`;
    this.tooltip.style.top = `${box.top - rootBox.top + (u.cursor.top || 0) + 12}px`;
    this.tooltip.style.display = "block";
    this.tooltipOwner = u;
  }

  draw() {
    this.lastDraw = Date.now();
    if (!window.uPlot || !this.rows.some(Boolean)) return;
    // When each step reached the screen (benchmarks/bench_page_render.py reads it).
    this.draws.push([this.lastDraw, this.rows[0] ? this.rows[0].last_step : null]);
    if (this.draws.length > 600) this.draws.splice(0, 300);
    for (const entry of this.panels) {
      if (!entry.plot) {
        entry.plot = this.makePlot(entry);
      } else {
        entry.plot.setData(this.plotData(entry.panel), true);
      }
      if (this.zoom) entry.plot.setScale("x", this.zoom);
      entry.note.textContent = entry.panel.log ? this.logNote(entry.panel) : "";
    }
  }

  logNote(panel) {
    const counts = {};
    for (const s of panel.series) {
      const rows = this.rows[s.source || 0];
      counts[s.label] = rows && rows.nonpositive ? rows.nonpositive[s.key] || 0 : 0;
    }
    return logNote(counts, panel.series.map((s) => s.label));
  }

  scheduleDraw() {
    if (this.drawTimer) return;
    const wait = Math.max(0, REDRAW_MIN_MS - (Date.now() - this.lastDraw));
    this.drawTimer = setTimeout(() => {
      this.drawTimer = null;
      if (!this.destroyed) this.draw();
    }, wait);
  }

  fit() {
    for (const entry of this.panels) {
      if (entry.plot) {
        const width = Math.max(200, entry.holder.clientWidth);
        if (width !== entry.plot.width) entry.plot.setSize({ width, height: entry.plot.height });
      }
    }
  }

  stopPolling() {
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  async poll() {
    this.stopPolling();
    if (!this.root.isConnected) this.destroy(); // unmounted: nothing left to follow
    if (this.destroyed || document.visibilityState === "hidden") return;
    const data = this.data;
    let next = data.idle_ms;
    try {
      await loadUPlot(data.uplot);
      const answers = await Promise.all(data.sources.map((src, i) => this.ask(data, src, i)));
      if (this.data !== data || this.destroyed) return; // a rerun replaced the spec meanwhile
      const lost = answers.filter((a) => a.away || a.gone);
      if (lost.length) {
        // The session is away (its websocket dropped: a laptop asleep, a proxy timeout) or
        // a run left the roots: a rerun draws the page again, with a fresh token.
        this.statusText.textContent = lost.some((a) => a.away)
          ? "reconnecting to the dashboard server …"
          : "a run is no longer under the dashboard's roots: updating the page";
        this.askRerun(lost.some((a) => a.away) ? "away" : "gone");
      } else {
        this.onAnswers(answers);
      }
      // A running run that wrote nothing for a while is asked less often (a long step):
      // its next row still reaches the screen within a second of the poll that sees it.
      const quiet = Date.now() - this.changedAt > QUIET_AFTER_MS;
      const live = answers.some((a) => a.live);
      next = !live ? data.idle_ms : quiet ? QUIET_POLL_MS : data.live_ms;
    } catch (error) {
      this.statusText.textContent = `cannot reach the dashboard server (${error.message}); retrying`;
    }
    if (data.paused) {
      this.statusText.textContent = "❚❚ paused";
      return;
    }
    if (!this.destroyed && this.data === data) this.pollTimer = setTimeout(() => this.poll(), next);
  }

  async ask(data, src, i) {
    // One source's answer; {away} when the session's token is not valid now (401), {gone}
    // when the run is no longer under the roots (404).
    const have = encodeURIComponent(this.versions[i] || "");
    const url = `${data.url}?${src.query}&page=${src.page_key}&have=${have}`;
    const response = await fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { [data.token_header]: data.token },
    });
    if (response.status === 401) return { away: true };
    if (response.status === 404) return { gone: true };
    if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
    return response.json();
  }

  askRerun(key, force = false) {
    // At most once per key, and again only after ASK_AGAIN_MS (were the page's key and the
    // endpoint's ever to disagree for good, that is one rerun per 10 s, never a loop).
    if (!force && this.asked === key && Date.now() - this.askedAt < ASK_AGAIN_MS) return;
    this.asked = key;
    this.askedAt = Date.now();
    this.setTriggerValue("page", key);
  }

  followTheme() {
    // Canvas colours are taken when a chart is built: after the viewer switches Streamlit's
    // theme (its settings menu; no rerun), build the charts again. Checked every 2 s.
    if (Date.now() - (this.themeCheckedAt || 0) < THEME_CHECK_MS) return;
    this.themeCheckedAt = Date.now();
    if (this.themeKey && JSON.stringify(this.theme()) !== this.themeKey) this.build(true);
  }

  onAnswers(answers) {
    this.followTheme();
    const sources = this.data.sources;
    if (!answers.some((a) => a.loaded)) {
      this.statusText.textContent = "loading …";
      return;
    }
    let fresh = false;
    answers.forEach((answer, i) => {
      if (answer.data) {
        this.rows[i] = answer.data;
        this.versions[i] = answer.version;
        fresh = true;
      }
    });
    if (fresh) {
      this.changedAt = Date.now();
      if (!this.panels.some((p) => p.plot)) this.draw();
      else this.scheduleDraw();
    }
    const live = answers.some((a) => a.live) ? "● live" : "■ not running";
    const ages = answers.map((a) => a.age).filter((a) => a !== null && a !== undefined);
    const age = ages.length ? Math.min(...ages) : null;
    const first = this.rows[0];
    const what =
      sources.length > 1
        ? ` · ${sources.length} runs`
        : first && first.last_step !== null
          ? ` · step ${first.last_step.toLocaleString("en-US")}`
          : "";
    const said = `${live}${what} · updated ${formatAge(age)} ago`;
    if (this.statusText.textContent !== said) this.statusText.textContent = said;
    const news = answers.flatMap((a, i) =>
      (a.news || []).map((n) => ({ ...n, line: sources.length > 1 ? `${sources[i].run}: ${n.line}` : n.line }))
    );
    if (news.length) this.showNews(news);
    const page = pageOf(answers.map((a) => ({ page_key: a.page })));
    const stale = page !== pageOf(sources);
    // New rows since the page was drawn, a while ago: refresh its header and sidebar.
    const refreshDue =
      answers.some((a, i) => a.version !== sources[i].version) &&
      Date.now() - this.lastRefresh > this.data.refresh_ms;
    if (stale) {
      // What a person must see at once changed (an alert, a status, the run list): the
      // page itself is redrawn by a Streamlit rerun; until it lands, say so.
      if (this.asked !== page) this.announce.textContent = "Alerts or a status changed: updating the page.";
      this.askRerun(page);
    } else if (refreshDue && Date.now() - this.askedAt > ASK_AGAIN_MS) {
      this.askRerun(page, true);
    }
  }

  showNews(news) {
    // Alerts first, page after: the rerun that redraws the banner can take a second or two
    // on a busy browser; this line is there at the poll that saw them (role="alert").
    const lines = news.map((n) => `${n.severity === "critical" ? "⛔" : "⚠"} ${n.line}`);
    if (this.newsBox.textContent === lines.join("")) return;
    this.newsBox.replaceChildren(...lines.map((line) => el("div", "", line)));
    this.newsBox.hidden = false;
  }

  exportPng(chart, card) {
    const entries = this.panels.filter((p) => p.chart === chart && p.plot);
    if (!entries.length) return;
    const theme = this.theme();
    const dpr = devicePixelRatio;
    const title = 28 * dpr;
    const canvases = entries.map((p) => p.plot.ctx.canvas);
    const width = Math.max(...canvases.map((c) => c.width));
    const height = title + canvases.reduce((sum, c) => sum + c.height, 0);
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const ctx = out.getContext("2d");
    ctx.fillStyle = theme.bg;
    ctx.fillRect(0, 0, width, height);
    ctx.fillStyle = theme.text;
    ctx.font = `${14 * dpr}px ${theme.font}`;
    ctx.textBaseline = "middle";
    ctx.fillText(chart.title, 8 * dpr, title / 2);
    let y = title;
    for (const c of canvases) {
      ctx.drawImage(c, 0, y);
      y += c.height;
    }
    const link = document.createElement("a");
    link.download = `klwatch-${this.data.file_stem}-${chart.id}.png`;
    link.href = out.toDataURL("image/png");
    card.appendChild(link);
    link.click();
    link.remove();
  }

  destroy() {
    this.destroyed = true;
    this.stopPolling();
    clearTimeout(this.drawTimer);
    this.resize.disconnect();
    document.removeEventListener("visibilitychange", this.onVisible);
    for (const p of this.panels) p.plot && p.plot.destroy();
    this.panels = [];
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let page = parentElement.__klwatchLive;
  if (page && page.pendingDestroy) {
    clearTimeout(page.pendingDestroy); // re-rendered, not unmounted: keep the charts
    page.pendingDestroy = null;
  }
  if (!page || page.destroyed) {
    page = parentElement.__klwatchLive = new LivePage(parentElement, setTriggerValue);
  }
  page.update(data, setTriggerValue);
  return () => {
    // Streamlit calls this when the element goes — and, racing a re-render, sometimes for a
    // render already replaced: only an element out of the page is gone for good.
    page.pendingDestroy = setTimeout(() => {
      if (!parentElement.isConnected) page.destroy();
    }, 0);
  };
}
