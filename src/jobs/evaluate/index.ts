import { registerRecipeKind } from '../../config/registry.js';
import { evaluateRecipeSchema } from './schema.js';

// `evaluate --recipe` loads recipes of this kind; training commands do not run them.
registerRecipeKind('evaluate', evaluateRecipeSchema, { describe: 'evaluate the checkpoints of a run: caption fidelity, FID, KID, IS, CLIP-score, report.html' });

export { evaluateRecipeSchema, type EvaluateRecipe } from './schema.js';
export { evaluateRun } from './run.js';
