import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { findRecipeFile, loadRecipe, parseRecipe, registerRecipeKind } from '../src/config/recipe.js';
import { UsageError } from '../src/util/errors.js';
import { FIXTURE_ROOT, OtherSchema, ToySchema, fixture, locate } from './config_toy_schema.js';

const opts = { projectRoot: FIXTURE_ROOT };

function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error('expected a UsageError');
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sf-config-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('extends and merging', () => {
  it('merges bases left to right, maps deep, lists replaced, ~ unsets back to the default', () => {
    const loaded = loadRecipe('toy', opts);
    expect(loaded.kind).toBe('test-toy');
    expect(loaded.sourcePath).toBe(fixture('recipes/toy.yaml'));
    // base.yaml <- small.yaml (channels 8) <- parts/overlay.yaml (warmup unset, batch 24) <- toy.yaml
    expect(loaded.config).toEqual({
      train: { learning_rate: 0.0005, batch_size: 24, schedule: { warmup: 0, decay: 'cosine' } },
      model: { channels: 8, scales: [1, 3], name: 'toy' },
      seed: 0,
    });
    expect(loaded.files).toEqual(
      ['configs/base.yaml', 'configs/small.yaml', 'recipes/parts/overlay.yaml', 'recipes/toy.yaml'].map(fixture),
    );
  });

  it('accepts the name with .yaml and a path relative to the working directory', () => {
    expect(findRecipeFile('toy.yaml', FIXTURE_ROOT)).toBe(fixture('recipes/toy.yaml'));
    const rel = path.relative(process.cwd(), fixture('recipes/toy.yaml'));
    expect(loadRecipe(rel, opts).config).toEqual(loadRecipe('toy', opts).config);
  });

  it('reports extends cycles with the chain', () => {
    const msg = usageMessage(() => loadRecipe('cycle', opts));
    expect(msg).toContain(`${locate('configs/cycle_b.yaml', 'cycle_a')}: extends cycle:`);
    expect(msg).toMatch(/cycle_a\.yaml -> .*cycle_b\.yaml -> .*cycle_a\.yaml/);
  });

  it('names a missing base with a suggestion', () => {
    const msg = usageMessage(() => loadRecipe('missing_base', opts));
    expect(msg).toContain(`${locate('recipes/missing_base.yaml', 'bsae')}: extends:`);
    expect(msg).toContain("did you mean 'base'?");
  });

  it('suggests a recipe name and lists the available ones', () => {
    const msg = usageMessage(() => loadRecipe('toi', opts));
    expect(msg).toContain("recipe 'toi' not found");
    expect(msg).toContain("did you mean 'toy'?");
  });
});

describe('--set overrides', () => {
  it('parses values as YAML and replaces lists, indexes into lists, unsets with ~', () => {
    const loaded = loadRecipe('toy', {
      ...opts,
      sets: ['model.channels=16', 'model.scales=[16,32]', 'model.scales.0=2', 'train.schedule.decay=linear', 'seed=~', 'model.name=hello world'],
    });
    const cfg = parseRecipe(ToySchema, loaded);
    expect(cfg.model).toEqual({ channels: 16, scales: [2, 32], name: 'hello world' });
    expect(cfg.train.schedule.decay).toBe('linear');
    expect(cfg.seed).toBe(0);
  });

  it('refuses a path through a scalar, naming where that scalar came from', () => {
    const msg = usageMessage(() => loadRecipe('toy', { ...opts, sets: ['train.learning_rate.x=1'] }));
    expect(msg).toContain('--set train.learning_rate.x:');
    expect(msg).toContain(locate('recipes/toy.yaml', '0.0005'));
  });

  it('refuses a list position that does not exist and a malformed --set', () => {
    expect(usageMessage(() => loadRecipe('toy', { ...opts, sets: ['model.scales.2=1'] }))).toContain('is a list of 2 items');
    expect(usageMessage(() => loadRecipe('toy', { ...opts, sets: ['model.channels'] }))).toContain('expected key.path=value');
    expect(usageMessage(() => loadRecipe('toy', { ...opts, sets: ['extends=base'] }))).toContain("'extends'");
  });

  it('locates schema errors in --set values by the option', () => {
    const msg = usageMessage(() => loadRecipe('toy', { ...opts, sets: ['model.channels=abc', 'train.extra=1'] }));
    expect(msg).toContain('--set model.channels: model.channels: expected a positive integer, got "abc"');
    expect(msg).toContain('--set train.extra: train.extra: unknown key');
  });
});

