import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createRunDir, findLatestRun, openRunDir, runBaseName, runStamp } from '../src/train/run_dir.js';
import { UsageError } from '../src/util/errors.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sf-rundir-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('run folders', () => {
  it('names folders <recipe>-<YYYYMMDD-HHMMSS> in local time and lays out the subfolders', () => {
    const when = new Date(2024, 2, 5, 7, 8, 9); // 5 March 2024 07:08:09 local
    expect(runStamp(when)).toBe('20240305-070809');
    expect(runBaseName('recipes/nsp progressive.yaml')).toBe('nsp-progressive');
    const root = path.join(tmp, 'a');
    const run = createRunDir({ root, recipeName: 'recipes/toy.yaml', resolvedYaml: 'kind: test-toy\n', now: when, info: { seed: 3 } });
    expect(run.dir).toBe(path.join(root, 'toy-20240305-070809'));
    for (const sub of ['checkpoints', 'samples', 'tb']) expect(statSync(path.join(run.dir, sub)).isDirectory()).toBe(true);
    expect(readFileSync(path.join(run.dir, 'recipe.resolved.yaml'), 'utf8')).toBe('kind: test-toy\n');
    const info = JSON.parse(readFileSync(run.infoFile, 'utf8'));
    expect(info).toMatchObject({ recipe: 'recipes/toy.yaml', createdAt: when.toISOString(), seed: 3, node: process.version });
  });

  it('gives runs started in the same second distinct folders and finds the latest', () => {
    const root = path.join(tmp, 'b');
    const mk = (d: Date, name = 'toy') => createRunDir({ root, recipeName: name, resolvedYaml: 'kind: x\n', now: d }).dir;
    const early = mk(new Date(2024, 0, 31, 23, 59, 59));
    const first = mk(new Date(2024, 1, 1, 0, 0, 0));
    const second = mk(new Date(2024, 1, 1, 0, 0, 0));
    mk(new Date(2025, 0, 1), 'toy-big'); // a different recipe whose name starts the same
    expect(path.basename(second)).toBe(`${path.basename(first)}-2`);
    expect(findLatestRun(root, 'toy')).toBe(second);
    rmSync(path.join(second, 'recipe.resolved.yaml')); // an aborted folder is not a run
    expect(findLatestRun(root, 'recipes/toy.yaml')).toBe(first);
    expect(early < first).toBe(true);
    expect(findLatestRun(root, 'other')).toBeUndefined();
    expect(findLatestRun(path.join(tmp, 'missing'), 'toy')).toBeUndefined();
  });

  it('uses --out exactly, refusing a folder that holds a run or other files', () => {
    const out = path.join(tmp, 'c', 'my-run');
    const run = createRunDir({ out, recipeName: 'toy', resolvedYaml: 'kind: x\n' });
    expect(run.dir).toBe(out);
    expect(() => createRunDir({ out, recipeName: 'toy', resolvedYaml: 'kind: x\n' })).toThrow(UsageError);
    const busy = path.join(tmp, 'c', 'busy');
    mkdirSync(busy);
    writeFileSync(path.join(busy, 'notes.txt'), 'x');
    expect(() => createRunDir({ out: busy, recipeName: 'toy', resolvedYaml: '' })).toThrow(/not empty/);
  });

  it('reopens a run for resume, recreating missing subfolders', () => {
    const run = createRunDir({ root: path.join(tmp, 'd'), recipeName: 'toy', resolvedYaml: 'kind: x\n' });
    rmSync(run.samples, { recursive: true });
    expect(openRunDir(run.dir)).toEqual(run);
    expect(existsSync(run.samples)).toBe(true);
    expect(() => openRunDir(path.join(tmp, 'd'))).toThrow(/not a run folder/);
  });
});
