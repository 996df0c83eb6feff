#!/usr/bin/env node
// `train --recipe X` is `scaleforge train --recipe X`.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(['train', ...process.argv.slice(2)]);
