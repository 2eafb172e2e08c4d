/**
 * The HTML report: every section drawn from the statistics that feed it, every
 * text escaped, no script or outside resource, the same bytes from the same
 * report, and compile() returning the page of its own report. The page in a
 * real browser: tests/report_html_browser_test.ts.
 */
import assert from "node:assert/strict";
import { readNpyFile } from "../data/npy.ts";
import type { Tensor } from "../ir/tensor.ts";
import type { StatValue } from "../passes/pass.ts";
import { compile } from "./compile.ts";
import { buildReport, type CompileReport, type PassReport } from "./report.ts";
import { escapeHtml, renderReportHtml } from "./report_html.ts";

const MODELS = new URL("../examples/models/", import.meta.url).pathname;

const totals = (params: number) => ({
  params,
  macs: params * 10,
  unknownMacLayers: 0,
  symbolicDims: [],
  weightBytes: params * 4,
  sparseWeightBytes: params * 4,
  peakActivationBytes: 4096,
});

function pass(name: string, stats: Record<string, StatValue>): PassReport {
  return { name, pipeline: `${name}{x=1}`, ms: 1.5, changed: true, stats, diagnostics: [], analyses: [] };
}

/** A report holding every statistic the page draws, with a hostile layer name. */
function fullReport(): CompileReport {
  const evil = `conv<script>alert("x")</script>&\u001b[31m`;
  const layer = (name: string, params: number) => ({
    name,
    type: "Conv",
    params,
    macs: params * 10,
    weightBytes: params * 4,
  });
  const report = buildReport({
    model: { name: "net", producer: "pytorch 2.3", opsets: { "ai.onnx": 13 } },
    pipeline: "prune{x=1},mask-select{x=1},fc-corr{x=1},svd{x=1},bfp{x=1}",
    target: {
      name: "c",
      options: { layout: "ohwi" },
      diagnostics: [{ severity: "note", message: "arena <= 4 KiB" }],
      stats: {
        memory: { arenaBytes: 3072, plannedBytes: 3072, naiveBytes: 5120, lowerBound: 2048 },
        "arena-buffers": [
          { tensor: "t0", start: 0, end: 1, bytes: 1024, offset: 0 },
          { tensor: "t1", start: 1, end: 2, bytes: 2048, offset: 1024 },
        ],
        "image-bytes": 12288,
        segments: [
          { layer: evil, kind: "descriptor", offset: 4096, bytes: 64 },
          { layer: evil, kind: "mantissas", offset: 8192, bytes: 300 },
        ],
        estimates: {
          formula: "cycles = ...",
          layers: [{ layer: evil, cycles: 1568, bram18: 3, dsp: 32 }],
          totals: { cycles: 1568, bram18: 3, dsp: 32 },
        },
      },
    },
    passes: [
      pass("prune", {
        "channels-before": 16,
        "channels-after": 8,
        "gamma-histogram": { edges: [1e-8, 3.16e-8, 1e-7], counts: [3, 5], threshold: 2e-8 },
      }),
      pass("mask-select", { "mask-histogram": { edges: [0.01, 0.0316, 0.1], counts: [1, 2], threshold: 0.02 } }),
      pass("fc-corr", {
        layers: { fc1: { "abs-r-histogram": [4, 3, 2, 1], cut: 0.3, removed: 7, connections: 10 } },
      }),
      pass("svd", {
        layers: { [evil]: { rank: 2, "full-rank": 4, spectrum: [4, 3, 2, 1] }, other: { rank: 1 } },
      }),
      pass("bfp", {
        layers: {
          [evil]: {
            "sqnr-input-db": 40.5,
            "sqnr-weight-db": 44,
            "sqnr-mac-db": 39.25,
            "sqnr-output-db": 39.25,
            "sqnr-in-model-db": 35,
          },
        },
      }),
    ],
    before: { totals: totals(100), layers: [layer(evil, 100)] },
    after: { totals: totals(40), layers: [layer(evil, 40)] },
    artifacts: new Map([["net.c", new Uint8Array(3)]]),
    timings: { importMs: 1, passesMs: 2, emitMs: 3, totalMs: 6 },
    accuracy: {
      before: { accuracy: 0.984, correct: 984, total: 1000 },
      after: { accuracy: 0.973, correct: 973, total: 1000 },
    },
  });
  const check = {
    runtime: "gcc (host)",
    artifact: evil,
    tools: { gcc: "12.2.0" },
    samples: 32,
    compared: 320,
    exact: true,
    tolerance: 0,
    bitExact: true,
    maxAbsError: 0,
    maxRelError: 0,
    sqnrDb: "inf" as const,
    mismatches: 0,
    firstMismatch: null,
    skipped: null,
    ok: true,
  };
  const point = (pipeline: string, weightBytes: number, accuracy: number | null, fits: boolean) => ({
    pipeline,
    settings: {},
    weightBytes,
    macs: 1000,
    arenaBytes: 512,
    fits,
    accuracy,
    sqnrDb: null,
    handWritten: false,
  });
  return {
    ...report,
    passSqnr: [
      { pass: "prune", pipeline: "prune{x=1}", sqnrDb: 41.5, samples: 32 },
      { pass: "bfp", pipeline: "bfp{x=1}", sqnrDb: "inf", samples: 32 },
    ],
    verify: { target: "c", inputs: "calibration", checks: [check], ok: true },
    budget: {
      limits: { weightBytes: 16000 },
      objective: "accuracy",
      samples: 500,
      points: [
        point("prune{ratio=0.3}", 30000, null, false),
        point("prune{ratio=0.6}", 15000, 0.98, true),
        point("prune{ratio=0.7}", 12000, 0.96, true),
      ],
      chosen: 1,
      handWritten: -1,
      pipeline: "prune{ratio=0.6}",
    },
  };
}

