/** One measured figure of a benchmark suite. */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  note?: string;
}

export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toPrecision(3);
}

/** A plain-text table: name, value, unit, note. */
export function formatTable(rows: BenchRow[]): string {
  const w = Math.max(4, ...rows.map((r) => r.name.length));
  const vw = Math.max(5, ...rows.map((r) => formatValue(r.value).length));
  const uw = Math.max(4, ...rows.map((r) => r.unit.length));
  const head = `${'name'.padEnd(w)}  ${'value'.padStart(vw)} ${'unit'.padEnd(uw)}  note`;
  const lines = rows.map((r) => `${r.name.padEnd(w)}  ${formatValue(r.value).padStart(vw)} ${r.unit.padEnd(uw)}  ${r.note ?? ''}`.trimEnd());
  return [head, '-'.repeat(head.length), ...lines].join('\n');
}
