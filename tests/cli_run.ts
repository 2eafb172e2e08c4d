/**
 * Runs `compile.ts` in a child Deno for the command-line tests: exit status, stdout, and stderr's non-empty lines.
 */
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;

/** What a run of the CLI gave. */
export interface Run {
  /** Exit status. */
  code: number;
  /** Everything printed on stdout. */
  stdout: string;
  /** stderr's non-empty lines, joined by newlines. */
  stderr: string;
}

/** Run `deno run ...PERMISSIONS --quiet compile.ts ...args` from the repository root. */
export async function runCli(permissions: readonly string[], args: readonly string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, "--quiet", join(ROOT, "compile.ts"), ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  const stderr = text(out.stderr).split("\n").filter((l) => l !== "").join("\n");
  return { code: out.code, stdout: text(out.stdout), stderr };
}