describe('validation messages', () => {
  it('names file:line:col of the key, the dotted path and what was expected', () => {
    const msg = usageMessage(() => loadRecipe('typo', opts));
    const lines = msg.split('\n');
    expect(lines[0]).toContain('has 4 problems');
    expect(lines).toContain(`${locate('recipes/typo.yaml', 'lerning_rate')}: train.lerning_rate: unknown key (did you mean 'learning_rate'?)`);
    expect(lines).toContain(`${locate('recipes/typo.yaml', 'channels')}: model.channels: expected a positive integer, got "abc"`);
    expect(lines).toContain(`${locate('recipes/typo.yaml', '0]')}: model.scales[1]: expected a positive integer, got 0`);
    expect(lines).toContain(`${locate('recipes/typo.yaml', 'name')}: model.name: expected a string, got 12`);
  });

  it('points at the base config that defined a bad value', () => {
    const msg = usageMessage(() => loadRecipe('bad_base', opts));
    expect(msg).toBe(`${locate('configs/bad_channels.yaml', 'channels')}: model.channels: expected a positive integer, got -3`);
  });

  it('suggests the enum member for a misspelt value', () => {
    const msg = usageMessage(() => loadRecipe('enum', opts));
    expect(msg).toBe(
      `${locate('recipes/enum.yaml', 'decay')}: train.schedule.decay: expected one of 'cosine', 'linear', 'constant', got "cosin" (did you mean 'cosine'?)`,
    );
  });

  it('reports a missing required key at its section', () => {
    writeFileSync(path.join(tmp, 'nomodel.yaml'), 'kind: test-toy\ntrain:\n  learning_rate: 0.1\n  batch_size: 2\n');
    const msg = usageMessage(() => loadRecipe(path.join(tmp, 'nomodel.yaml'), opts));
    expect(msg).toMatch(/nomodel\.yaml:1:1: model: missing \(expected a mapping\)$/);
  });

  it('lists known kinds and suggests the closest', () => {
    const msg = usageMessage(() => loadRecipe('unknown_kind', opts));
    expect(msg).toContain(`${locate('recipes/unknown_kind.yaml', 'kind')}: kind: unknown kind 'test-toi' (did you mean 'test-toy'?)`);
    expect(msg).toContain("'test-other'");
  });

  it('reports YAML syntax errors and duplicate keys with a position', () => {
    expect(usageMessage(() => loadRecipe('broken_yaml', opts))).toMatch(/recipes\/broken_yaml\.yaml:\d+:\d+: invalid YAML/);
    expect(usageMessage(() => loadRecipe('duplicate_key', opts))).toContain(
      `${locate('recipes/duplicate_key.yaml', 'channels: 8')}: invalid YAML: Map keys must be unique`,
    );
  });

  it('describes every option of a union and suggests among their constants', () => {
    const Opt = z.discriminatedUnion('type', [
      z.strictObject({ type: z.literal('adam'), beta2: z.number().default(0.999) }),
      z.strictObject({ type: z.literal('sgd'), momentum: z.number().min(0).max(1) }),
    ]);
    registerRecipeKind('test-union', z.strictObject({ opt: Opt }), { describe: 'union test' });
    writeFileSync(path.join(tmp, 'union.yaml'), 'kind: test-union\nopt:\n  type: adamw\n');
    expect(usageMessage(() => loadRecipe(path.join(tmp, 'union.yaml'), opts))).toMatch(
      /union\.yaml:3:3: opt\.type: expected 'adam' or 'sgd', got "adamw" \(did you mean 'adam'\?\)$/,
    );
    const sgd = loadRecipe(path.join(tmp, 'union.yaml'), { ...opts, sets: ['opt={type: sgd, momentum: 0.9}'] });
    expect(sgd.config).toEqual({ opt: { type: 'sgd', momentum: 0.9 } });
  });

  it('requires a kind', () => {
    writeFileSync(path.join(tmp, 'nokind.yaml'), 'seed: 3\n');
    expect(usageMessage(() => loadRecipe(path.join(tmp, 'nokind.yaml'), opts))).toContain("missing 'kind:'");
  });
});

describe('resolved recipe and parseRecipe', () => {
  it('resolvedYaml loads back to the same config', () => {
    const loaded = loadRecipe('toy', { ...opts, sets: ['model.channels=12'] });
    expect(loaded.resolvedYaml).toContain('# --set model.channels=12');
    const file = path.join(tmp, 'resolved.yaml');
    writeFileSync(file, loaded.resolvedYaml);
    const again = loadRecipe(file, opts);
    expect(again.kind).toBe('test-toy');
    expect(again.config).toEqual(loaded.config);
  });

  it('rejects a recipe of another kind', () => {
    writeFileSync(path.join(tmp, 'other.yaml'), 'kind: test-other\n');
    const loaded = loadRecipe(path.join(tmp, 'other.yaml'), opts);
    expect(parseRecipe(OtherSchema, loaded)).toEqual({ steps: 10 });
    expect(usageMessage(() => parseRecipe(ToySchema, loaded))).toContain("kind 'test-other', but this job needs kind 'test-toy'");
  });

  it('re-validates with an unregistered schema, keeping positions', () => {
    const loaded = loadRecipe('toy', opts);
    const Narrow = ToySchema.extend({ seed: z.int().min(5).default(5) });
    const file = fixture('recipes/toy.yaml');
    writeFileSync(path.join(tmp, 'seed.yaml'), `kind: test-toy\nextends: ${file}\nseed: 2\n`);
    expect(parseRecipe(Narrow, loaded).seed).toBe(5);
    const msg = usageMessage(() => parseRecipe(Narrow, loadRecipe(path.join(tmp, 'seed.yaml'), opts)));
    expect(msg).toMatch(/seed\.yaml:3:1: seed: expected an integer >= 5, got 2$/);
  });
});
