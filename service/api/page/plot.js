// The time axis of the page (Plotly): moment bands per query and the summary on top, the saliency curves below,
// both on the video's seconds, with a cursor that follows the player.

const COLORS = ["#4f7cff", "#ff7a45", "#22b07d", "#b35cff", "#e8b400", "#ff4f8b"];
const CURSOR = { type: "line", xref: "x", yref: "paper", x0: 0, x1: 0, y0: 0, y1: 1,
                 line: { color: "#e5484d", width: 2 } };

export class TimePlot {
  constructor(element, { onSeek, onHover, onUnhover }) {
    this.el = element;
    this.onSeek = onSeek;
    this.onHover = onHover;
    this.onUnhover = onUnhover;
    this.results = [];
    this.segments = [];
    this.duration = 0;
    this.cursor = 0;
  }

  // results: the moments answer's results (one per query); segments: the summary's (may be empty).
  show(duration, results, segments = []) {
    this.duration = duration;
    this.results = results;
    this.segments = segments;
    this.draw();
  }

  setSegments(segments) {
    this.segments = segments;
    this.draw();
  }

  clear() {
    this.results = [];
    this.segments = [];
    Plotly.purge(this.el);
  }

  draw() {
    const rows = this.results.map((r, i) => label(r.query, i));
    const traces = [];
    this.results.forEach((r, i) => {
      const color = COLORS[i % COLORS.length];
      const spans = clipSpans(r);
      traces.push({
        type: "scatter", mode: "lines+markers", name: rows[i], legendgroup: rows[i],
        x: spans.map(([a, b]) => (a + b) / 2),
        y: r.saliency,
        customdata: spans.map(([a, b], c) => [c, a, b]),
        hoverinfo: "none",  // the page's hover card shows the clip (time, value, thumbnail)
        line: { color, width: 2, shape: "spline", smoothing: 0.4 },
        marker: { color, size: 5 },
        meta: { kind: "saliency", query: i },
      });
      if (r.moments.length) traces.push(bands(r.moments, rows[i], color, rows[i]));
    });
    if (this.segments.length) traces.push(bands(this.segments, "summary", "#8a94a6", "summary"));
    const layout = {
      margin: { l: 56, r: 16, t: 8, b: 36 },
      height: 300,
      showlegend: false,
      hovermode: "closest",
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "inherit", size: 12, color: "#c9d1e0" },
      xaxis: { range: [0, this.duration], title: { text: "seconds" }, gridcolor: "#2a3142", zeroline: false },
      yaxis: { domain: [0, 0.62], title: { text: "saliency" }, gridcolor: "#2a3142", zeroline: false },
      yaxis2: { domain: [0.7, 1], type: "category", autorange: "reversed", anchor: "x", gridcolor: "#2a3142",
                automargin: true },
      bargap: 0.35,
      shapes: [{ ...CURSOR, x0: this.cursor, x1: this.cursor }],
    };
    Plotly.react(this.el, traces, layout, { displayModeBar: false, responsive: true });
    if (!this.el.dataset.wired) {
      this.el.dataset.wired = "1";
      this.el.on("plotly_click", (e) => {
        const p = e.points[0];
        if (p.data.meta.kind === "band") this.onSeek(p.customdata[0]);
        else this.onSeek(p.customdata[1]);
      });
      this.el.on("plotly_hover", (e) => {
        const p = e.points[0];
        if (p.data.meta.kind === "saliency") this.onHover(p.data.meta.query, p.customdata[0], p.y, e.event);
      });
      this.el.on("plotly_unhover", () => this.onUnhover());
    }
  }

  // The cursor at the player's time (called on each animation frame while playing).
  moveCursor(seconds) {
    if (!this.results.length || Math.abs(seconds - this.cursor) < 1e-3) return;
    this.cursor = seconds;
    Plotly.relayout(this.el, { "shapes[0].x0": seconds, "shapes[0].x1": seconds });
  }

  // How many saliency points are drawn for a query (read back from the rendered plot).
  drawnPoints(query = 0) {
    return this.el.querySelectorAll(`.scatterlayer .trace:nth-child(${query + 1}) .points path`).length;
  }
}

// [start, end] seconds of each clip (the last one may be cut by the end of the video).
export function clipSpans(r) {
  return r.saliency.map((_, c) => [c * r.clip_seconds, Math.min((c + 1) * r.clip_seconds, r.duration)]);
}

function label(query, i) {
  const short = query.length > 24 ? `${query.slice(0, 23)}…` : query;
  return `${i + 1}. ${short}`;
}

// Horizontal bars from start to end on the top axis; opacity follows the score.
function bands(items, row, color, name) {
  return {
    type: "bar", orientation: "h", yaxis: "y2", name, showlegend: false,
    y: items.map(() => row),
    base: items.map((m) => m.start),
    x: items.map((m) => Math.max(m.end - m.start, 1e-3)),
    customdata: items.map((m) => [m.start, m.end, m.score]),
    hovertemplate: "%{customdata[0]:.1f}–%{customdata[1]:.1f} s<br>score %{customdata[2]:.3f}<extra></extra>",
    marker: { color, opacity: items.map((m) => 0.35 + 0.65 * Math.max(0, Math.min(1, m.score))),
              line: { color, width: 1 } },
    meta: { kind: "band" },
  };
}
