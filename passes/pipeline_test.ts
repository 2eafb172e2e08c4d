import assert from "node:assert/strict";
import type { OptionSpec, OptionValue } from "./options.ts";
import { definePass, type Pass, type PassLookup, passLookup } from "./pass.ts";
import {
  closestName,
  parseElement,
  parsePipeline,
  PipelineError,
  type PipelineStep,
  printPipeline,
} from "./pipeline.ts";
import { mulberry32 } from "../tests/tensor_compare.ts";

const noop = (): boolean => false;

const prune = definePass({
  name: "prune",
  summary: "test pass with a half-open range",
  options: {
    ratio: { kind: "number", default: 0.5, min: 0, max: 1, exclusiveMax: true, doc: "Fraction removed" },
    minChannels: { kind: "int", default: 4, min: 1, doc: "Channels kept at least" },
  },
  run: noop,
});

const svd = definePass({
  name: "svd",
  summary: "test pass with an open lower bound and optional options",
  options: {
    energy: { kind: "number", default: 0.9, min: 0, max: 1, exclusiveMin: true, doc: "Energy kept" },
    skip: { kind: "list", default: ["fc3"], doc: "Ops left alone" },
    rank: { kind: "int", optional: true, min: 1, doc: "Fixed rank; overrides energy" },
    mode: { kind: "enum", values: ["channel", "spatial"], optional: true, doc: "Factorization" },
  },
  run: noop,
});

/** A pass with one option of every kind. */
const bfp = definePass({
  name: "bfp",
  summary: "test pass with every option kind",
  options: {
    mantissa: { kind: "int", default: 8, min: 2, max: 23, doc: "Mantissa bits" },
    scale: { kind: "number", default: 1, doc: "Unbounded number" },
    mode: { kind: "enum", values: ["tensor", "channel", "block-16"], default: "block-16", doc: "Block shape" },
    prefix: { kind: "string", default: "", doc: "Free text" },
    dataAware: { kind: "bool", default: false, doc: "Use calibration data" },
    skip: { kind: "list", default: [], doc: "Ops left alone" },
  },
  run: noop,
});

const dce = definePass({ name: "dce", summary: "test pass without options", options: {}, run: noop });

const passes: readonly Pass[] = [prune, svd, bfp, dce];

function testRegistry(): PassLookup {
  return passLookup(passes);
}

/** The error `parsePipeline(text)` throws, checked to be a PipelineError. */
function errorOf(text: string): PipelineError {
  try {
    parsePipeline(text, testRegistry());
  } catch (e) {
    assert.ok(e instanceof PipelineError, `expected a PipelineError, got ${e}`);
    return e;
  }
  assert.fail(`"${text}" parsed without error`);
}

Deno.test("parsePipeline() accepts the empty pipeline", () => {
  assert.deepEqual(parsePipeline("", testRegistry()), []);
  assert.deepEqual(parsePipeline("  \t\n", testRegistry()), []);
});

Deno.test("parsePipeline() fills every option with its default", () => {
  const steps = parsePipeline("prune,dce,bfp", testRegistry());
  assert.deepEqual(steps, [
    { pass: prune, options: { ratio: 0.5, minChannels: 4 } },
    { pass: dce, options: {} },
    {
      pass: bfp,
      options: { mantissa: 8, scale: 1, mode: "block-16", prefix: "", dataAware: false, skip: [] },
    },
  ]);
});

Deno.test("parsePipeline() reads options separated by commas or spaces, with whitespace around elements", () => {
  const registry = testRegistry();
  const expected = [{ pass: prune, options: { ratio: 0.6, minChannels: 8 } }, { pass: dce, options: {} }];
  assert.deepEqual(parsePipeline("prune{ratio=0.6,min-channels=8},dce", registry), expected);
  assert.deepEqual(parsePipeline("prune{ratio=0.6 min-channels=8},dce", registry), expected);
  assert.deepEqual(parsePipeline(" prune { ratio=0.6 ,  min-channels=8 } , dce ", registry), expected);
  assert.deepEqual(parsePipeline("prune{min-channels=8\tratio=0.6}\n,dce", registry), expected);
  // Whitespace around "=" too, as the README writes it.
  assert.deepEqual(parsePipeline(" prune { ratio = 0.6 min-channels =\n8 } ,dce", registry), expected);
  assert.deepEqual(parsePipeline("prune{ ratio= 0.6 , min-channels =8 },dce", registry), expected);
});

