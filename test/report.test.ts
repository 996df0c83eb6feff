import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { chartSeries, escapeHtml, renderReport, writeReport, type ReportData } from '../src/eval/report.js';
import { savePng } from '../src/io/image.js';

const CHROMIUM = '/usr/bin/chromium';
const hostile = `<img src=x onerror="window.__pwned=1">a "red" circle & <script>window.__pwned=2</script></script>`;

function data(dir: string): ReportData {
  const steps = [100, 200, 300];
  return {
    title: 'Evaluation of <b>run</b>',
    createdAt: '2026-12-06T00:00:00.000Z',
    settings: { 'inception.weights_sha256': '6726825d…', resize: 'clean', samples_per_checkpoint: 2, seeds: '0..1', note: '</script><script>window.__pwned=3</script>' },
    checkpoints: steps.map((step, k) => ({
      label: `step ${step}`,
      step,
      metrics: { caption_fidelity: 0.5 + 0.1 * k, frechet_inception_distance: 40 - 10 * k, kernel_inception_distance_mean: 0.05 - 0.01 * k, kernel_inception_distance_std: 0.001 },
      samples: [0, 1].map((i) => ({ image: path.posix.join('samples', `s${k}-${i}.png`), prompt: i === 0 ? hostile : `a blue square ${k}`, clipScore: 25 + i, fidelity: 0.75 })),
    })),
    skippedMetrics: [{ metric: 'clip_score', reason: 'CLIP weights are not in the cache <missing>; run scaleforge weights fetch clip-vit-b32' }],
    warnings: ['2 samples for 6-d features: rank-deficient'],
    skippedImages: [{ file: path.join(dir, 'bad<1>.png'), reason: 'cannot decode' }],
  };
}

describe('report.html', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-report-'));
  let browser: Browser | undefined;
  const haveChromium = fs.existsSync(CHROMIUM);

  beforeAll(async () => {
    fs.mkdirSync(path.join(dir, 'samples'));
    const px = new Uint8Array(8 * 8 * 3).fill(200);
    for (let k = 0; k < 3; k++) for (const i of [0, 1]) await savePng(path.join(dir, 'samples', `s${k}-${i}.png`), px, 8, 8);
    await writeReport(path.join(dir, 'report.html'), data(dir));
    if (haveChromium) {
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
    }
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
  });

  it('escapes captions, file names and settings; charts one series per metric with a value at two or more steps', () => {
    const html = renderReport(data(dir));
    expect(html).not.toContain('<img src=x');
    expect(html).toContain(escapeHtml(hostile));
    expect(html).not.toMatch(/<script>window\.__pwned/);
    expect(html).toContain('bad&lt;1&gt;.png');
    const series = chartSeries(data(dir));
    expect(series.map((s) => s.metric).sort()).toEqual(['caption_fidelity', 'frechet_inception_distance', 'kernel_inception_distance_mean']);
    expect(series.find((s) => s.metric === 'frechet_inception_distance')).toMatchObject({ steps: [100, 200, 300], values: [40, 30, 20] });
    // Offline: the chart library is inlined, nothing is fetched.
    expect(html).not.toMatch(/<script[^>]+src=/);
    expect(html).not.toMatch(/<link[^>]+href=/);
  });

  it.skipIf(!haveChromium)('renders in headless Chromium: tables, charts with the right number of points, images, no console errors, no injected script', async () => {
    const page = await browser!.newPage();
    const errors: string[] = [];
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    page.on('pageerror', (e) => errors.push(e.message));
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(pathToFileURL(path.join(dir, 'report.html')).href);
    // Page-side code as strings: the test's TypeScript has no DOM types.
    await page.waitForFunction('Array.isArray(window.__sfCharts)');
    const charts = (await page.evaluate('window.__sfCharts.map((c) => ({ metric: c.metric, x: c.plot.data[0].length, y: c.plot.data[1].length }))')) as {
      metric: string;
      x: number;
      y: number;
    }[];
    expect(charts.sort((a, b) => a.metric.localeCompare(b.metric))).toEqual([
      { metric: 'caption_fidelity', x: 3, y: 3 },
      { metric: 'frechet_inception_distance', x: 3, y: 3 },
      { metric: 'kernel_inception_distance_mean', x: 3, y: 3 },
    ]);
    expect(await page.locator('canvas').count()).toBeGreaterThanOrEqual(3);
    expect(await page.locator('table').first().locator('tr').count()).toBe(4);
    expect(await page.title()).toBe('Evaluation of <b>run</b>');
    const figures = page.locator('figure');
    expect(await figures.count()).toBe(6);
    expect(await figures.first().locator('figcaption').innerText()).toContain('<img src=x onerror=');
    const loaded = await page.evaluate('[...document.images].filter((i) => i.complete && i.naturalWidth === 8).length');
    expect(loaded).toBe(6);
    expect(await page.evaluate('window.__pwned')).toBeUndefined();
    expect(await page.locator('.skip').innerText()).toContain('CLIP weights are not in the cache <missing>');
    expect(errors).toEqual([]);
    expect(requests.filter((u) => !u.startsWith('file:'))).toEqual([]);
    await page.close();
  }, 60_000);
});
