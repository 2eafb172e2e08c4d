/**
 * The compilation report as one self-contained HTML page: a summary table,
 * per-layer cost bars and the passes' and targets' statistics drawn as inline
 * SVG (histograms, spectra, SQNR, memory plan, image map). Generated from the
 * JSON report only, so page and JSON agree; no script, no fetched resource, and
 * the same report gives the same bytes (timings are left out).
 * @module
 */
import { escapeControl } from "../ir/quote.ts";
import type { StatValue } from "../passes/pass.ts";
import type { CompileReport, LayerRow, LayerSide } from "./report.ts";
import type { BudgetPoint } from "./budget.ts";

const ENTITIES: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/**
 * `text` safe inside HTML or SVG text and attribute values: control characters escaped as `ir/quote.ts` does, and
 * `& < > " '` as entities.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { escapeHtml } from "./report_html.ts";
 * assert.equal(escapeHtml('<b a="1">&\n'), "&lt;b a=&quot;1&quot;&gt;&amp;\\n");
 * ```
 */
export function escapeHtml(text: string): string {
  return escapeControl(text).replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

const BEFORE = "#c3c9d3";
const AFTER = "#2563c9";
const MARK = "#d1342f";
const PALETTE = ["#2563c9", "#e0812a", "#2f9e5a", "#8e4fc1", "#c23b70", "#1b9aa8", "#8a6d3b", "#5b6472"];

/** A coordinate with at most one decimal, so the page's bytes do not depend on float noise. */
const px = (x: number): string => String(Math.round(x * 10) / 10);

/** `1234567` as `1,234,567`; a fraction with four significant digits. */
function num(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (!Number.isInteger(n)) return String(Number(n.toPrecision(4)));
  const s = String(Math.abs(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return n < 0 ? `-${s}` : s;
}

/** Axis label: `1.5k`, `2M`, `0.25`. */
function compact(n: number): string {
  const units: [number, string][] = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [scale, unit] of units) if (Math.abs(n) >= scale) return `${Number((n / scale).toPrecision(3))}${unit}`;
  return String(Number(n.toPrecision(3)));
}

/** Three significant digits, shortest form: `0.001`, `5.82e-7`. */
const sig = (n: number): string => String(Number(n.toPrecision(3)));

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

function ratioText(before: number, after: number): string {
  if (before === after || after === 0) return before === after ? "unchanged" : "";
  return before > after ? `${(before / after).toFixed(2)}x smaller` : `${(after / before).toFixed(2)}x larger`;
}

/** Evenly spaced round ticks from 0 covering `max`. */
function ticks(max: number, count = 4): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  const out: number[] = [];
  for (let i = 0; i * step < max + step * 1e-9 || out.length < 2; i++) out.push(Number((i * step).toPrecision(12)));
  if (out[out.length - 1] < max) out.push(Number((out.length * step).toPrecision(12)));
  return out;
}

function svg(width: number, height: number, label: string, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
    `role="img" aria-label="${escapeHtml(label)}">${body}</svg>`;
}

function text(x: number, y: number, content: string, attrs = ""): string {
  return `<text x="${px(x)}" y="${px(y)}"${attrs === "" ? "" : ` ${attrs}`}>${escapeHtml(content)}</text>`;
}

function rect(x: number, y: number, w: number, h: number, fill: string, title?: string): string {
  const t = title === undefined ? "" : `<title>${escapeHtml(title)}</title>`;
  const open = `<rect x="${px(x)}" y="${px(y)}" width="${px(Math.max(0, w))}" height="${px(Math.max(0, h))}" ` +
    `fill="${fill}"`;
  return t === "" ? `${open}/>` : `${open}>${t}</rect>`;
}

function line(x1: number, y1: number, x2: number, y2: number, attrs: string): string {
  return `<line x1="${px(x1)}" y1="${px(y1)}" x2="${px(x2)}" y2="${px(y2)}" ${attrs}/>`;
}

/** A long layer name cut to `max` characters from the left (the end of a name says most). */
function shortName(name: string, max = 34): string {
  return name.length <= max ? name : `…${name.slice(name.length - max + 1)}`;
}

// ---- Statistic accessors: stats are plain JSON of the passes' and targets' choosing, read defensively ----

type Json = StatValue | undefined;
const isRecord = (v: Json): v is { readonly [key: string]: StatValue } =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const numbers = (v: Json): number[] | null =>
  Array.isArray(v) && v.every((x) => typeof x === "number") ? (v as number[]) : null;
const numberOf = (v: Json): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);

// ---- Charts ----

/** One column of a bar table: a title, the axis unit and each row's before/after values (null: no bar). */
interface BarColumn {
  title: string;
  values: readonly (readonly [number | null, number | null])[];
  format?: (n: number) => string;
}

/**
 * Horizontal bars, one row per label and one column per quantity: before as a wide grey bar, after as a narrow blue
 * one over it, each column on its own linear axis from 0.
 */