Deno.test("parsePipeline() converts every option kind", () => {
  const [step] = parsePipeline(
    'bfp{mantissa=6,scale=-1.5e-3,mode=channel,prefix="a, b=\\"c\\"",data-aware=true,skip=[conv1,"x y", fc3]}',
    testRegistry(),
  );
  assert.deepEqual(step.options, {
    mantissa: 6,
    scale: -0.0015,
    mode: "channel",
    prefix: 'a, b="c"',
    dataAware: true,
    skip: ["conv1", "x y", "fc3"],
  });
});

Deno.test("parsePipeline() takes a single word, [] or an empty string for a list", () => {
  const skipOf = (text: string): unknown => parsePipeline(text, testRegistry())[0].options.skip;
  assert.deepEqual(skipOf("bfp{skip=conv1}"), ["conv1"]);
  assert.deepEqual(skipOf("svd{skip=[]}"), []);
  assert.deepEqual(skipOf('svd{skip=""}'), []);
  assert.deepEqual(skipOf('svd{skip=[""]}'), [""]);
  assert.deepEqual(parsePipeline("prune{}", testRegistry())[0].options, { ratio: 0.5, minChannels: 4 });
});

Deno.test("parsePipeline() accepts quoted numbers and words", () => {
  const [step] = parsePipeline('prune{ratio="0.25",min-channels="2"}', testRegistry());
  assert.deepEqual(step.options, { ratio: 0.25, minChannels: 2 });
});

