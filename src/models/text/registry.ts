import { UsageError } from '../../util/errors.js';
import type { Rng } from '../../util/rng.js';
import { BuiltinTextEncoder } from './builtin_text_encoder.js';
import { ClipTextEncoder } from './clip_text_encoder.js';
import type { TextEncoderModule, TextEncoderSpec } from './text_encoder.js';

/** What a factory may need besides the spec: the dataset's captions (to build a vocabulary) and a seeded RNG. */
export interface TextEncoderContext {
  captions?: Iterable<string>;
  rng?: Rng;
}

export type TextEncoderFactory = (spec: TextEncoderSpec, ctx: TextEncoderContext) => TextEncoderModule;

const factories = new Map<string, TextEncoderFactory>([
  ['clip', (spec) => ClipTextEncoder.fromSpec(spec as Extract<TextEncoderSpec, { kind: 'clip' }>)],
  ['builtin', (spec, ctx) => BuiltinTextEncoder.fromSpec(spec as Extract<TextEncoderSpec, { kind: 'builtin' }>, ctx)],
]);

export function registerTextEncoder(kind: string, factory: TextEncoderFactory): void {
  factories.set(kind, factory);
}

export function textEncoderKinds(): string[] {
  return [...factories.keys()];
}

/** Build a text encoder from a spec (a config section, or `spec()` saved with a checkpoint). */
export function createTextEncoder(spec: TextEncoderSpec, ctx: TextEncoderContext = {}): TextEncoderModule {
  const kind = (spec as { kind?: unknown })?.kind;
  const factory = typeof kind === 'string' ? factories.get(kind) : undefined;
  if (!factory) throw new UsageError(`text encoder kind ${JSON.stringify(kind)} is not one of ${textEncoderKinds().join(', ')}`);
  if (kind === 'clip' && typeof (spec as { path?: unknown }).path !== 'string') {
    throw new UsageError('text encoder (clip): path must name a local Hugging Face folder');
  }
  return factory(spec, ctx);
}