function barTable(labels: readonly string[], columns: readonly BarColumn[], caption: string): string {
  const labelW = 250, colW = 230, gap = 24, rowH = 20, top = 26, axisH = 28;
  const width = labelW + columns.length * (colW + gap);
  const height = top + labels.length * rowH + axisH;
  const parts: string[] = [];
  labels.forEach((l, i) => {
    const y = top + i * rowH;
    if (i % 2 === 1) parts.push(rect(0, y, width, rowH, "#f4f6f9"));
    parts.push(text(labelW - 8, y + 14, shortName(l), 'text-anchor="end" class="lbl"'));
  });
  columns.forEach((c, ci) => {
    const x0 = labelW + ci * (colW + gap);
    const format = c.format ?? num;
    const max = Math.max(0, ...c.values.flatMap(([b, a]) => [b ?? 0, a ?? 0]));
    const tk = ticks(max);
    const scale = (v: number): number => (v / tk[tk.length - 1]) * colW;
    parts.push(text(x0, 16, c.title, 'class="ctitle"'));
    for (const t of tk) {
      parts.push(line(x0 + scale(t), top, x0 + scale(t), top + labels.length * rowH, 'stroke="#dde1e7"'));
      parts.push(text(x0 + scale(t), top + labels.length * rowH + 16, compact(t), 'text-anchor="middle" class="tick"'));
    }
    c.values.forEach(([b, a], i) => {
      const y = top + i * rowH;
      const tip = `${labels[i]}: ${b === null ? "-" : format(b)} -> ${a === null ? "-" : format(a)}`;
      if (b !== null) parts.push(rect(x0, y + 3, scale(b), rowH - 6, BEFORE, tip));
      if (a !== null) {
        parts.push(rect(x0, y + (b === null ? 3 : 7), scale(a), b === null ? rowH - 6 : rowH - 14, AFTER, tip));
      }
    });
    parts.push(line(x0, top, x0, top + labels.length * rowH, 'stroke="#8a93a0"'));
  });
  return svg(width, height, caption, parts.join(""));
}

interface HistogramSpec {
  /** Bin edges (counts.length + 1). */
  edges: readonly number[];
  counts: readonly number[];
  /** Edges are powers of ten apart on a log axis. */
  log: boolean;
  marker: number | null;
  markerLabel: string;
  xLabel: string;
  yLabel: string;
  caption: string;
}

/** A histogram with labelled axes and a vertical marker (a threshold), bins drawn at equal widths. */
function histogram(h: HistogramSpec): string {
  const left = 56, right = 20, top = 14, bottom = 44, plotW = 560, plotH = 170;
  const n = h.counts.length;
  const tk = ticks(Math.max(1, ...h.counts));
  const yMax = tk[tk.length - 1];
  const y = (c: number): number => top + plotH - (c / yMax) * plotH;
  const pos = (v: number): number => (h.log ? Math.log10(v) : v);
  const lo = pos(h.edges[0]), hi = pos(h.edges[n]);
  const x = (v: number): number => left + ((pos(v) - lo) / (hi - lo)) * plotW;
  const parts: string[] = [];
  for (const t of tk) {
    parts.push(line(left, y(t), left + plotW, y(t), 'stroke="#e3e6eb"'));
    parts.push(text(left - 6, y(t) + 4, compact(t), 'text-anchor="end" class="tick"'));
  }
  h.counts.forEach((c, i) => {
    const x0 = x(h.edges[i]), x1 = x(h.edges[i + 1]);
    const below = h.marker !== null && h.edges[i + 1] <= h.marker;
    const range = `[${h.edges[i].toPrecision(3)}, ${h.edges[i + 1].toPrecision(3)}): ${c}`;
    parts.push(rect(x0 + 0.5, y(c), x1 - x0 - 1, top + plotH - y(c), below ? BEFORE : AFTER, range));
  });
  h.edges.forEach((e, i) => {
    const label = h.log
      ? (Number.isInteger(Math.round(Math.log10(e) * 1e6) / 1e6) ? `1e${Math.round(Math.log10(e))}` : "")
      : (
        n <= 10 || i % 2 === 0 ? String(Number(e.toPrecision(3))) : ""
      );
    if (label !== "") parts.push(text(x(e), top + plotH + 16, label, 'text-anchor="middle" class="tick"'));
  });
  parts.push(line(left, top + plotH, left + plotW, top + plotH, 'stroke="#8a93a0"'));
  parts.push(line(left, top, left, top + plotH, 'stroke="#8a93a0"'));
  if (h.marker !== null && (!h.log || h.marker > 0)) {
    const m = Math.min(Math.max(x(h.marker), left), left + plotW);
    parts.push(line(m, top - 4, m, top + plotH, `stroke="${MARK}" stroke-width="2" stroke-dasharray="5 3"`));
    parts.push(text(m + 5, top + 10, h.markerLabel, `class="mark" fill="${MARK}"`));
  }
  parts.push(text(left + plotW / 2, top + plotH + 36, h.xLabel, 'text-anchor="middle" class="axis"'));
  parts.push(
    text(
      14,
      top + plotH / 2,
      h.yLabel,
      `text-anchor="middle" class="axis" transform="rotate(-90 14 ${top + plotH / 2})"`,
    ),
  );
  return svg(left + plotW + right, top + plotH + bottom, h.caption, parts.join(""));
}

/** Singular values of one layer as bars, those kept in blue, with the chosen rank marked. */
function spectrum(name: string, sigma: readonly number[], rank: number, fullRank: number | null): string {
  const left = 44, top = 30, plotW = 250, plotH = 110, bottom = 34;
  const tk = ticks(Math.max(...sigma, 1e-30), 3);
  const yMax = tk[tk.length - 1];
  const bw = plotW / sigma.length;
  const parts: string[] = [text(0, 14, shortName(name, 42), 'class="ctitle"')];
  for (const t of tk) {
    const y = top + plotH - (t / yMax) * plotH;
    parts.push(line(left, y, left + plotW, y, 'stroke="#e3e6eb"'));
    parts.push(text(left - 5, y + 4, compact(t), 'text-anchor="end" class="tick"'));
  }
  sigma.forEach((s, i) => {
    const h = (s / yMax) * plotH;
    parts.push(
      rect(left + i * bw + (bw > 3 ? 0.5 : 0), top + plotH - h, bw > 3 ? bw - 1 : bw, h, i < rank ? AFTER : BEFORE),
    );
  });
  const m = left + rank * bw;
  parts.push(line(m, top - 6, m, top + plotH, `stroke="${MARK}" stroke-width="2" stroke-dasharray="4 3"`));
  parts.push(
    text(m + 4, top + 2, `rank ${rank}${fullRank === null ? "" : ` of ${fullRank}`}`, `class="mark" fill="${MARK}"`),
  );
  parts.push(line(left, top + plotH, left + plotW, top + plotH, 'stroke="#8a93a0"'));
  parts.push(text(left, top + plotH + 14, "1", 'text-anchor="start" class="tick"'));
  parts.push(text(left + plotW, top + plotH + 14, String(sigma.length), 'text-anchor="end" class="tick"'));
  parts.push(text(left + plotW / 2, top + plotH + 28, "singular value index", 'text-anchor="middle" class="axis"'));
  parts.push(text(12, top + plotH / 2, "σ", `text-anchor="middle" class="axis"`));
  return svg(left + plotW + 10, top + plotH + bottom, `singular values of ${name}`, parts.join(""));
}

