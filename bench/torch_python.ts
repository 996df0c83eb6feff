/**
 * Which Python runs bench/torch_ref.py: `--torch-python PATH`, else SCALEFORGE_TORCH_PYTHON, else
 * `python3` on PATH, else Debian's /usr/bin/python3 (python3-torch). The first that imports torch
 * wins; the bench quotes its torch version with every ratio, since PyTorch 2.x is up to 2× faster
 * than Debian's 1.13 on these steps.
 */
import { spawnSync } from 'node:child_process';

export interface TorchPython {
  python: string;
  /** torch.__version__ */
  version: string;
  /** Where the choice came from. */
  source: string;
}

export type TorchPythonResult = { found: TorchPython; tried: string[] } | { found?: undefined; tried: string[] };

/** The interpreters to try, in order, with where each came from. */
export function torchPythonCandidates(argv: readonly string[], env: NodeJS.ProcessEnv): { python: string; source: string }[] {
  const out: { python: string; source: string }[] = [];
  const at = argv.indexOf('--torch-python');
  const flag = at >= 0 ? argv[at + 1] : argv.find((a) => a.startsWith('--torch-python='))?.slice('--torch-python='.length);
  if (flag) return [{ python: flag, source: '--torch-python' }];
  if (env.SCALEFORGE_TORCH_PYTHON) return [{ python: env.SCALEFORGE_TORCH_PYTHON, source: 'SCALEFORGE_TORCH_PYTHON' }];
  out.push({ python: 'python3', source: 'python3 on PATH' });
  out.push({ python: '/usr/bin/python3', source: "Debian's python3" });
  return out;
}

/** Probes the candidates; an explicit choice that cannot import torch is not silently replaced. */
export function findTorchPython(argv: readonly string[] = process.argv, env: NodeJS.ProcessEnv = process.env): TorchPythonResult {
  const tried: string[] = [];
  for (const c of torchPythonCandidates(argv, env)) {
    const probe = spawnSync(c.python, ['-c', 'import torch, sys; print(torch.__version__); print(sys.executable)'], { encoding: 'utf8', timeout: 60_000 });
    if (probe.status === 0) {
      const [version, exe] = probe.stdout.trim().split('\n');
      return { found: { python: exe || c.python, version: version!, source: c.source }, tried };
    }
    tried.push(`${c.python} (${c.source}): ${probe.error ? probe.error.message : (probe.stderr.trim().split('\n').pop() ?? 'cannot import torch')}`);
  }
  return { tried };
}