/** [pipeline, message, 1-based column] for every error path. */
const errorCases: readonly [string, string, number][] = [
  // Unknown passes.
  ["prun", 'Cannot parse pipeline: unknown pass "prun" (did you mean "prune"?)', 1],
  ["prune,Prune", 'Cannot parse pipeline: unknown pass "Prune" (did you mean "prune"?)', 7],
  ["dce,fold_bn", 'Cannot parse pipeline: unknown pass "fold_bn"; passes are: bfp, dce, prune, svd', 5],
  ["dce, xyzzy{a=1}", 'Cannot parse pipeline: unknown pass "xyzzy"; passes are: bfp, dce, prune, svd', 6],
  // Options that do not exist or are given twice.
  [
    "prune{ratoi=0.6}",
    'Cannot configure pass "prune": unknown option "ratoi" (did you mean "ratio"?); options are: ratio, min-channels',
    7,
  ],
  [
    "prune{minChannels=3}",
    'Cannot configure pass "prune": unknown option "minChannels" (did you mean "min-channels"?); ' +
    "options are: ratio, min-channels",
    7,
  ],
  [
    "svd{zzz=1}",
    'Cannot configure pass "svd": unknown option "zzz"; options are: energy, skip, rank, mode',
    5,
  ],
  ["dce{x=1}", 'Cannot configure pass "dce": unknown option "x"; it takes no options', 5],
  ["prune{ratio=0.5 ratio=0.6}", 'Cannot configure pass "prune": option "ratio" is given twice', 17],
  // Values out of range or of the wrong kind.
  ["prune{ratio=1.5}", 'Cannot configure pass "prune": option "ratio" must be a number in [0, 1), found "1.5"', 13],
  ["prune{ratio=1}", 'Cannot configure pass "prune": option "ratio" must be a number in [0, 1), found "1"', 13],
  ["svd{energy=0}", 'Cannot configure pass "svd": option "energy" must be a number in (0, 1], found "0"', 12],
  [
    "prune{min-channels=0}",
    'Cannot configure pass "prune": option "min-channels" must be an integer in [1, inf), found "0"',
    20,
  ],
  [
    "bfp{mantissa=8.5}",
    'Cannot configure pass "bfp": option "mantissa" must be an integer in [2, 23], found "8.5"',
    14,
  ],
  [
    "bfp{mantissa=[8,9]}",
    'Cannot configure pass "bfp": option "mantissa" must be an integer in [2, 23], found [8,9]',
    14,
  ],
  ["bfp{scale=abc}", 'Cannot configure pass "bfp": option "scale" must be a number, found "abc"', 11],
  [
    "bfp{mode=row}",
    'Cannot configure pass "bfp": option "mode" must be one of tensor, channel, block-16, found "row"',
    10,
  ],
  ["bfp{data-aware=yes}", 'Cannot configure pass "bfp": option "data-aware" must be true or false, found "yes"', 16],
  // Syntax.
  ["prune{ratio=0.6", 'Cannot parse pipeline: unbalanced "{": the options of "prune" are not closed', 6],
  ["prune{ratio=0.6 ", 'Cannot parse pipeline: unbalanced "{": the options of "prune" are not closed', 6],
  ["prune{", 'Cannot parse pipeline: unbalanced "{": the options of "prune" are not closed', 6],
  ["prune}", 'Cannot parse pipeline: unbalanced "}"', 6],
  ["prune{ratio=0.6}}", 'Cannot parse pipeline: unbalanced "}"', 17],
  ["prune{ratio=0.6]", 'Cannot parse pipeline: unbalanced "]"', 16],
  ["bfp{skip=a]}", 'Cannot parse pipeline: unbalanced "]"', 11],
  ["prune{ratio=]}", 'Cannot parse pipeline: unbalanced "]"', 13],
  ["bfp{skip=[a,b}", 'Cannot parse pipeline: unbalanced "[": the list of option "skip" is not closed', 10],
  ["bfp{skip=[a", 'Cannot parse pipeline: unbalanced "[": the list of option "skip" is not closed', 10],
  ["bfp{skip=[[a]]}", 'Cannot parse pipeline: lists cannot be nested (option "skip" of "bfp")', 11],
  ["bfp{skip=[a b]}", 'Cannot parse pipeline: expected "," or "]" in the list of option "skip", found "b"', 13],
  ["bfp{skip=[a,,b]}", 'Cannot parse pipeline: empty element in the list of option "skip"', 13],
  ["bfp{skip=[a,]}", 'Cannot parse pipeline: trailing comma in the list of option "skip"', 12],
  ['bfp{prefix="ab}', "Cannot parse pipeline: unterminated string", 12],
  ['bfp{skip=[a,"b]}', "Cannot parse pipeline: unterminated string", 13],
  ["prune,,svd", "Cannot parse pipeline: empty element (two commas)", 7],
  [",prune", "Cannot parse pipeline: empty element before the first comma", 1],
  ["prune,", "Cannot parse pipeline: trailing comma", 6],
  ["prune, ", "Cannot parse pipeline: trailing comma", 6],
  ["prune{ratio=0.6,}", 'Cannot parse pipeline: trailing comma in the options of "prune"', 16],
  ["prune{ratio=0.6,,min-channels=2}", 'Cannot parse pipeline: empty option in the options of "prune"', 17],
  ["prune{ratio}", 'Cannot parse pipeline: expected "=" after option "ratio", found "}"', 12],
  ["prune{ratio 0.6}", 'Cannot parse pipeline: expected "=" after option "ratio", found "0"', 13],
  ["prune{ratio", 'Cannot parse pipeline: expected "=" after option "ratio", found the end of the pipeline', 12],
  ["prune{ratio=}", 'Cannot parse pipeline: missing value for option "ratio" of "prune"', 13],
  ["prune{ratio=,min-channels=2}", 'Cannot parse pipeline: missing value for option "ratio" of "prune"', 13],
  [
    "prune{ratio=0.6=1}",
    'Cannot parse pipeline: expected "," or "}" after the value of option "ratio", found "="',
    16,
  ],
  [
    'prune{ratio="0.6"x}',
    'Cannot parse pipeline: expected "," or "}" after the value of option "ratio", found "x"',
    18,
  ],
  ["prune{=1}", 'Cannot parse pipeline: expected an option of "prune", found "="', 7],
  ["prune svd", 'Cannot parse pipeline: expected "," after pass "prune", found "s"', 7],
  ["prune.svd", 'Cannot parse pipeline: expected "," after pass "prune", found "."', 6],
  ["{ratio=1}", 'Cannot parse pipeline: expected a pass name before "{"', 1],
  ["dce,}", 'Cannot parse pipeline: unbalanced "}"', 5],
  ["dce,.", 'Cannot parse pipeline: expected a pass name, found "."', 5],
];

