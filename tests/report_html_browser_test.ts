/**
 * The HTML report in a real browser: the CLI writes `--report x.html` for the
 * bundled model (prune, svd, bfp to the FPGA image, with calibration and
 * evaluation data), headless Chromium renders it to a PNG whose pixels are
 * checked (charts drawn in their colours, not a blank page), and the DOM it
 * parsed holds the expected text. Skipped, naming the Debian package, when no
 * Chromium is installed.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readNpyFile, writeNpy } from "../data/npy.ts";
import type { CompileReport } from "../driver/report.ts";
import { renderReportHtml } from "../driver/report_html.ts";
import type { Tensor } from "../ir/tensor.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MODELS = join(ROOT, "examples/models");

/** The first headless Chromium found: Debian's chromium-headless-shell, Chrome's headless shell, or chromium. */
function findChromium(): { path: string; args: string[] } | null {
  const candidates: [string, string[]][] = [
    ["/usr/bin/chromium-headless-shell", []],
    ["/usr/lib/chromium/chromium-headless-shell", []],
    ["/usr/lib/chromium/headless_shell", []],
    ["/usr/bin/chrome-headless-shell", []],
    ["/usr/bin/chromium", ["--headless"]],
  ];
  for (const [path, args] of candidates) if (existsSync(path)) return { path, args };
  return null;
}

const chromium = findChromium();
if (chromium === null) {
  console.log(
    "report_html_browser_test: no headless Chromium found, browser tests skipped " +
      "(install the Debian package chromium-headless-shell)",
  );
}

async function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", cwd: ROOT }).output();
  const decode = (b: Uint8Array): string => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** Chromium flags for a reproducible offline render. */
const BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--mute-audio"];

function firstSamples(t: Tensor, n: number): Tensor {
  const per = t.shape.slice(1).reduce((a, d) => a * d, 1);
  return { ...t, shape: [n, ...t.shape.slice(1)], data: t.data.slice(0, n * per) as Tensor["data"] };
}

/** RGBA pixels of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes). */
async function decodePng(bytes: Uint8Array): Promise<{ width: number; height: number; rgba: Uint8Array }> {
  assert.deepEqual([...bytes.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10], "PNG signature");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let width = 0, height = 0, channels = 0;
  const idat: Uint8Array[] = [];
  for (let at = 8; at < bytes.length;) {
    const length = view.getUint32(at);
    const type = new TextDecoder().decode(bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      const [depth, color, , , interlace] = data.subarray(8, 13);
      assert.ok(depth === 8 && (color === 2 || color === 6) && interlace === 0, `PNG kind ${depth}/${color}`);
      channels = color === 6 ? 4 : 3;
    } else if (type === "IDAT") idat.push(data);
    at += 12 + length;
  }
  const stream = new Blob(idat as BlobPart[]).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const stride = width * channels;
  assert.equal(raw.length, height * (stride + 1), "PNG data size");
  const rgba = new Uint8Array(width * height * 4);
  const prev = new Uint8Array(stride), cur = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? cur[i - channels] : 0, b = prev[i], c = i >= channels ? prev[i - channels] : 0;
      const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      const predictor = filter === 0
        ? 0
        : filter === 1
        ? a
        : filter === 2
        ? b
        : filter === 3
        ? (a + b) >> 1
        : pa <= pb && pa <= pc
        ? a
        : pb <= pc
        ? b
        : c;
      cur[i] = (line[i] + predictor) & 255;
    }
    for (let x = 0; x < width; x++) {
      for (let k = 0; k < 3; k++) rgba[(y * width + x) * 4 + k] = cur[x * channels + k];
      rgba[(y * width + x) * 4 + 3] = channels === 4 ? cur[x * channels + 3] : 255;
    }
    prev.set(cur);
  }
  return { width, height, rgba };
}

/** Pixels within 12 of `#rrggbb` in every channel. */
function countColor(rgba: Uint8Array, hex: string): number {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  let n = 0;
  for (let i = 0; i < rgba.length; i += 4) {
    if (Math.abs(rgba[i] - r) <= 12 && Math.abs(rgba[i + 1] - g) <= 12 && Math.abs(rgba[i + 2] - b) <= 12) n++;
  }
  return n;
}

