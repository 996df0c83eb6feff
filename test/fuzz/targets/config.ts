import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { PROJECT_ROOT, loadRecipe } from '../../../src/config/recipe.js';
import '../../../src/curate/schema.js';
import { FuzzFailure, target } from '../harness.js';

/** Pieces of YAML syntax, glued at random: anchors, aliases, tags, flow and block collections, directives. */
const YAML_TOKENS = [
  'kind: curate\n', 'input:\n', '  paths: [a]\n', 'output:\n', '  dir: out\n', 'extends: ', 'extends: [r.yaml]\n', 'extends: ../../../etc/passwd\n',
  'a', 'b', 'key', '__proto__', 'constructor', ': ', ':', '- ', '-', '&a ', '*a', '&b ', '*b', '*zz', '<<: ', '[', ']', '{', '}', ', ', ',', '\n', '  ', '    ', '\t',
  "'", '"', '"\\x00"', '"\\uD800"', '!!binary ', '!!set ', '!!omap ', '!!timestamp 2001-12-14 ', '!!js/function ', '!foo ', '!!int ', '!!float ', '!!str ',
  '? ', '~', 'null', 'true', 'yes', '0x1F', '1e999', '-.inf', '.nan', '12345678901234567890', '3.5', '|', '>-', '#c', ' # note\n', '%YAML 1.1\n', '---\n', '...\n',
  '\u00e9', '\u{1F600}', '\uFEFF', '\0', '\r\n',
];

const yamlSoup = fc.array(fc.constantFrom(...YAML_TOKENS), { maxLength: 40 }).map((t) => t.join(''));

/** A shipped recipe with lines dropped, duplicated or spliced with syntax. */
const curateRecipe = readFileSync(join(PROJECT_ROOT, 'recipes', 'curate.yaml'), 'utf8').split('\n');
const mutatedRecipe = fc
  .array(fc.tuple(fc.nat(curateRecipe.length), fc.oneof(fc.constant(null), fc.constantFrom(...YAML_TOKENS), fc.string({ maxLength: 6 }))), { maxLength: 4 })
  .map((edits) => {
    const lines = [...curateRecipe];
    for (const [at, what] of edits) {
      if (what === null) lines.splice(at, 1);
      else lines.splice(at, 0, (lines[at] ?? '') + what);
    }
    return lines.join('\n');
  });

const setArg = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc
    .tuple(
      fc.array(fc.constantFrom('input', 'paths', '0', '7', 'resize', 'size', 'output', 'dir', '__proto__', 'constructor', 'prototype', '', 'x'), { minLength: 1, maxLength: 4 }),
      fc.oneof(fc.constantFrom(...YAML_TOKENS), yamlSoup),
    )
    .map(([keys, value]) => `${keys.join('.')}=${value}`),
);

export const configTargets = [
  target({
    name: 'config.recipe-yaml',
    arbitrary: fc.oneof(yamlSoup, mutatedRecipe, fc.string({ maxLength: 40 })),
    run(text, ctx) {
      const file = join(ctx.dir, 'r.yaml');
      writeFileSync(file, text);
      loadRecipe(file, { projectRoot: ctx.dir });
    },
  }),
  target({
    name: 'config.set',
    arbitrary: fc.array(setArg, { minLength: 1, maxLength: 3 }),
    run(sets) {
      try {
        loadRecipe('curate', { projectRoot: PROJECT_ROOT, sets });
      } finally {
        const polluted = Object.keys(Object.prototype);
        if (polluted.length > 0) throw new FuzzFailure(`Object.prototype was polluted with ${polluted.join(', ')}`);
      }
    },
  }),
];