const SQNR_STAGES: readonly [string, string][] = [
  ["sqnr-input-db", "input"],
  ["sqnr-weight-db", "weight"],
  ["sqnr-mac-db", "MAC"],
  ["sqnr-output-db", "output"],
  ["sqnr-in-model-db", "in model"],
];

/** Grouped horizontal bars: each layer's SQNR at each stage, on one dB axis. */
function sqnrChart(rows: readonly { name: string; db: readonly (number | null)[] }[]): string {
  const labelW = 250, plotW = 520, top = 34, barH = 5, rowH = SQNR_STAGES.length * barH + 10, axisH = 36;
  const max = Math.max(1, ...rows.flatMap((r) => r.db.map((d) => d ?? 0)));
  const tk = ticks(max, 5);
  const x = (db: number): number => labelW + (Math.max(0, db) / tk[tk.length - 1]) * plotW;
  const height = top + rows.length * rowH + axisH;
  const parts: string[] = [];
  SQNR_STAGES.forEach(([, label], s) => {
    parts.push(rect(labelW + s * 100, 6, 12, 12, PALETTE[s]));
    parts.push(text(labelW + s * 100 + 17, 16, label, 'class="tick"'));
  });
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    if (i % 2 === 1) parts.push(rect(0, y, labelW + plotW + 20, rowH, "#f4f6f9"));
    parts.push(text(labelW - 8, y + rowH / 2 + 4, shortName(r.name), 'text-anchor="end" class="lbl"'));
    r.db.forEach((d, s) => {
      if (d === null) return;
      const tip = `${r.name}: ${SQNR_STAGES[s][1]} ${d.toFixed(2)} dB`;
      parts.push(rect(labelW, y + 5 + s * barH, x(d) - labelW, barH - 1, PALETTE[s], tip));
    });
  });
  const bottom = top + rows.length * rowH;
  for (const t of tk) {
    parts.push(line(x(t), top, x(t), bottom, 'stroke="#dde1e7" stroke-opacity="0.8"'));
    parts.push(text(x(t), bottom + 14, String(t), 'text-anchor="middle" class="tick"'));
  }
  parts.push(text(labelW + plotW / 2, bottom + 30, "SQNR (dB, higher is better)", 'text-anchor="middle" class="axis"'));
  return svg(labelW + plotW + 20, height, "BFP SQNR per layer and stage", parts.join(""));
}

interface ArenaBuffer {
  tensor: string;
  start: number;
  end: number;
  bytes: number;
  offset: number;
}

/** The C arena: each tensor a box from the step that writes it to its last reader, at its offset. */
function arenaTimeline(buffers: readonly ArenaBuffer[], arenaBytes: number, lowerBound: number | null): string {
  const left = 70, top = 14, plotW = 700, plotH = 260, bottom = 44;
  const steps = Math.max(1, ...buffers.map((b) => b.end + 1));
  const yMax = Math.max(arenaBytes, ...buffers.map((b) => b.offset + b.bytes), 1) * 1.04;
  const tk = ticks(yMax, 4).filter((t) => t <= yMax);
  const x = (s: number): number => left + (s / steps) * plotW;
  const y = (b: number): number => top + (b / yMax) * plotH;
  const parts: string[] = [];
  for (const t of tk) {
    parts.push(line(left, y(t), left + plotW, y(t), 'stroke="#e3e6eb"'));
    parts.push(text(left - 6, y(t) + 4, compact(t), 'text-anchor="end" class="tick"'));
  }
  buffers.forEach((b, i) => {
    const tip = `${b.tensor}: ${num(b.bytes)} B at offset ${num(b.offset)}, steps ${b.start}-${b.end}`;
    parts.push(
      rect(
        x(b.start) + 1,
        y(b.offset),
        x(b.end + 1) - x(b.start) - 2,
        y(b.offset + b.bytes) - y(b.offset),
        PALETTE[i % PALETTE.length],
        tip,
      ),
    );
  });
  parts.push(line(left, y(arenaBytes), left + plotW, y(arenaBytes), `stroke="#222" stroke-width="1.5"`));
  parts.push(text(left + plotW - 4, y(arenaBytes) - 4, `arena ${num(arenaBytes)} B`, 'text-anchor="end" class="mark"'));
  if (lowerBound !== null && lowerBound < arenaBytes) {
    parts.push(line(left, y(lowerBound), left + plotW, y(lowerBound), `stroke="${MARK}" stroke-dasharray="5 3"`));
    parts.push(text(left + 4, y(lowerBound) - 4, `lower bound ${num(lowerBound)} B`, `class="mark" fill="${MARK}"`));
  }
  const stepTicks = ticks(steps, Math.min(steps, 8));
  for (const s of stepTicks) {
    if (s > steps) continue;
    parts.push(text(x(s), top + plotH + 16, String(s), 'text-anchor="middle" class="tick"'));
  }
  parts.push(line(left, top, left, top + plotH, 'stroke="#8a93a0"'));
  parts.push(
    text(
      left + plotW / 2,
      top + plotH + 36,
      "step (kernel call in execution order)",
      'text-anchor="middle" class="axis"',
    ),
  );
  parts.push(
    text(
      14,
      top + plotH / 2,
      "arena offset (bytes)",
      `text-anchor="middle" class="axis" transform="rotate(-90 14 ${top + plotH / 2})"`,
    ),
  );
  return svg(left + plotW + 20, top + plotH + bottom, "C arena memory plan", parts.join(""));
}