Deno.test({
  name: "the HTML report renders in headless Chromium with its charts and text",
  ignore: chromium === null,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "cnnc_report_html_" });
    try {
      // A model name with markup in it: the page must show it as text.
      const model = join(dir, "vgg<b>.onnx");
      await Deno.copyFile(join(MODELS, "vgg_sparse.onnx"), model);
      const data = (name: string, n: number): string => {
        const path = join(dir, `${name}.npy`);
        Deno.writeFileSync(path, writeNpy(firstSamples(readNpyFile(join(MODELS, `${name}.npy`)), n)));
        return path;
      };
      const calib = data("mnist_calib_x", 16);
      const evalData = `${data("mnist_test_x", 64)},${data("mnist_test_y", 64)}`;
      const cli = (report: string) =>
        run(Deno.execPath(), [
          "run",
          "--allow-read",
          "--allow-write",
          join(ROOT, "compile.ts"),
          model,
          "--passes",
          "prune,svd,bfp",
          "--target",
          "fpga{vectors=0}",
          "--calib",
          calib,
          "--eval",
          evalData,
          "--out",
          join(dir, "out"),
          "--report",
          join(dir, report),
          "-q",
        ]);
      for (const report of ["report.html", "report.json"]) {
        const r = await cli(report);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout + r.stderr, "", "-q prints nothing, and Deno no warning");
      }
      const html = await Deno.readTextFile(join(dir, "report.html"));
      const json: CompileReport = JSON.parse(await Deno.readTextFile(join(dir, "report.json")));
      assert.equal(html, renderReportHtml(json), "the page is the JSON report's");

      const url = `file://${join(dir, "report.html").replaceAll("<", "%3C").replaceAll(">", "%3E")}`;
      const png = join(dir, "report.png");
      const shot = await run(chromium!.path, [
        ...chromium!.args,
        ...BROWSER_FLAGS,
        "--window-size=1280,4000",
        `--screenshot=${png}`,
        url,
      ]);
      assert.ok(existsSync(png), `no screenshot: ${shot.stderr.slice(-500)}`);
      const bytes = await Deno.readFile(png);
      assert.ok(bytes.length > 50_000, `screenshot of ${bytes.length} bytes is too small to hold the page`);
      const { width, height, rgba } = await decodePng(bytes);
      assert.deepEqual([width, height], [1280, 4000]);
      const pixels = width * height;
      const white = countColor(rgba, "#ffffff");
      assert.ok(white < 0.97 * pixels && white > 0.3 * pixels, `${white} of ${pixels} pixels white`);
      // The after bars and the kept singular values (blue), the before bars (grey), the threshold (red).
      for (const [color, what] of [["#2563c9", "after"], ["#c3c9d3", "before"], ["#d1342f", "threshold"]]) {
        assert.ok(countColor(rgba, color) > 100, `${what} colour ${color} drawn`);
      }

      const dom = await run(chromium!.path, [...chromium!.args, ...BROWSER_FLAGS, "--dump-dom", url]);
      assert.equal(dom.code, 0, dom.stderr.slice(-500));
      const text = dom.stdout;
      assert.match(text, /<h1>vgg&lt;b&gt;: compilation report<\/h1>/);
      assert.ok(!/<b>/.test(text), "the name's markup stays text");
      for (
        const expected of [
          "Summary",
          "top-1 accuracy (64 samples)",
          "Per-layer cost",
          "threshold",
          "rank ",
          "SQNR (dB, higher is better)",
          "FPGA target: image and estimates",
          "cycles per sample",
          "vgg&lt;b&gt;.fpga.bin",
        ]
      ) {
        assert.ok(text.includes(expected), `the DOM shows ${JSON.stringify(expected)}`);
      }
      const svgs = text.match(/<svg /g)?.length ?? 0;
      assert.ok(svgs >= 8, `${svgs} charts in the DOM`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
