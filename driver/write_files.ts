/**
 * Writing a compilation's outputs all or nothing: every path is checked before
 * anything is written, inputs are never overwritten (through links included),
 * and the files are replaced together or not at all.
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import { quote } from "../ir/quote.ts";
import { writeFileBytes } from "../ir/onnx/export.ts";

/** One file to write. */
export interface OutputFile {
  /** Where (relative to the working folder or absolute). */
  path: string;
  /** Its new contents. */
  bytes: Uint8Array;
  /** What it is, for messages: `artifact "m.onnx"`, `--report`. */
  label: string;
}

/** A file that must not be overwritten. */
export interface ProtectedFile {
  /** Its path. */
  path: string;
  /** What it is, for messages: `the input model`, `--calib file`. */
  label: string;
}

/** Options of {@linkcode writeFiles}. */
export interface WriteFilesOptions {
  /** Files no output may replace: compared by real path and by device and inode, so links do not hide them. */
  protect?: readonly ProtectedFile[];
  /** Renames a file (default `Deno.renameSync`); tests inject failures here. */
  rename?: (from: string, to: string) => void;
}

/**
 * Write `files` all or nothing. First every path is checked, before anything is written: not empty, not an
 * existing folder, no file where a folder is needed, no two outputs the same file, none of them a protected file.
 * Then each file is written to a temporary file beside it (`.<pid>.<n>.tmp`), the files it replaces are moved
 * aside (`.<pid>.<n>.bak`), and the temporary files are renamed into place. A failure at any step moves everything
 * back: the previous files are restored, the temporary files and the folders created are removed. Only a crash in
 * the middle of the renames can leave a mix, and then the `.bak` files hold the previous contents.
 *
 * @throws {Error} One line naming the output (its label and path) and the problem.
 *
 * @example Write two files, then refuse to replace an input
 * ```ts
 * import assert from "node:assert/strict";
 * import { join } from "node:path";
 * import { writeFiles } from "./write_files.ts";
 * const dir = Deno.makeTempDirSync();
 * const bytes = new Uint8Array([1]);
 * writeFiles([{ path: join(dir, "a.bin"), bytes, label: "a" }, { path: join(dir, "b.bin"), bytes, label: "b" }]);
 * assert.throws(() => writeFiles([{ path: join(dir, "a.bin"), bytes, label: "artifact" }], {
 *   protect: [{ path: join(dir, "a.bin"), label: "the input model" }],
 * }), /refusing to overwrite the input model/);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function writeFiles(files: readonly OutputFile[], options: WriteFilesOptions = {}): void {
  const rename = options.rename ?? Deno.renameSync;
  const plans = checkOutputs(files, options.protect ?? []);

  const createdFolders: string[] = [];
  const staged: { tmp: string; backup: string | null; placed: boolean; movedAside: boolean }[] = [];
  let failing: OutputFile = files[0];
  try {
    plans.forEach((plan, n) => {
      failing = plan.file;
      for (const folder of plan.missingFolders) {
        if (exists(folder)) continue;
        Deno.mkdirSync(folder);
        createdFolders.push(folder);
      }
      const dir = dirname(plan.real);
      const tmp = join(dir, `.${Deno.pid}.${n}.tmp`);
      const backup = plan.exists ? join(dir, `.${Deno.pid}.${n}.bak`) : null;
      if (backup !== null && exists(backup)) throw new Error(`${quote(backup)} is in the way`);
      staged.push({ tmp, backup, placed: false, movedAside: false });
      writeFileBytes(tmp, plan.file.bytes, { createNew: true }); // Deno.writeFileSync would copy the bytes first
    });
    plans.forEach((plan, n) => {
      failing = plan.file;
      const step = staged[n];
      if (step.backup !== null) {
        rename(plan.real, step.backup);
        step.movedAside = true;
      }
      rename(step.tmp, plan.real);
      step.placed = true;
    });
  } catch (e) {
    // Undo in reverse: take our file out, put the previous one back, drop the temporary files and new folders.
    for (let n = staged.length - 1; n >= 0; n--) {
      const step = staged[n];
      const real = plans[n].real;
      attempt(() => step.placed && Deno.removeSync(real));
      attempt(() => step.movedAside && Deno.renameSync(step.backup!, real));
      attempt(() => Deno.removeSync(step.tmp));
    }
    for (const folder of createdFolders.reverse()) attempt(() => Deno.removeSync(folder));
    throw new Error(`cannot write ${failing.label} ${quote(failing.path)}: ${fsReason(e)}`);
  }
  for (const step of staged) if (step.backup !== null) attempt(() => Deno.removeSync(step.backup!));
}

/** A checked output: its real path, the folders to create above it (outermost first), and whether it exists. */
interface Plan {
  file: OutputFile;
  real: string;
  missingFolders: string[];
  exists: boolean;
}

