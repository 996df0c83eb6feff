import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * Ctrl-C and SIGTERM during a real `scaleforge curate` child process: the analyses done so far are in the state
 * file, the exit code is 130/143 with a line saying how to continue, and a re-run continues instead of starting over.
 */
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'scaleforge.js');
const FILES = 48;
const tmp = mkdtempSync(join(tmpdir(), 'sf-interrupt-'));
const input = join(tmp, 'in');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

beforeAll(async () => {
  mkdirSync(input);
  // Noise at 768² keeps each file busy for a while (decode, hash, resize) so the signal lands mid-run.
  for (let i = 0; i < FILES; i++) {
    const noise = { type: 'gaussian' as const, mean: 40 + i * 3, sigma: 30 + (i % 7) };
    const img = await sharp({ create: { width: 768, height: 768, channels: 3, background: { r: 0, g: 0, b: 0 }, noise } }).jpeg({ quality: 90 }).toBuffer();
    writeFileSync(join(input, `img${String(i).padStart(3, '0')}.jpg`), img);
  }
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Starts curate; once `whenLines` analyses are in the state file, sends the first of `signals`, and the
 * rest as soon as the process says it is stopping (so they land while it still finishes its files).
 */
function curate(out: string, signals: NodeJS.Signals[], whenLines = 3): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'curate', input, '--out', out, '--size', '64', '--concurrency', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    let sent = false;
    let restSent = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      if (sent && !restSent && stderr.includes(`${signals[0]}: curate stops`)) {
        restSent = true;
        for (const s of signals.slice(1)) child.kill(s);
      }
    });
    const poll = setInterval(() => {
      if (sent || signals.length === 0) return;
      if (stateLines(out) >= whenLines) {
        sent = true;
        child.kill(signals[0]!);
      }
    }, 20);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearInterval(poll);
      resolve({ code, stdout, stderr });
    });
  });
}

function stateLines(out: string): number {
  const dir = join(out, '.curate');
  if (!existsSync(dir)) return 0;
  const state = readdirSync(dir).find((f) => f.startsWith('state-'));
  return state ? readFileSync(join(dir, state), 'utf8').split('\n').filter((l) => l.trim()).length : 0;
}

describe('curate interrupts', () => {
  it('SIGINT: saves what is done, exits 130 saying how to continue; the re-run analyses only the rest', async () => {
    const out = join(tmp, 'out-int');
    const first = await curate(out, ['SIGINT']);
    expect(first.code, first.stderr).toBe(130);
    expect(first.stderr).toMatch(/SIGINT: curate stops after the files in progress/);
    expect(first.stderr).toMatch(/To continue, run the same command again/);
    const done = stateLines(out);
    expect(done).toBeGreaterThanOrEqual(3);
    expect(done).toBeLessThan(FILES);
    expect(first.stderr).toContain(`with ${done} of ${FILES} files analysed`);
    expect(existsSync(join(out, 'manifest.jsonl'))).toBe(false);

    const second = await curate(out, []);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain(`curate: ${FILES} files, ${done} already analysed`);
    expect(stateLines(out)).toBe(FILES);
    const rows = readFileSync(join(out, 'manifest.jsonl'), 'utf8').trim().split('\n');
    expect(rows).toHaveLength(FILES);
  });

  it('SIGTERM twice: the second one aborts at once with 143', async () => {
    const out = join(tmp, 'out-term');
    const r = await curate(out, ['SIGTERM', 'SIGTERM']);
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toMatch(/SIGTERM again: curate aborting at once/);
    // Whatever was appended before the abort is whole lines a re-run can use.
    const dir = join(out, '.curate');
    const state = readdirSync(dir).find((f) => f.startsWith('state-'))!;
    for (const line of readFileSync(join(dir, state), 'utf8').split('\n').filter((l) => l.trim())) expect(() => JSON.parse(line)).not.toThrow();
  });
});