interface Segment {
  layer: string;
  kind: string;
  offset: number;
  bytes: number;
}

/** The FPGA image as a strip of bytes: each segment at its offset, coloured by kind, on its 4 KiB page. */
function segmentMap(segments: readonly Segment[], imageBytes: number): string {
  const left = 10, top = 30, plotW = 900, stripH = 34, bottom = 40;
  const kinds = [...new Set(segments.map((s) => s.kind))];
  const x = (b: number): number => left + (b / imageBytes) * plotW;
  const parts: string[] = [];
  kinds.forEach((k, i) => {
    parts.push(rect(left + i * 120, 6, 12, 12, PALETTE[i % PALETTE.length]));
    parts.push(text(left + i * 120 + 17, 16, k, 'class="tick"'));
  });
  parts.push(rect(left, top, plotW, stripH, "#eef0f3", "padding to 4096-byte boundaries"));
  for (const s of segments) {
    const tip = `${s.layer} ${s.kind}: ${num(s.bytes)} B at 0x${s.offset.toString(16)}`;
    parts.push(
      rect(
        x(s.offset),
        top,
        Math.max(1.5, x(s.offset + s.bytes) - x(s.offset)),
        stripH,
        PALETTE[kinds.indexOf(s.kind) % PALETTE.length],
        tip,
      ),
    );
  }
  for (const t of ticks(imageBytes, 6)) {
    if (t > imageBytes) continue;
    parts.push(line(x(t), top + stripH, x(t), top + stripH + 4, 'stroke="#8a93a0"'));
    parts.push(text(x(t), top + stripH + 16, compact(t), 'text-anchor="middle" class="tick"'));
  }
  parts.push(text(left + plotW / 2, top + stripH + 32, "image offset (bytes)", 'text-anchor="middle" class="axis"'));
  return svg(left + plotW + 20, top + stripH + bottom, "FPGA image segment map", parts.join(""));
}

// ---- Page ----

function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  numeric: readonly boolean[] = [],
): string {
  const cell = (tag: string, c: string, i: number): string =>
    `<${tag}${numeric[i] ? ' class="n"' : ""}>${escapeHtml(c)}</${tag}>`;
  return `<table><thead><tr>${header.map((h, i) => cell("th", h, i)).join("")}</tr></thead><tbody>${
    rows.map((r) => `<tr>${r.map((c, i) => cell("td", c, i)).join("")}</tr>`).join("\n")
  }</tbody></table>`;
}

function section(id: string, title: string, body: string, note = ""): string {
  const p = note === "" ? "" : `<p class="note">${escapeHtml(note)}</p>`;
  return `<section id="${id}"><h2>${escapeHtml(title)}</h2>${p}${body}</section>`;
}

function figure(chart: string, caption: string): string {
  return `<figure>${chart}<figcaption>${escapeHtml(caption)}</figcaption></figure>`;
}

function legend(items: readonly [string, string][]): string {
  return `<p class="legend">${
    items.map(([color, label]) => `<span><i style="background:${color}"></i>${escapeHtml(label)}</span>`).join("")
  }</p>`;
}

function summarySection(r: CompileReport): string {
  const { before: b, after: a } = r.totals;
  const rows: string[][] = [
    ["parameters", num(b.params), num(a.params), ratioText(b.params, a.params)],
    [
      "MACs",
      b.unknownMacLayers > 0 ? `${num(b.macs)} (+?)` : num(b.macs),
      a.unknownMacLayers > 0 ? `${num(a.macs)} (+?)` : num(a.macs),
      ratioText(b.macs, a.macs),
    ],
    ["weight bytes", num(b.weightBytes), num(a.weightBytes), ratioText(b.weightBytes, a.weightBytes)],
  ];
  if (a.sparseWeightBytes < a.weightBytes || b.sparseWeightBytes < b.weightBytes) {
    rows.push([
      "weight bytes, CSR where smaller",
      num(b.sparseWeightBytes),
      num(a.sparseWeightBytes),
      ratioText(b.sparseWeightBytes, a.sparseWeightBytes),
    ]);
  }
  rows.push([
    "peak activation bytes",
    num(b.peakActivationBytes),
    num(a.peakActivationBytes),
    ratioText(b.peakActivationBytes, a.peakActivationBytes),
  ]);
  if (r.accuracy !== undefined) {
    const d = 100 * (r.accuracy.after - r.accuracy.before);
    rows.push([
      `top-1 accuracy (${num(r.accuracy.samples)} samples)`,
      pct(r.accuracy.before),
      pct(r.accuracy.after),
      `${d >= 0 ? "+" : ""}${d.toFixed(2)} points`,
    ]);
  }
  const stats = r.target.stats ?? {};
  const memory = stats["memory"];
  if (isRecord(memory) && numberOf(memory["arenaBytes"]) !== null) {
    rows.push(["C arena bytes", "", num(numberOf(memory["arenaBytes"])!), ""]);
  }
  const est = stats["estimates"];
  if (isRecord(est) && isRecord(est["totals"])) {
    const t = est["totals"];
    for (const [k, label] of [["cycles", "FPGA cycles per sample"], ["bram18", "FPGA BRAM18"], ["dsp", "FPGA DSP"]]) {
      const v = numberOf(t[k]);
      if (v !== null) rows.push([label, "", num(v), ""]);
    }
  }
  const artifactBytes = r.artifacts.reduce((s, x) => s + x.bytes, 0);
  rows.push(["artifacts", "", `${num(r.artifacts.length)} files, ${num(artifactBytes)} B`, ""]);
  return section("summary", "Summary", table(["", "before", "after", "change"], rows, [false, true, true, true]));
}

