/**
 * The layers import one way: ir <- passes <- targets <- driver <- the CLI and
 * mod.ts. This scans every import (doc examples included) of the files under
 * ir/ and passes/ and fails on one that reaches a higher layer.
 * @module
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Layer of a project path: its first folder, and the root files (mod.ts, compile.ts) above every folder. */
const LAYERS = ["ir", "passes", "targets", "driver"];

function layerOf(path: string): number {
  const top = path.split("/")[0];
  const index = LAYERS.indexOf(top);
  return index >= 0 ? index : path.includes("/") ? -1 : LAYERS.length;
}

function tsFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) return tsFiles(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });
}

/** Relative specifiers of `import ... from`, `export ... from`, `import "..."` and `import("...")`. */
function importsOf(text: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\b[^;"'`]*?\bfrom\s*["']([^"']+)["']/g,
    /\bimport\s*\(?\s*["']([^"']+)["']/g,
  ];
  for (const pattern of patterns) {
    for (const match of text.matchAll(pattern)) if (match[1].startsWith(".")) found.push(match[1]);
  }
  return found;
}

/** `file imports target` for every import of a file under `dirs` that reaches a higher layer. */
function upwardImports(dirs: readonly string[]): string[] {
  const problems: string[] = [];
  for (const file of dirs.flatMap(tsFiles)) {
    const layer = layerOf(file);
    for (const specifier of importsOf(readFileSync(join(ROOT, file), "utf8"))) {
      const target = relative(ROOT, resolve(ROOT, dirname(file), specifier)).replaceAll("\\", "/");
      if (layerOf(target) > layer) problems.push(`${file} imports ${target}`);
    }
  }
  return problems;
}

Deno.test("the scan finds imports, doc examples included", () => {
  assert.deepEqual(importsOf('import { a } from "./a.ts";\nexport type { B } from "../b.ts";\nimport "./c.ts";'), [
    "./a.ts",
    "../b.ts",
    "./c.ts",
  ]);
  assert.deepEqual(importsOf(' * import {\n *   x,\n * } from "../driver/registry.ts";'), ["../driver/registry.ts"]);
  assert.deepEqual(importsOf('const m = await import("../mod.ts");'), ["../mod.ts"]);
  assert.equal(layerOf("mod.ts"), LAYERS.length);
  assert.equal(layerOf("passes/analysis/channel_groups.ts"), 1);
});

Deno.test("ir/ imports nothing from passes/, targets/, driver/ or the root", () => {
  assert.deepEqual(upwardImports(["ir"]), []);
});

Deno.test("passes/ imports nothing from targets/, driver/ or the root", () => {
  assert.deepEqual(upwardImports(["passes"]), []);
});

Deno.test("ir/ops/ imports nothing from ir/bfp/ (the BFP package builds on the float ops, not the reverse)", () => {
  const problems: string[] = [];
  for (const file of tsFiles("ir/ops")) {
    for (const specifier of importsOf(readFileSync(join(ROOT, file), "utf8"))) {
      const target = relative(ROOT, resolve(ROOT, dirname(file), specifier)).replaceAll("\\", "/");
      if (target.startsWith("ir/bfp/") || target === "ir/builtin_ops.ts") problems.push(`${file} imports ${target}`);
    }
  }
  assert.deepEqual(problems, []);
});
