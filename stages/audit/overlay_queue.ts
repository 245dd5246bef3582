/**
 * The report's JPEGs, encoded on sharp's threads `concurrency` at a time by the project's one
 * concurrency helper (pipeline/concurrency.ts orderedMap) while the audit measures the next images: jobs are
 * collected per batch, and a batch starts once the one before it is written, so at most two
 * batches' pixel buffers are alive whatever the dataset's size.
 */
import * as fs from 'node:fs/promises';
import { orderedMap } from '../../pipeline/concurrency.js';
import { encodeJpeg } from '../../data/overlay.js';

/** Default number of JPEGs encoded at once (sharp's libvips threads do the work; 4 kept 2-core machines busy). */
export const OVERLAY_CONCURRENCY = 4;

export interface OverlayJob {
  file: string;
  rgb: () => Promise<{ rgb: Uint8Array; H: number; W: number }>;
  /** Longest side of the JPEG; 0 = as is. */
  longSide: number;
}

export class OverlayQueue {
  private jobs: OverlayJob[] = [];
  private running: Promise<void> = Promise.resolve();
  // A failed batch is kept and thrown by the next call (a rejected promise nobody awaits yet would
  // crash the process as an unhandled rejection).
  private error: unknown = null;
  /** sharp time spent, summed over jobs. */
  seconds = 0;

  constructor(private readonly concurrency = OVERLAY_CONCURRENCY) {}

  add(job: OverlayJob): void {
    this.jobs.push(job);
  }

  /** Once `concurrency` x 4 jobs are collected, wait for the previous batch and start them. */
  async flush(force = false): Promise<void> {
    if (!force && this.jobs.length < this.concurrency * 4) return;
    await this.running;
    if (this.error) throw this.error;
    const batch = this.jobs;
    this.jobs = [];
    this.running = this.write(batch).catch((err: unknown) => {
      this.error ??= err;
    });
  }

  /** Every job written (or the first error thrown). */
  async close(): Promise<void> {
    await this.flush(true);
    await this.running;
    if (this.error) throw this.error;
  }

  /** Drop what is not started; wait for what runs. */
  async abort(): Promise<void> {
    this.jobs = [];
    await this.running;
  }

  private async write(batch: OverlayJob[]): Promise<void> {
    const one = async (j: OverlayJob) => {
      const t = performance.now();
      const x = await j.rgb();
      await fs.writeFile(j.file, await encodeJpeg(x.rgb, x.H, x.W, j.longSide));
      this.seconds += (performance.now() - t) / 1000;
    };
    for await (const _ of orderedMap(batch, one, { concurrency: this.concurrency })) {
      // written in place; nothing to collect
    }
  }
}