function checkOutputs(files: readonly OutputFile[], protect: readonly ProtectedFile[]): Plan[] {
  const guarded = protect.flatMap((p) => {
    try {
      const info = Deno.statSync(p.path);
      return [{ ...p, real: Deno.realPathSync(p.path), dev: info.dev, ino: info.ino }];
    } catch {
      return []; // nothing there to overwrite
    }
  });
  const plans: Plan[] = [];
  const byReal = new Map<string, OutputFile>();
  for (const file of files) {
    const fail = (reason: string): never => {
      throw new Error(`cannot write ${file.label} ${quote(file.path)}: ${reason}`);
    };
    if (file.path === "") fail("the path is empty; expected a file path");
    const plan = planOutput(file, fail);
    const info = plan.exists ? Deno.statSync(plan.real) : null;
    for (const g of guarded) {
      if (g.real === plan.real || (info !== null && info.dev === g.dev && info.ino === g.ino && g.ino !== null)) {
        throw new Error(
          `refusing to overwrite ${g.label} ${quote(g.path)}: ${file.label} ${quote(file.path)} is the same file`,
        );
      }
    }
    const twin = byReal.get(plan.real);
    if (twin !== undefined) fail(`it is the same file as ${twin.label} ${quote(twin.path)}`);
    byReal.set(plan.real, file);
    plans.push(plan);
  }
  // A file where another output needs a folder (`out/a` and `out/a/b`).
  for (const plan of plans) {
    for (let dir = dirname(plan.real); dir !== dirname(dir); dir = dirname(dir)) {
      const other = byReal.get(dir);
      if (other !== undefined) {
        throw new Error(
          `cannot write ${plan.file.label} ${quote(plan.file.path)}: its folder ${quote(dir)} is also ${other.label}`,
        );
      }
    }
  }
  return plans;
}

/**
 * The real path `file` will have (links in its folders followed; an existing file that is a link is followed too),
 * and the folders to create: walks up to the nearest existing folder, refusing a file or a link to one on the way.
 */
function planOutput(file: OutputFile, fail: (reason: string) => never): Plan {
  const path = resolve(file.path);
  const info = statOrNull(path, fail);
  if (info?.isDirectory) fail("it is an existing folder; expected a file path");
  if (info !== null && !info.isFile) fail("it exists and is not a regular file");
  if (info !== null) return { file, real: Deno.realPathSync(path), missingFolders: [], exists: true };
  const missing: string[] = [];
  let dir = dirname(path);
  for (;;) {
    const d = statOrNull(dir, fail);
    if (d !== null) {
      if (!d.isDirectory) fail(`${quote(dir)} is a file, not a folder`);
      break;
    }
    missing.push(dir);
    if (dir === dirname(dir)) break;
    dir = dirname(dir);
  }
  const names = missing.reverse().map((m) => basename(m)); // outermost first
  const base = Deno.realPathSync(dir);
  const missingFolders = names.map((_, i) => join(base, ...names.slice(0, i + 1)));
  return { file, real: join(base, ...names, basename(path)), missingFolders, exists: false };
}

/** `stat` (following links), or null when nothing is there; other errors fail with their reason. */
function statOrNull(path: string, fail: (reason: string) => never): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      // A dangling link is in the way of a file or folder we would create.
      try {
        Deno.lstatSync(path);
        return fail(`${quote(path)} is a link to nothing`);
      } catch (inner) {
        if (inner instanceof Deno.errors.NotFound || inner instanceof Deno.errors.NotADirectory) return null;
        throw inner;
      }
    }
    return fail(fsReason(e));
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function attempt(action: () => unknown): void {
  try {
    action();
  } catch { /* best effort while undoing */ }
}

/**
 * A file system error as one short reason, without Deno's advice to rerun with other permission flags: the CLI
 * decides its permissions, so a refused access is reported as such.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fsReason } from "./write_files.ts";
 * assert.equal(fsReason(new Deno.errors.NotCapable('Requires all access to "/proc/x", run again with the --allow-all flag')),
 *   'access not permitted (requires all access to "/proc/x")');
 * ```
 */
export function fsReason(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  // "No such file or directory (os error 2): stat '/x'" -> "No such file or directory"; the caller names the path.
  const bare = message.replace(/\s*\n[\s\S]*$/, "").replace(/,? run again with .*$/, "")
    .replace(/ \(os error \d+\)(: \w+ '.*')?$/, "");
  if (e instanceof Deno.errors.NotCapable) {
    return `access not permitted (${bare.charAt(0).toLowerCase()}${bare.slice(1)})`;
  }
  return bare;
}