function layerSection(layers: readonly LayerRow[]): string {
  if (layers.length === 0) return "";
  const pick = (f: (s: LayerSide) => number | null) =>
    layers.map((l) => [l.before && f(l.before), l.after && f(l.after)] as const);
  const chart = barTable(layers.map((l) => l.name), [
    { title: "parameters", values: pick((s) => s.params) },
    { title: "MACs", values: pick((s) => s.macs) },
    { title: "weight bytes", values: pick((s) => s.weightBytes) },
  ], "per-layer parameters, MACs and weight bytes before and after");
  const side = (s: LayerSide | null, f: (s: LayerSide) => number | null): string =>
    s === null ? "-" : f(s) === null ? "?" : num(f(s)!);
  const rows = layers.map((l) => [
    l.name,
    l.type,
    side(l.before, (s) => s.params),
    side(l.after, (s) => s.params),
    side(l.before, (s) => s.macs),
    side(l.after, (s) => s.macs),
    side(l.before, (s) => s.weightBytes),
    side(l.after, (s) => s.weightBytes),
  ]);
  const body = legend([[BEFORE, "before"], [AFTER, "after"]]) +
    figure(
      chart,
      "Each row is one op; a layer a pass created has only an after bar, one it removed only a before bar.",
    ) +
    `<details><summary>Table</summary>${
      table(["layer", "op", "params", "after", "MACs", "after", "weight bytes", "after"], rows, [
        false,
        false,
        true,
        true,
        true,
        true,
        true,
        true,
      ])
    }</details>`;
  return section("layers", "Per-layer cost", body);
}

function passesSection(r: CompileReport): string {
  if (r.passes.length === 0) return "";
  const rows = r.passes.map((p) => {
    const scalars = Object.entries(p.stats).filter(([, v]) => v === null || typeof v !== "object")
      .map(([k, v]) => `${k}: ${typeof v === "number" ? num(v) : String(v)}`);
    return [p.pipeline, p.changed ? "yes" : "no", scalars.join(", ")];
  });
  const diagnostics = r.passes.flatMap((p) => p.diagnostics.map((d) => [p.name, d.severity, d.message]))
    .concat(r.target.diagnostics.map((d) => [r.target.name, d.severity, d.message]));
  const diag = diagnostics.length === 0
    ? ""
    : `<h3>Diagnostics</h3>${table(["from", "severity", "message"], diagnostics)}`;
  return section("passes", "Passes", table(["pass", "changed", "statistics"], rows) + diag);
}

function histogramOf(v: Json): { edges: number[]; counts: number[]; threshold: number | null } | null {
  if (!isRecord(v)) return null;
  const edges = numbers(v["edges"]), counts = numbers(v["counts"]);
  if (edges === null || counts === null || edges.length !== counts.length + 1 || counts.length === 0) return null;
  return { edges, counts, threshold: numberOf(v["threshold"]) };
}

function pruningSection(r: CompileReport): string {
  const parts: string[] = [];
  for (const p of r.passes) {
    for (const [key, what] of [["gamma-histogram", "|γ| of BatchNormalization"], ["mask-histogram", "|mask|"]]) {
      const h = histogramOf(p.stats[key]);
      if (h === null) continue;
      const threshold = h.threshold === null ? "none" : sig(h.threshold);
      parts.push(
        `<h3>${escapeHtml(`${p.name}: ${what}`)}</h3>` + figure(
          histogram({
            ...h,
            log: true,
            marker: h.threshold,
            markerLabel: `threshold ${threshold}`,
            xLabel: `${what} (log scale)`,
            yLabel: "channels",
            caption: `${p.name} ${what} histogram`,
          }),
          `Channels scoring below the threshold (grey) are pruned; ${
            numberOf(p.stats["channels-before"]) ?? "?"
          } channels before, ${numberOf(p.stats["channels-after"]) ?? "?"} after.`,
        ),
      );
    }
    const layers = p.stats["layers"];
    if (p.name === "fc-corr" && isRecord(layers)) {
      for (const [name, l] of Object.entries(layers)) {
        if (!isRecord(l)) continue;
        const counts = numbers(l["abs-r-histogram"]);
        if (counts === null || counts.length === 0) continue;
        const edges = [...Array(counts.length + 1).keys()].map((i) => i / counts.length);
        const cut = numberOf(l["cut"]);
        parts.push(
          `<h3>${escapeHtml(`fc-corr: |r| of ${name}`)}</h3>` + figure(
            histogram({
              edges,
              counts,
              log: false,
              marker: cut,
              markerLabel: `cut ${cut === null ? "none" : sig(cut)}`,
              xLabel: "|correlation| between input and output neuron",
              yLabel: "connections",
              caption: `fc-corr correlation histogram of ${name}`,
            }),
            `Connections left of the cut are removed: ${numberOf(l["removed"]) ?? "?"} of ${
              numberOf(l["connections"]) ?? "?"
            }.`,
          ),
        );
      }
    }
  }
  return parts.length === 0 ? "" : section("pruning", "Pruning", parts.join(""));
}

function svdSection(r: CompileReport): string {
  const charts: string[] = [];
  for (const p of r.passes) {
    if (p.name !== "svd" || !isRecord(p.stats["layers"])) continue;
    for (const [name, l] of Object.entries(p.stats["layers"])) {
      if (!isRecord(l)) continue;
      const sigma = numbers(l["spectrum"]), rank = numberOf(l["rank"]);
      if (sigma === null || sigma.length === 0 || rank === null) continue;
      charts.push(spectrum(name, sigma, rank, numberOf(l["full-rank"])));
    }
  }
  if (charts.length === 0) return "";
  return section(
    "svd",
    "Low rank (SVD)",
    legend([[AFTER, "kept"], [BEFORE, "dropped"]]) + `<div class="grid">${charts.join("")}</div>`,
    "Singular values of each decomposed layer's weight matrix; the dashed line is the chosen rank.",
  );
}

