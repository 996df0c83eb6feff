import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MetricsLog, readMetricsLog } from '../src/io/metrics_log.js';
import { JobError } from '../src/util/errors.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sf-metrics-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('metrics log', () => {
  it('writes one JSON object per line with step, time in seconds, and the fields', () => {
    const file = path.join(tmp, 'a.jsonl');
    let ms = 1_700_000_000_250;
    const log = MetricsLog.open(file, { now: () => ms });
    log.write(0, { loss: 2.5, lr: 0.001, phase: 'warmup' });
    ms += 1500;
    log.write(10, { loss: NaN, grad_norm: Infinity, ok: false });
    log.close();
    const lines = readFileSync(file, 'utf8').split('\n');
    expect(lines[0]).toBe('{"step":0,"time":1700000000.25,"loss":2.5,"lr":0.001,"phase":"warmup"}');
    expect(lines[1]).toBe('{"step":10,"time":1700000001.75,"loss":"NaN","grad_norm":"Infinity","ok":false}');
    const records = readMetricsLog(file);
    expect(records[1]!.loss).toBeNaN();
    expect(records[1]!.grad_norm).toBe(Infinity);
    expect(records.map((r) => r.step)).toEqual([0, 10]);
  });

  it('refuses to mix a new run into an existing log and reserved field names', () => {
    const file = path.join(tmp, 'b.jsonl');
    writeFileSync(file, '{"step":1,"time":0}\n');
    expect(() => MetricsLog.open(file)).toThrow(JobError);
    const log = MetricsLog.open(path.join(tmp, 'b2.jsonl'));
    expect(() => log.write(1, { step: 3 })).toThrow(/reserved/);
    log.close();
  });

  it('on resume drops records after the resumed step and a line cut short by a crash, then appends', () => {
    const file = path.join(tmp, 'c.jsonl');
    const log = MetricsLog.open(file, { now: () => 0 });
    for (const step of [0, 100, 200, 300]) log.write(step, { loss: step / 1000 });
    log.close();
    appendFileSync(file, '{"step":400,"time":0,"lo'); // crash mid-write
    const resumed = MetricsLog.open(file, { resumeStep: 200, now: () => 0 });
    resumed.write(300, { loss: 0.25 });
    resumed.close();
    expect(readMetricsLog(file).map((r) => [r.step, r.loss])).toEqual([
      [0, 0],
      [100, 0.1],
      [200, 0.2],
      [300, 0.25],
    ]);
  });

  it('names the line of a corrupt record', () => {
    const file = path.join(tmp, 'd.jsonl');
    writeFileSync(file, '{"step":1,"time":0}\nnot json\n{"step":2,"time":0}\n');
    expect(() => readMetricsLog(file)).toThrow(`${file}:2: not a JSON line`);
    writeFileSync(file, '{"time":0}\n');
    expect(() => readMetricsLog(file)).toThrow(/:1: expected an object with a numeric "step"/);
  });
});
