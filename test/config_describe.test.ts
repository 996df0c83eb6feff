import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { describeSchema, dotted, schemaAt } from '../src/config/issues.js';
import { closestMatch, editDistance } from '../src/config/suggest.js';

describe('did-you-mean', () => {
  it('edit distance counts insertions, deletions, substitutions and neighbour swaps', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3); // k->s, e->i, +g
    expect(editDistance('lerning_rate', 'learning_rate')).toBe(1);
    expect(editDistance('cahnnels', 'channels')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
  });

  it('only suggests plausible typos', () => {
    expect(closestMatch('lerning_rate', ['batch_size', 'learning_rate'])).toBe('learning_rate');
    expect(closestMatch('Seed', ['seed', 'steps'])).toBe('seed');
    expect(closestMatch('optimizer', ['seed', 'steps'])).toBeUndefined();
  });
});

describe('schema descriptions', () => {
  it('describes numbers by their checks', () => {
    expect(describeSchema(z.number().int().positive())).toBe('a positive integer');
    expect(describeSchema(z.int().nonnegative().default(0))).toBe('a non-negative integer');
    expect(describeSchema(z.int().min(5))).toBe('an integer >= 5');
    expect(describeSchema(z.number().gt(0).lte(1))).toBe('a number > 0 and <= 1');
    expect(describeSchema(z.int().multipleOf(8))).toBe('an integer (a multiple of 8)');
  });

  it('describes strings, lists, enums, unions and prefers .describe()', () => {
    expect(describeSchema(z.string().min(1))).toBe('a non-empty string');
    expect(describeSchema(z.array(z.int()).length(3))).toBe('a list (each an integer) of exactly 3 items');
    expect(describeSchema(z.enum(['a', 'b']))).toBe("one of 'a', 'b'");
    expect(describeSchema(z.union([z.literal('auto'), z.int().positive()]))).toBe("'auto' or a positive integer");
    expect(describeSchema(z.number().describe('a learning rate such as 1e-4'))).toBe('a learning rate such as 1e-4');
  });

  it('follows paths through objects, lists, records and wrappers', () => {
    const S = z.strictObject({ a: z.array(z.strictObject({ b: z.record(z.string(), z.boolean()) })).optional() });
    expect(describeSchema(schemaAt(S, ['a', 3, 'b', 'anything'])!)).toBe('true or false');
    expect(schemaAt(S, ['a', 0, 'nope'])).toBeUndefined();
    expect(dotted(['model', 'scales', 2, 'size'])).toBe('model.scales[2].size');
  });
});