function bfpSection(r: CompileReport): string {
  const rows: { name: string; db: (number | null)[] }[] = [];
  for (const p of r.passes) {
    if (!isRecord(p.stats["layers"])) continue;
    for (const [name, l] of Object.entries(p.stats["layers"])) {
      if (!isRecord(l)) continue;
      const db = SQNR_STAGES.map(([k]) => numberOf(l[k]));
      if (db.some((d) => d !== null)) rows.push({ name, db });
    }
  }
  if (rows.length === 0) return "";
  const f = (d: number | null): string => (d === null ? "-" : d.toFixed(2));
  const tableRows = rows.map((x) => [x.name, ...x.db.map(f)]);
  return section(
    "bfp",
    "Quantization error (SQNR)",
    figure(
      sqnrChart(rows),
      "Signal-to-quantization-noise ratio per lowered layer, by stage, on the calibration data.",
    ) +
      `<details><summary>Table</summary>${
        table(["layer", ...SQNR_STAGES.map(([, l]) => `${l} (dB)`)], tableRows, [false, true, true, true, true, true])
      }</details>`,
  );
}

function accuracySection(r: CompileReport): string {
  if (r.accuracy === undefined) return "";
  const a = r.accuracy;
  const chart = barTable(["before", "after"], [{
    title: "top-1 accuracy (%)",
    values: [[null, 100 * a.before], [null, 100 * a.after]],
    format: (n) => `${n.toFixed(2)}%`,
  }], "accuracy before and after");
  return section(
    "accuracy",
    "Accuracy",
    figure(
      chart,
      `Top-1 accuracy on ${num(a.samples)} labelled samples: ${pct(a.before)} before, ${pct(a.after)} after.`,
    ),
  );
}

/** Output SQNR against the original model after each pass, as bars (an unchanged model has no bar: infinite). */
function passSqnrSection(r: CompileReport): string {
  const rows = r.passSqnr ?? [];
  if (rows.length === 0) return "";
  const db = (v: number | "inf" | null): string => (v === null ? "not run" : v === "inf" ? "unchanged" : `${v} dB`);
  const chart = barTable(rows.map((p, i) => `${i + 1}. ${p.pass}`), [{
    title: "output SQNR after the pass (dB)",
    values: rows.map((p) => [null, typeof p.sqnrDb === "number" ? Math.max(0, p.sqnrDb) : null]),
    format: (n) => `${n} dB`,
  }], "output SQNR after each pass");
  return section(
    "pass-sqnr",
    "Output SQNR after each pass",
    figure(
      chart,
      `Every graph output against the original model's, on ${num(rows[0].samples)} calibration samples; ` +
        "each pass's figure includes the passes before it.",
    ) + table(["pass", "output SQNR"], rows.map((p) => [p.pipeline, db(p.sqnrDb)]), [false, true]),
  );
}

/** Every artifact run in its runtime against the interpreter: one row per check. */
function verifySection(r: CompileReport): string {
  const v = r.verify;
  if (v === undefined) return "";
  const rows = v.checks.map((c) => {
    const result = c.skipped !== null
      ? `skipped: ${c.skipped}`
      : c.bitExact
      ? "bit-exact"
      : c.maxAbsError === null
      ? `${num(c.mismatches)} mismatches`
      : `max abs ${c.maxAbsError.toExponential(2)}, rel ${(c.maxRelError ?? 0).toExponential(2)}`;
    return [
      c.artifact,
      c.runtime,
      c.ok ? "pass" : "FAIL",
      result,
      c.exact ? "bit-exact" : String(c.tolerance),
      num(c.compared),
      Object.entries(c.tools).map(([k, t]) => `${k} ${t}`).join(", "),
    ];
  });
  const first = v.checks.find((c) => c.firstMismatch !== null)?.firstMismatch ?? null;
  return section(
    "verify",
    v.ok ? "Verification: every artifact agrees" : "Verification: FAILED",
    table(
      ["artifact", "runtime", "result", "difference", "tolerance", "values", "tools"],
      rows,
      [false, false, false, false, true, true, false],
    ),
    `Inputs from the ${v.inputs} data, run by each artifact's runtime and by the interpreter.${
      first === null ? "" : ` First difference: ${first}.`
    }`,
  );
}