for (const [text, message, column] of errorCases) {
  Deno.test(`parsePipeline() rejects ${JSON.stringify(text)} at column ${column}`, () => {
    const e = errorOf(text);
    assert.equal(e.message, message);
    assert.equal(e.column, column);
    assert.equal(e.pipeline, text);
    assert.equal(e.caret, `${text.replace(/\s/g, " ")}\n${" ".repeat(column - 1)}^`);
  });
}

Deno.test("PipelineError.caret shows the pipeline and a caret under the offending column", () => {
  const e = errorOf("prune{ratio=0.6},svd{energy=2}");
  assert.equal(e.name, "PipelineError");
  assert.equal(e.caret, ["prune{ratio=0.6},svd{energy=2}", "                            ^"].join("\n"));
  // Tabs and newlines print as spaces so the caret stays under its column.
  assert.equal(errorOf("dce,\n\tprun").caret, "dce,  prun\n      ^");
});

Deno.test("PipelineError messages are one line", () => {
  for (const [text] of errorCases) assert.ok(!errorOf(text).message.includes("\n"), text);
});

Deno.test("parsePipeline() reports an unknown pass in an empty registry", () => {
  assert.throws(() => parsePipeline("dce", passLookup([])), {
    name: "PipelineError",
    message: 'Cannot parse pipeline: unknown pass "dce"; no passes are registered',
  });
});

Deno.test("closestName() suggests near misses only", () => {
  const names = ["canonicalize", "dce", "fold-bn", "prune", "svd"];
  assert.equal(closestName("prun", names), "prune");
  assert.equal(closestName("purne", names), "prune"); // a transposition is one edit
  assert.equal(closestName("fold_bn", names), "fold-bn");
  assert.equal(closestName("FOLD-BN", names), "fold-bn");
  assert.equal(closestName("canonicalise", names), "canonicalize");
  assert.equal(closestName("dc", names), "dce");
  assert.equal(closestName("bfp", names), undefined);
  assert.equal(closestName("quantize", names), undefined);
  assert.equal(closestName("x", []), undefined);
});

Deno.test("printPipeline() prints every option in schema order and quotes only when needed", () => {
  const registry = testRegistry();
  assert.equal(printPipeline([]), "");
  assert.equal(
    printPipeline(parsePipeline("dce,bfp{skip=[b,a] data-aware=true},prune{min-channels=2}", registry)),
    'dce,bfp{mantissa=8,scale=1,mode=block-16,prefix="",data-aware=true,skip=[b,a]},prune{ratio=0.5,min-channels=2}',
  );
  assert.equal(
    printPipeline([{ pass: svd, options: { energy: 1e-7, skip: ["a,b", 'q"', "c\\d", "x y", "{", "=", ""] } }]),
    'svd{energy=1e-7,skip=["a,b","q\\"",c\\d,"x y","{","=",""]}',
  );
  assert.equal(printPipeline([{ pass: bfp, options: { scale: -0, prefix: "[x]" } }]).includes("scale=-0,"), true);
  // Missing options print their defaults.
  assert.equal(printPipeline([{ pass: prune, options: {} }]), "prune{ratio=0.5,min-channels=4}");
});