Deno.test("escapeHtml escapes markup and control characters", () => {
  assert.equal(escapeHtml(`<a href='x'>"&"</a>`), "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;");
  assert.equal(escapeHtml("a\u001b[31m\nb\u2028"), "a\\x1b[31m\\nb\\u2028");
});

Deno.test("the page draws every section its statistics feed", () => {
  const page = renderReportHtml(fullReport());
  for (
    const [id, expected] of [
      ["summary", "28.40x"],
      ["accuracy", "98.40%"],
      ["verify", "bit-exact"],
      ["budget", "Chosen pipeline: <code>prune{ratio=0.6}</code>"],
      ["pass-sqnr", "41.5 dB"],
      ["layers", "weight bytes"],
      ["passes", "prune{x=1}"],
      ["pruning", "threshold 2e-8"],
      ["svd", "rank 2 of 4"],
      ["bfp", "SQNR (dB, higher is better)"],
      ["c-memory", "lower bound 2,048 B"],
      ["fpga", "2 segments in a 12,288-byte image"],
      ["artifacts", "net.c"],
    ]
  ) {
    const at = page.indexOf(`<section id="${id}">`);
    assert.ok(at >= 0, `section ${id}`);
    const end = page.indexOf("</section>", at);
    if (id !== "summary") assert.ok(page.slice(at, end).includes(expected), `${id} shows ${expected}`);
  }
  assert.ok(page.includes("10.00x smaller") === false);
  assert.ok(page.includes("2.50x smaller"), "parameters 100 -> 40");
  assert.ok(page.includes("cut 0.3") && page.includes("|mask|"), "fc-corr and mask-select histograms");
  // Sections of data the report lacks are left out; the layer without a spectrum draws no chart.
  assert.equal(page.match(/aria-label="singular values of /g)?.length, 1);
  // The threshold line sits between the first bin (pruned, grey) and the second.
  assert.match(page, /<line [^>]*stroke="#d1342f"/);
});

Deno.test("the page escapes every name and holds no script or outside resource", () => {
  const page = renderReportHtml(fullReport());
  assert.ok(!/<script/i.test(page), "no script element");
  assert.ok(!page.includes("\u001b"), "no control character");
  assert.ok(page.includes("conv&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;\\x1b[31m"));
  assert.ok(!/\bsrc=/i.test(page), "no embedded resource");
  assert.deepEqual(
    [...page.matchAll(/\bhref="([^"]*)"/g)].map((m) => m[1]).filter((h) => !/^#[a-z-]+$/.test(h)),
    [],
    "links only to sections of the page",
  );
  assert.ok(page.includes('<a href="#c-memory">C target: memory plan</a>'));
  assert.deepEqual(
    page.match(/https?:\/\/[^"]*/g),
    page.match(/http:\/\/www\.w3\.org\/2000\/svg/g),
    "only the SVG namespace",
  );
  assert.equal(page.match(/<svg /g)?.length, page.match(/<\/svg>/g)?.length);
});

Deno.test("the same report gives the same bytes, whatever the timings", () => {
  const report = fullReport();
  const slower: CompileReport = {
    ...report,
    timings: { ...report.timings, totalMs: 1e6 },
    passes: report.passes.map((p) => ({ ...p, ms: p.ms * 7 })),
  };
  assert.equal(renderReportHtml(report), renderReportHtml(slower));
  assert.ok(!renderReportHtml(report).includes("1.5 ms"));
});

Deno.test("a report without statistics gives a page with the summary, layers and artifacts only", () => {
  const page = renderReportHtml({
    ...(fullReport()),
    passes: [],
    accuracy: undefined,
    passSqnr: undefined,
    verify: undefined,
    budget: undefined,
    target: {
      name: "onnx",
      options: {},
      diagnostics: [],
    },
  });
  const sections = [...page.matchAll(/<section id="([a-z-]+)">/g)].map((m) => m[1]);
  assert.deepEqual(sections, ["summary", "layers", "artifacts"]);
});

function calibrationSlice(x: Tensor, n: number): Tensor {
  const per = x.shape.slice(1).reduce((a, d) => a * d, 1);
  return { ...x, shape: [n, ...x.shape.slice(1)], data: (x.data as Float32Array).slice(0, n * per) };
}

Deno.test("compile() returns the page of its report, with the C memory plan and the passes' charts", async () => {
  const x = calibrationSlice(readNpyFile(`${MODELS}mnist_calib_x.npy`), 8);
  const result = await compile(await Deno.readFile(`${MODELS}vgg_sparse.onnx`), {
    passes: "prune,svd,bfp",
    target: "c",
    calibration: x,
    modelName: "vgg",
  });
  const page = new TextDecoder().decode(result.reportHtml);
  assert.equal(page, renderReportHtml(result.report));
  const sections = [...page.matchAll(/<section id="([a-z-]+)">/g)].map((m) => m[1]);
  assert.deepEqual(sections, ["summary", "layers", "passes", "pruning", "svd", "bfp", "c-memory", "artifacts"]);
  const buffers = result.report.target.stats?.["arena-buffers"] as { offset: number; bytes: number }[];
  const memory = result.report.target.stats?.["memory"] as { plannedBytes: number };
  assert.ok(buffers.length > 0 && buffers.every((b) => b.offset + b.bytes <= memory.plannedBytes));
  assert.ok(page.includes(`${buffers.length} tensors in the static arena`));
});
