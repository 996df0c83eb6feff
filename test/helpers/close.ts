import { expect } from 'vitest';

/** Same length and every element within `atol` of the expected one (the message names the worst index). */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number): void {
  expect(got.length).toBe(want.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  expect(worst, `largest difference at index ${at}: got ${got[at]}, want ${want[at]}`).toBeLessThanOrEqual(atol);
}