/** The budget search: every setting as a point of weight bytes against loss, the chosen one ringed. */
function budgetSection(r: CompileReport): string {
  const b = r.budget;
  if (b === undefined || b.points.length === 0) return "";
  const lossOf = (p: BudgetPoint): number | null =>
    b.objective === "accuracy"
      ? (p.accuracy === null ? null : 100 * p.accuracy)
      : (typeof p.sqnrDb === "number" ? p.sqnrDb : null);
  const yLabel = b.objective === "accuracy" ? "top-1 accuracy (%)" : "output SQNR (dB)";
  const measured = b.points.filter((p) => lossOf(p) !== null);
  const left = 60, right = 24, top = 16, bottom = 46, plotW = 560, plotH = 220;
  const xMax = ticks(Math.max(1, ...b.points.map((p) => p.weightBytes)));
  const xs = (v: number): number => left + (v / xMax[xMax.length - 1]) * plotW;
  const ys = measured.map((p) => lossOf(p)!);
  const yLo = ys.length === 0 ? 0 : Math.min(...ys), yHi = ys.length === 0 ? 1 : Math.max(...ys);
  const pad = Math.max(0.5, (yHi - yLo) * 0.1);
  const y = (v: number): number => top + plotH - ((v - (yLo - pad)) / (yHi - yLo + 2 * pad)) * plotH;
  const parts: string[] = [];
  for (const t of xMax) {
    parts.push(line(xs(t), top, xs(t), top + plotH, 'stroke="#e3e6eb"'));
    parts.push(text(xs(t), top + plotH + 16, compact(t), 'text-anchor="middle" class="tick"'));
  }
  for (const t of [yLo - pad, (yLo + yHi) / 2, yHi + pad]) {
    parts.push(text(left - 6, y(t) + 4, sig(t), 'text-anchor="end" class="tick"'));
  }
  const limit = b.limits.weightBytes;
  if (limit !== undefined && limit <= xMax[xMax.length - 1]) {
    parts.push(line(xs(limit), top, xs(limit), top + plotH, `stroke="${MARK}" stroke-dasharray="5 3"`));
    parts.push(
      text(xs(limit) - 4, top + plotH - 6, "weight-byte budget", `class="mark" fill="${MARK}" text-anchor="end"`),
    );
  }
  b.points.forEach((p, i) => {
    const loss = lossOf(p);
    if (loss === null) return;
    const tip = `${p.pipeline}: ${num(p.weightBytes)} weight bytes, ${sig(loss)}${p.fits ? "" : " (does not fit)"}`;
    const fill = p.fits ? AFTER : BEFORE;
    parts.push(
      `<circle cx="${px(xs(p.weightBytes))}" cy="${px(y(loss))}" r="${i === b.chosen ? 7 : 4}" fill="${
        i === b.chosen ? "none" : fill
      }" stroke="${i === b.chosen ? MARK : fill}" stroke-width="2"><title>${escapeHtml(tip)}</title></circle>`,
    );
    if (i === b.chosen || i === b.handWritten) {
      const label = i === b.chosen ? "chosen" : "as written";
      parts.push(text(xs(p.weightBytes) + 9, y(loss) - 6, label, 'class="lbl"'));
    }
  });
  parts.push(line(left, top + plotH, left + plotW, top + plotH, 'stroke="#8a93a0"'));
  parts.push(line(left, top, left, top + plotH, 'stroke="#8a93a0"'));
  parts.push(text(left + plotW / 2, top + plotH + 36, "weight bytes", 'text-anchor="middle" class="axis"'));
  parts.push(
    text(
      14,
      top + plotH / 2,
      yLabel,
      `text-anchor="middle" class="axis" transform="rotate(-90 14 ${top + plotH / 2})"`,
    ),
  );
  const chart = svg(
    left + plotW + right,
    top + plotH + bottom,
    "budget search: weight bytes against loss",
    parts.join(""),
  );
  const fitting = b.points.filter((p) => p.fits).length;
  return section(
    "budget",
    "Budget search",
    figure(
      chart,
      `${num(b.points.length)} settings costed, ${num(fitting)} fit, ${num(measured.length)} measured on ${
        num(b.samples)
      } samples (blue: fits, grey: over budget, ringed: chosen).`,
    ) + `<p>Chosen pipeline: <code>${escapeHtml(b.pipeline)}</code></p>`,
  );
}

function cTargetSection(r: CompileReport): string {
  const stats = r.target.stats ?? {};
  const memory = stats["memory"], raw = stats["arena-buffers"];
  if (!isRecord(memory) || !Array.isArray(raw)) return "";
  const buffers: ArenaBuffer[] = raw.filter(isRecord).map((b) => ({
    tensor: String(b["tensor"]),
    start: numberOf(b["start"]) ?? 0,
    end: numberOf(b["end"]) ?? 0,
    bytes: numberOf(b["bytes"]) ?? 0,
    offset: numberOf(b["offset"]) ?? 0,
  }));
  const arena = numberOf(memory["plannedBytes"]) ?? numberOf(memory["arenaBytes"]) ?? 0;
  const facts = [
    ["arena bytes (ARENA_SIZE)", num(numberOf(memory["arenaBytes"]) ?? 0)],
    ["planned tensors", num(numberOf(memory["plannedBytes"]) ?? 0)],
    ["lower bound (largest live set)", num(numberOf(memory["lowerBound"]) ?? 0)],
    ["without reuse", num(numberOf(memory["naiveBytes"]) ?? 0)],
  ];
  return section(
    "c-memory",
    "C target: memory plan",
    table(["", "bytes"], facts, [false, true]) +
      figure(
        arenaTimeline(buffers, arena, numberOf(memory["lowerBound"])),
        `${buffers.length} tensors in the static arena: each box spans the steps from the kernel that writes the ` +
          "tensor to its last reader, at its byte offset; boxes at the same offsets reuse that memory.",
      ),
  );
}

function fpgaSection(r: CompileReport): string {
  const stats = r.target.stats ?? {};
  const parts: string[] = [];
  const raw = stats["segments"], imageBytes = numberOf(stats["image-bytes"]);
  if (Array.isArray(raw) && imageBytes !== null && imageBytes > 0) {
    const segments: Segment[] = raw.filter(isRecord).map((s) => ({
      layer: String(s["layer"]),
      kind: String(s["kind"]),
      offset: numberOf(s["offset"]) ?? 0,
      bytes: numberOf(s["bytes"]) ?? 0,
    }));
    parts.push(
      figure(
        segmentMap(segments, imageBytes),
        `${segments.length} segments in a ${num(imageBytes)}-byte image; each starts on a 4096-byte boundary.`,
      ),
      `<details><summary>Segment table</summary>${
        table(
          ["layer", "kind", "offset", "bytes"],
          segments.map((s) => [s.layer, s.kind, `0x${s.offset.toString(16).padStart(6, "0")}`, num(s.bytes)]),
          [false, false, true, true],
        )
      }</details>`,
    );
  }
  const est = stats["estimates"];
  if (isRecord(est) && Array.isArray(est["layers"])) {
    const layers = est["layers"].filter(isRecord);
    const labels = layers.map((l) => String(l["layer"]));
    const col = (k: string, title: string): BarColumn => ({
      title,
      values: layers.map((l) => [null, numberOf(l[k])] as const),
    });
    parts.push(
      `<h3>Estimates</h3>` +
        figure(
          barTable(labels, [
            col("cycles", "cycles per sample"),
            col("bram18", "BRAM18 blocks"),
            col("dsp", "DSP slices"),
          ], "FPGA estimates"),
          typeof est["formula"] === "string" ? est["formula"] : "",
        ),
    );
  }
  return parts.length === 0 ? "" : section("fpga", "FPGA target: image and estimates", parts.join(""));
}

