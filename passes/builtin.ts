/**
 * The passes that ship with the compiler, in the order `--list-passes` shows them.
 * @module
 */
import { bfpPass } from "./bfp.ts";
import { canonicalizePass } from "./canonicalize.ts";
import { dcePass } from "./dce.ts";
import { fcCorrPass } from "./fc_corr.ts";
import { fixedPass } from "./fixed.ts";
import { foldBnPass } from "./fold_bn.ts";
import { maskSelectPass } from "./mask_select.ts";
import type { OptionSchema } from "./options.ts";
import type { Pass } from "./pass.ts";
import { prunePass } from "./prune.ts";
import { svdPass } from "./svd.ts";

/** Every built-in pass. */
export const builtinPasses: readonly Pass<OptionSchema>[] = [
  foldBnPass,
  canonicalizePass,
  dcePass,
  svdPass,
  prunePass,
  fcCorrPass,
  maskSelectPass,
  bfpPass,
  fixedPass,
];