/** Text with every character that needs quoting or escaping, and some that do not. */
function randomText(random: () => number): string {
  const alphabet = [
    "a",
    "z",
    "0",
    "9",
    "-",
    "_",
    ".",
    "/",
    ":",
    " ",
    ",",
    "{",
    "}",
    "[",
    "]",
    '"',
    "\\",
    "=",
    "\t",
    "é",
  ];
  const length = Math.floor(random() * 6);
  let s = "";
  for (let i = 0; i < length; i++) s += alphabet[Math.floor(random() * alphabet.length)];
  return s;
}

function randomNumber(random: () => number, min: number, max: number, exclusiveMin: boolean, exclusiveMax: boolean) {
  for (;;) {
    const pick = random();
    const x = pick < 0.1
      ? min
      : pick < 0.2
      ? max
      : pick < 0.3
      ? Math.round(min + random() * (max - min))
      : min + random() * (max - min);
    if ((exclusiveMin && x === min) || (exclusiveMax && x === max)) continue;
    return x;
  }
}

function randomStep(random: () => number): PipelineStep {
  const pass = passes[Math.floor(random() * passes.length)];
  const options: Record<string, OptionValue<OptionSpec>> = {};
  for (const [key, spec] of Object.entries(pass.options)) {
    if (random() < 0.25) {
      options[key] = spec.default;
      continue;
    }
    switch (spec.kind) {
      case "number": {
        const scale = [1, 1e-9, 1e25][Math.floor(random() * 3)];
        options[key] = spec.min === undefined
          ? (random() - 0.5) * scale
          : randomNumber(random, spec.min, spec.max ?? spec.min + scale, !!spec.exclusiveMin, !!spec.exclusiveMax);
        break;
      }
      case "int":
        options[key] = Math.round(randomNumber(random, spec.min ?? -1000, spec.max ?? 1000, false, false));
        break;
      case "bool":
        options[key] = random() < 0.5;
        break;
      case "enum":
        options[key] = spec.values[Math.floor(random() * spec.values.length)];
        break;
      case "string":
        options[key] = randomText(random);
        break;
      case "list":
        options[key] = Array.from({ length: Math.floor(random() * 4) }, () => randomText(random));
        break;
    }
  }
  return { pass, options };
}

Deno.test("parsePipeline(printPipeline(p)) equals p for random pipelines (seeded)", () => {
  const registry = testRegistry();
  const random = mulberry32(20240607);
  for (let i = 0; i < 2000; i++) {
    const steps = Array.from({ length: Math.floor(random() * 5) }, () => randomStep(random));
    const text = printPipeline(steps);
    assert.deepEqual(parsePipeline(text, registry), steps, text);
    assert.equal(printPipeline(parsePipeline(text, registry)), text);
  }
});

