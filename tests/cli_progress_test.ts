/**
 * The CLI's progress line: on a terminal (a pseudo-terminal from util-linux
 * `script`) it shows the pass running, the passes' log lines and the
 * evaluation's samples, redrawn in place and wiped before the summary; with -q,
 * or into a pipe, nothing. Skipped, naming the package, without `script`.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readNpyFile, writeNpy } from "../data/npy.ts";
import type { Tensor } from "../ir/tensor.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MODELS = join(ROOT, "examples/models");
const SCRIPT = "/usr/bin/script";
const hasScript = existsSync(SCRIPT);
if (!hasScript) console.log("cli_progress_test: util-linux script not found, terminal tests skipped (Debian bsdutils)");

function firstSamples(t: Tensor, n: number): Tensor {
  const per = t.shape.slice(1).reduce((a, d) => a * d, 1);
  return { ...t, shape: [n, ...t.shape.slice(1)], data: t.data.slice(0, n * per) as Tensor["data"] };
}

Deno.test({
  name: "compile.ts shows progress on a terminal only, and never with -q or into a pipe",
  ignore: !hasScript,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "cnnc_progress_" });
    try {
      const data = (name: string): string => {
        const path = join(dir, `${name}.npy`);
        Deno.writeFileSync(path, writeNpy(firstSamples(readNpyFile(join(MODELS, `${name}.npy`)), 40)));
        return path;
      };
      const args = [
        "run",
        "--allow-read",
        "--allow-write",
        join(ROOT, "compile.ts"),
        join(MODELS, "vgg_sparse.onnx"),
        "--passes",
        "svd",
        "--eval",
        `${data("mnist_test_x")},${data("mnist_test_y")}`,
        "--out",
        join(dir, "out"),
      ];
      const decode = (b: Uint8Array): string => new TextDecoder().decode(b);
      const onTerminal = async (extra: string[]): Promise<string> => {
        const command = [Deno.execPath(), ...args, ...extra].map((a) => `'${a}'`).join(" ");
        const out = await new Deno.Command(SCRIPT, { args: ["-qec", command, "/dev/null"], cwd: ROOT }).output();
        assert.equal(out.code, 0, decode(out.stderr));
        return decode(out.stdout);
      };
      const tty = await onTerminal([]);
      for (
        const line of ["  running svd...", "  svd: op ", "  accuracy before: 40 of 40 samples", "  accuracy after: "]
      ) {
        assert.ok(tty.includes(`\r\x1b[K${line}`), `terminal shows ${JSON.stringify(line)}`);
      }
      // The line is wiped before the summary, which starts on a clean line.
      assert.ok(tty.includes("\r\x1b[Kvgg_sparse: svd{"), "the summary starts on a wiped line");

      const quiet = await onTerminal(["-q"]);
      assert.ok(!quiet.includes("\x1b"), `-q on a terminal: ${JSON.stringify(quiet.slice(0, 200))}`);

      const piped = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT, stdout: "piped", stderr: "piped" })
        .output();
      assert.equal(piped.code, 0);
      assert.equal(decode(piped.stderr), "", "nothing on stderr into a pipe");
      assert.ok(!decode(piped.stdout).includes("\x1b"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
