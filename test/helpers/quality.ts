import { expect } from 'vitest';

/**
 * A score from a metrics file (a fraction: mIoU, accuracy) is a finite number in [0, 1] and at least
 * `floor`, so a pipeline producing NaN or garbage fails. Printed, so CI logs keep the measured value.
 */
export function expectScore(label: string, value: unknown, floor: number): void {
  process.stdout.write(`score ${label}: ${String(value)} (floor ${floor})\n`);
  expect(typeof value === 'number' && Number.isFinite(value), `${label} must be a finite number, got ${String(value)}`).toBe(true);
  expect(value as number, label).toBeGreaterThanOrEqual(floor);
  expect(value as number, label).toBeLessThanOrEqual(1);
}