/** A non-canonical spelling of `step`: spaces, space separators, quoted words, options left at their default omitted. */
function respell(step: PipelineStep, random: () => number): string {
  const space = (): string => [" ", "", "\t", "\n  "][Math.floor(random() * 4)];
  const parts: string[] = [];
  const entries = Object.entries(step.pass.options).sort(() => random() - 0.5);
  for (const [key, spec] of entries) {
    const value = step.options[key];
    if (value === undefined) continue;
    if (JSON.stringify(value) === JSON.stringify(spec.default) && random() < 0.5) continue;
    let text = printPipeline([{ pass: { ...step.pass, options: { [key]: spec } }, options: { [key]: value } }]);
    text = text.slice(text.indexOf("{") + 1, -1);
    if (spec.kind !== "list" && random() < 0.3 && !/["\\]/.test(text)) text = text.replace("=", '="') + '"';
    parts.push(text);
  }
  const separated = parts.map((p, i) => (i === 0 ? p : (random() < 0.5 ? `,${space()}` : " ") + p)).join("");
  const braces = parts.length === 0 && random() < 0.5 ? "" : `${space()}{${space()}${separated}${space()}}`;
  return `${space()}${step.pass.name}${braces}${space()}`;
}

Deno.test("parsePipeline() reads non-canonical spellings as their canonical steps (seeded)", () => {
  const registry = testRegistry();
  const random = mulberry32(7);
  for (let i = 0; i < 1000; i++) {
    const steps = Array.from({ length: 1 + Math.floor(random() * 4) }, () => randomStep(random));
    const text = steps.map((s) => respell(s, random)).join(",");
    assert.deepEqual(parsePipeline(text, registry), steps, text);
  }
});

Deno.test("an optional option has no value unless given, and the canonical pipeline leaves it out", () => {
  const registry = testRegistry();
  const [plain] = parsePipeline("svd", registry);
  assert.deepEqual(plain.options, { energy: 0.9, skip: ["fc3"], rank: undefined, mode: undefined });
  assert.equal(printPipeline([plain]), "svd{energy=0.9,skip=[fc3]}");
  const [ranked] = parsePipeline("svd{mode=spatial rank=3}", registry);
  assert.deepEqual(ranked.options, { energy: 0.9, skip: ["fc3"], rank: 3, mode: "spatial" });
  assert.equal(printPipeline([ranked]), "svd{energy=0.9,skip=[fc3],rank=3,mode=spatial}");
  assert.deepEqual(parsePipeline(printPipeline([ranked]), registry), [ranked]);
  assert.throws(() => parsePipeline("svd{rank=0}", registry), {
    message: 'Cannot configure pass "svd": option "rank" must be an integer in [1, inf), found "0"',
  });
  // A pass whose options are all optional and unset prints as its bare name.
  const tag = definePass({
    name: "tag",
    summary: "only optional options",
    options: { label: { kind: "string", optional: true, doc: "Label" } },
    run: noop,
  });
  assert.equal(printPipeline([{ pass: tag, options: {} }]), "tag");
  assert.equal(printPipeline([{ pass: tag, options: { label: "" } }]), 'tag{label=""}');
});

/** A target-like item: parseElement needs only a name and an option schema. */
const onnx = {
  name: "onnx",
  options: {
    externalData: { kind: "bool", default: false, doc: "Weights in a side file" },
    threshold: { kind: "int", default: 1024, min: 1, doc: "Bytes from which a tensor goes to the side file" },
    location: { kind: "string", optional: true, doc: "Side file name" },
  },
} as const;

Deno.test("parseElement() reads one target with its options, typed by its schema", () => {
  const { item, options } = parseElement(" onnx { external-data=true threshold=64 } ", [onnx], "target");
  assert.equal(item, onnx);
  assert.deepEqual(options, { externalData: true, threshold: 64, location: undefined });
  assert.deepEqual(parseElement(" onnx { external-data = true , threshold = 64 } ", [onnx], "target").options, options);
  const threshold: number = options.threshold;
  const location: string | undefined = options.location;
  assert.equal(threshold + (location ?? "").length, 64);
  assert.deepEqual(parseElement("onnx", [onnx], "target").options, {
    externalData: false,
    threshold: 1024,
    location: undefined,
  });
});

Deno.test("parseElement() of a pass reads the element as parsePipeline does", () => {
  const text = "prune{ratio=0.6}";
  const { item, options } = parseElement(text, passes, "pass");
  assert.deepEqual([{ pass: item, options }], parsePipeline(text, testRegistry()));
});

/** [target text, message, 1-based column]: the messages name a target as a target. */
const targetErrorCases: readonly [string, string, number][] = [
  ["onx", 'Cannot parse target: unknown target "onx" (did you mean "onnx"?)', 1],
  ["ONNX{threshold=1}", 'Cannot parse target: unknown target "ONNX" (did you mean "onnx"?)', 1],
  ["tflite", 'Cannot parse target: unknown target "tflite"; targets are: onnx', 1],
  ["", "Cannot parse target: expected a target name, found the end of the target; targets are: onnx", 1],
  ["  ", "Cannot parse target: expected a target name, found the end of the target; targets are: onnx", 3],
  ["{threshold=1}", 'Cannot parse target: expected a target name before "{"', 1],
  ["onnx,c", "Cannot parse target: expected one target, found a list", 5],
  ["onnx{threshold=1},c", "Cannot parse target: expected one target, found a list", 18],
  ["onnx c", 'Cannot parse target: expected the end of the target after target "onnx", found "c"', 6],
  ["onnx}", 'Cannot parse target: unbalanced "}"', 5],
  ["onnx{threshold=1", 'Cannot parse target: unbalanced "{": the options of "onnx" are not closed', 5],
  ["onnx{threshold", 'Cannot parse target: expected "=" after option "threshold", found the end of the target', 15],
  [
    "onnx{threshold=0}",
    'Cannot configure target "onnx": option "threshold" must be an integer in [1, inf), found "0"',
    16,
  ],
  // User text is quoted as written: the word "pass" in it stays.
  [
    "onnx{external-data=pass}",
    'Cannot configure target "onnx": option "external-data" must be true or false, found "pass"',
    20,
  ],
  [
    "onnx{thresold=1}",
    'Cannot configure target "onnx": unknown option "thresold" (did you mean "threshold"?); ' +
    "options are: external-data, threshold, location",
    6,
  ],
];

for (const [text, message, column] of targetErrorCases) {
  Deno.test(`parseElement() rejects the target ${JSON.stringify(text)} at column ${column}`, () => {
    assert.throws(() => parseElement(text, [onnx], "target"), (e: unknown) => {
      assert.ok(e instanceof PipelineError, `expected a PipelineError, got ${e}`);
      assert.equal(e.message, message);
      assert.equal(e.column, column);
      assert.equal(e.pipeline, text);
      return true;
    });
  });
}

Deno.test("parseElement() reports an unknown target when none are registered", () => {
  assert.throws(() => parseElement("onnx", [], "target"), {
    name: "PipelineError",
    message: 'Cannot parse target: unknown target "onnx"; no targets are registered',
  });
});

Deno.test("pipeline errors quote the names and values they echo, escaped and cut to 80 characters", () => {
  const long = "p".repeat(100_000);
  assert.throws(() => parsePipeline(long, testRegistry()), (e: unknown) => {
    assert.ok(e instanceof PipelineError);
    assert.equal(
      e.message,
      `Cannot parse pipeline: unknown pass "${"p".repeat(80)}"... (100000 characters); ` +
        "passes are: bfp, dce, prune, svd",
    );
    return true;
  });
  assert.throws(() => parsePipeline(`prune{${long}=1}`, testRegistry()), {
    message: `Cannot configure pass "prune": unknown option "${"p".repeat(80)}"... (100000 characters); ` +
      "options are: ratio, min-channels",
  });
  assert.throws(() => parsePipeline('bfp{prefix=1,mode="a\nb\u001b[31m"}', testRegistry()), {
    message:
      'Cannot configure pass "bfp": option "mode" must be one of tensor, channel, block-16, found "a\\nb\\x1b[31m"',
  });
});

Deno.test("a PipelineError's caret shows control characters escaped and a long pipeline as a window", () => {
  const tab = new PipelineError("m", "a\tb\x1bc", 4);
  assert.equal(tab.caret, "a b\\x1bc\n   ^");
  const long = new PipelineError("m", `${"a".repeat(500)}X${"b".repeat(500)}`, 501);
  const [line, caret] = long.caret.split("\n");
  assert.equal(line, `...${"a".repeat(50)}X${"b".repeat(49)}...`);
  assert.equal(caret.indexOf("^"), line.indexOf("X"));
  assert.equal(new PipelineError("m", "x".repeat(300), 301).caret, `...${"x".repeat(100)}\n${" ".repeat(103)}^`);
});