function artifactsSection(r: CompileReport): string {
  const rows = r.artifacts.map((a) => [a.name, num(a.bytes), a.sha256.slice(0, 16)]);
  const list = table(["file", "bytes", "SHA-256 (first 16)"], rows, [false, true, false]);
  if (rows.length <= 12) return section("artifacts", "Artifacts", list);
  // A long list (an FPGA image's per-layer companions) stays folded.
  const bytes = r.artifacts.reduce((s, a) => s + a.bytes, 0);
  return section(
    "artifacts",
    "Artifacts",
    `<details><summary>${escapeHtml(`${num(rows.length)} files, ${num(bytes)} bytes`)}</summary>${list}</details>`,
  );
}

const STYLE = `
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d2430;
margin:0;background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid #e3e6eb}
h3{font-size:16px;margin:20px 0 6px}
code{font:13px/1.4 ui-monospace,"DejaVu Sans Mono",Menlo,monospace;background:#f1f3f6;padding:2px 5px;border-radius:3px;
overflow-wrap:anywhere}
.meta{color:#4a5462;margin:2px 0}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{padding:4px 12px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
th{background:#f4f6f9;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
#summary table{min-width:640px}#summary td:first-child{font-weight:600}
figure{margin:8px 0 16px;overflow-x:auto}figcaption{color:#4a5462;font-size:13px;margin-top:2px}
svg{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;display:block}
svg .lbl{font-size:12px;fill:#1d2430}svg .tick{font-size:11px;fill:#4a5462}svg .axis{font-size:12px;fill:#1d2430}
svg .ctitle{font-size:13px;font-weight:600;fill:#1d2430}svg .mark{font-size:12px;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:10px 22px}
.legend span{margin-right:18px;font-size:13px}.legend i{display:inline-block;width:12px;height:12px;margin-right:5px;
vertical-align:-1px}
.note{color:#4a5462}details{margin:4px 0 12px}summary{cursor:pointer;color:#2563c9}
footer{color:#6b7480;font-size:12px;margin-top:36px}
nav{margin:14px 0 0;font-size:14px}nav a{color:#2563c9;text-decoration:none;margin-right:16px;white-space:nowrap}
nav a:hover{text-decoration:underline}
`;

/**
 * The report as a self-contained HTML page (inline CSS and SVG, no script): a summary table, per-layer cost bars,
 * the passes with their statistics, and where the report holds them the pruning histograms, singular-value spectra,
 * BFP SQNR by stage, accuracy, the C arena timeline and the FPGA image map with its estimates. Every text is
 * escaped; timings are left out, so the same report gives the same page.
 *
 * @example A page for an empty compilation
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildReport } from "./report.ts";
 * import { renderReportHtml } from "./report_html.ts";
 * const totals = {
 *   params: 0, macs: 0, unknownMacLayers: 0, symbolicDims: [], weightBytes: 0, sparseWeightBytes: 0, peakActivationBytes: 0,
 * };
 * const report = buildReport({
 *   model: { name: "m<1>", producer: "", opsets: { "ai.onnx": 13 } },
 *   pipeline: "",
 *   target: { name: "onnx", options: {}, diagnostics: [] },
 *   passes: [],
 *   before: { totals, layers: [] },
 *   after: { totals, layers: [] },
 *   artifacts: new Map([["m.onnx", new Uint8Array()]]),
 *   timings: { importMs: 0, passesMs: 0, emitMs: 0, totalMs: 0 },
 * });
 * const page = renderReportHtml(report);
 * assert.ok(page.startsWith("<!DOCTYPE html>"));
 * assert.ok(page.includes("m&lt;1&gt;") && !page.includes("<script"));
 * ```
 */
export function renderReportHtml(report: CompileReport): string {
  const r = report;
  const options = Object.entries(r.target.options).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
  const opsets = Object.entries(r.model.opsets).map(([d, v]) => `${d} ${v}`).join(", ");
  const header = `<header><h1>${escapeHtml(r.model.name)}: compilation report</h1>` +
    `<p class="meta">pipeline <code>${escapeHtml(r.pipeline === "" ? "(no passes)" : r.pipeline)}</code></p>` +
    `<p class="meta">target <code>${escapeHtml(r.target.name)}</code>${
      options === "" ? "" : ` <code>${escapeHtml(options)}</code>`
    }</p>` +
    `<p class="meta">model ${escapeHtml(r.model.producer === "" ? "(producer unknown)" : r.model.producer)}, opsets ${
      escapeHtml(opsets)
    }</p></header>`;
  const sections = [
    summarySection(r),
    accuracySection(r),
    verifySection(r),
    budgetSection(r),
    passSqnrSection(r),
    layerSection(r.layers),
    passesSection(r),
    pruningSection(r),
    svdSection(r),
    bfpSection(r),
    cTargetSection(r),
    fpgaSection(r),
    artifactsSection(r),
  ].filter((s) => s !== "");
  // A contents line linking each section (in-page anchors only).
  const nav = `<nav>${
    sections.map((s) => {
      const [, id, title] = s.match(/^<section id="([a-z-]+)"><h2>(.*?)<\/h2>/)!;
      return `<a href="#${id}">${title}</a>`;
    }).join("")
  }</nav>`;
  const body = [
    header,
    nav,
    ...sections,
    `<footer>cnnc report version ${r.version}. Generated from the JSON report; pass and stage timings are in the ` +
    "JSON only.</footer>",
  ].join("\n");
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(`${r.model.name}: cnnc report`)}</title><style>${STYLE}</style></head>\n` +
    `<body><main>\n${body}\n</main></body></html>\n`;
}
