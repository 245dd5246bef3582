/**
 * Streaming training data (nn/dataset.ts): random access by row position over a hand-made table,
 * the bound on record batches held, the one-step prefetch, and a CAM training that gives
 * byte-identical weights streamed from a table and from memory.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RowReader, joinDataset, memoryDataset, streamDataset, tableDataset } from '../../nn/dataset.js';
import { type ColumnSpec, TableReader, TableWriter, readAll } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { partPath, prepareTableFor, shardOf, shardsToRun } from '../../pipeline/shard.js';
import { TagsegError } from '../../pipeline/errors.js';
import { defaultParams } from '../../stages/params.js';
import { CAM_MODEL_FORMAT, buildCamNet } from '../../nn/cam_net.js';
import { type TrainImage, trainCam } from '../../stages/cam/train.js';

const COLUMNS: ColumnSpec[] = [
  { name: 'id', type: 'utf8' },
  { name: 'n', type: 'int32' },
  { name: 'pixels', type: 'binary' },
  { name: 'height', type: 'int32' },
  { name: 'width', type: 'int32' },
];
const ROWS = 23;
const H = 20;
const W = 16;
const pixelsOf = (n: number) => Uint8Array.from({ length: H * W * 3 }, (_, i) => (i * 31 + n * 97 + ((i * n) % 13)) % 256);

let dir: string;
let file: string;

beforeAll(async () => {
  await initBackend();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-dataset-'));
  file = path.join(dir, 'images.arrow');
  // 5 rows per record batch: 5 batches, the last one short
  const w = await TableWriter.open(file, COLUMNS, { stage: 'ingest', paramsHash: 'x', classes: ['a', 'b'] }, { batchRows: 5 });
  for (let n = 0; n < ROWS; n++) await w.write({ id: `im${n}`, n, pixels: pixelsOf(n), height: H, width: W });
  await w.close();
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('RowReader', () => {
  it.each([true, false])('returns exactly the rows asked for, in the order asked, repeats included (direct %s)', async (direct) => {
    const r = await RowReader.open(file, { stage: 'ingest' }, { cacheBatches: 2, direct });
    try {
      expect(r.numRows).toBe(ROWS);
      const ask = [22, 0, 7, 7, 13, 4, 5, 19, 1];
      const rows = await r.rows(ask);
      expect(rows.map((row) => row.n)).toEqual(ask);
      expect(rows.map((row) => row.id)).toEqual(ask.map((n) => `im${n}`));
      rows.forEach((row, k) => expect(row.pixels).toEqual(pixelsOf(ask[k])));
      // negative control: a neighbour's pixels differ
      expect(rows[0].pixels).not.toEqual(pixelsOf(21));
      await expect(r.rows([ROWS])).rejects.toThrow(TagsegError);
      await expect(r.rows([-1])).rejects.toThrow(/out of range/);
      // direct: no body read at all; else each body once per call
      expect(r.stats.directRows).toBe(direct ? ask.length : 0);
      expect(r.stats.reads).toBe(direct ? 0 : 5);
    } finally {
      await r.close();
    }
  });

  it('holds at most cacheBatches + 1 record batches, reads each batch once per call', async () => {
    const r = await RowReader.open(file, { stage: 'ingest' }, { cacheBatches: 2, direct: false });
    try {
      // a full random pass, 4 rows at a time (a permutation as the loop draws it)
      const order = Array.from({ length: ROWS }, (_, i) => (i * 7) % ROWS);
      for (let s = 0; s < ROWS; s += 4) await r.rows(order.slice(s, s + 4));
      expect(r.stats.maxHeld).toBeLessThanOrEqual(3);
      expect(r.held).toBeLessThanOrEqual(2);
      // rows 0..4 share batch 0: one read (it may already be cached)
      const before = r.stats.reads;
      await r.rows([10, 11, 12, 13, 14]);
      expect(r.stats.reads - before).toBeLessThanOrEqual(1);
      // cached now: no read
      const again = r.stats.reads;
      await r.rows([14, 10]);
      expect(r.stats.reads).toBe(again);
    } finally {
      await r.close();
    }
    // negative control: no cache -> every batch of a call read again each time
    const r0 = await RowReader.open(file, { stage: 'ingest' }, { cacheBatches: 0, direct: false });
    try {
      await r0.rows([0, 5]);
      await r0.rows([0, 5]);
      expect(r0.stats.reads).toBe(4);
      expect(r0.held).toBe(0);
      expect(r0.stats.maxHeld).toBe(1);
    } finally {
      await r0.close();
    }
  });
});

describe('RowReader over a part folder (a sharded table)', () => {
  it('numbers rows by part then row, as TableReader.rows() yields them', async () => {
    const table = path.join(dir, 'parts.arrow');
    await prepareTableFor(table, 3);
    for (const s of shardsToRun(3, undefined, 'x.shards')) {
      const w = await TableWriter.open(partPath(table, s), COLUMNS, { stage: 'ingest', paramsHash: 'x', classes: ['a', 'b'] }, { batchRows: 2 });
      for (let n = 0; n < ROWS; n++) if (shardOf(`im${n}`, 3) === s.k) await w.write({ id: `im${n}`, n, pixels: pixelsOf(n), height: H, width: W });
      await w.close();
    }
    const whole = await readAll(table);
    for (const direct of [true, false]) {
      const r = await RowReader.open(table, { stage: 'ingest' }, { direct });
      try {
        const ask = Array.from({ length: ROWS }, (_, i) => (i * 5) % ROWS);
        expect(await r.rows(ask)).toEqual(ask.map((k) => whole[k]));
        expect(r.stats.directRows).toBe(direct ? ROWS : 0);
      } finally {
        await r.close();
      }
    }
  });
});

describe('TableReader.readRows', () => {
  it('reads every column type (nulls, empty and non-empty lists) as the whole-batch decode does', async () => {
    const cols: ColumnSpec[] = [
      { name: 's', type: 'utf8', nullable: true }, { name: 'i', type: 'int32' }, { name: 'f', type: 'float32' },
      { name: 'd', type: 'float64', nullable: true }, { name: 'b', type: 'bool' }, { name: 'bin', type: 'binary', nullable: true },
      { name: 'li', type: 'list<int32>' }, { name: 'lf', type: 'list<float32>', nullable: true }, { name: 'ls', type: 'list<utf8>' },
    ];
    const f = path.join(dir, 'types.arrow');
    const w = await TableWriter.open(f, cols, { stage: 't', paramsHash: 'x', classes: [] }, { batchRows: 3 });
    for (let n = 0; n < 8; n++) {
      await w.write({
        s: n % 3 === 0 ? null : `row ${n} ü`, i: -n * 1000, f: n / 3, d: n % 2 ? null : n * 1e10, b: n % 3 === 1,
        bin: n === 4 ? null : Uint8Array.from({ length: n }, (_, k) => k * n), li: Array.from({ length: n % 4 }, (_, k) => k - n),
        lf: n === 5 ? null : Float32Array.from({ length: n }, (_, k) => k / 7), ls: n % 2 ? ['a', '', `z${n}`] : [],
      });
    }
    await w.close();
    const whole = await readAll(f);
    const r = await RowReader.open(f);
    try {
      const ask = [7, 0, 3, 4, 5, 1, 6, 2];
      const rows = await r.rows(ask);
      expect(r.stats.directRows).toBe(ask.length);
      expect(rows).toEqual(ask.map((k) => whole[k]));
      expect(rows[0]).not.toEqual(whole[6]); // negative control
    } finally {
      await r.close();
    }
    // `columns` keeps only those cells (the segment stage's index passes read ids and sizes, no pixels)
    const t = await TableReader.open(f);
    try {
      const some = await t.readRows(1, [2, 0], ['ls', 'i']);
      expect(some).toEqual([5, 3].map((k) => ({ i: whole[k].i, ls: whole[k].ls })));
      expect(Object.keys(some![0]).sort()).toEqual(['i', 'ls']);
    } finally {
      await t.close();
    }
  });
});

describe('streamDataset', () => {
  it('serves prefetched steps from their prefetch (the two latest kept) and any other step by loading', async () => {
    const calls: string[] = [];
    const ds = streamDataset(10, (idx) => {
      calls.push(idx.join(','));
      return Promise.resolve(idx.map((i) => i * 10));
    });
    // the loop's pattern: hint step 1, read step 0; hint step 2, read step 1 (prefetched)
    ds.prefetch([3, 4]);
    expect(await ds.get([1])).toEqual([10]);
    ds.prefetch([5]);
    expect(await ds.get([3, 4])).toEqual([30, 40]);
    expect(await ds.get([5])).toEqual([50]);
    expect(calls).toEqual(['3,4', '1', '5']);
    // a third hint drops the oldest: step 6 is loaded again
    ds.prefetch([6]);
    ds.prefetch([7]);
    ds.prefetch([8]);
    expect(await ds.get([6])).toEqual([60]);
    expect(await ds.get([8])).toEqual([80]);
    expect(calls).toEqual(['3,4', '1', '5', '6', '7', '8', '6']);
  });

  it('tableDataset maps item i to the rows at positions[i]', async () => {
    const r = await RowReader.open(file, { stage: 'ingest' });
    try {
      const positions = [4, 9, 2, 17];
      const ds = tableDataset([r, r], positions, (rows, i) => `${i}:${String(rows[0].id)}:${String(rows[1].n)}`);
      expect(ds.size).toBe(4);
      expect(await ds.get([3, 0])).toEqual(['3:im17:17', '0:im4:4']);
    } finally {
      await r.close();
    }
  });
});

describe('joinDataset', () => {
  it('reads each source at its own positions (null: no row) and keeps the item order', async () => {
    const r = await RowReader.open(file, { stage: 'ingest' });
    try {
      // the second source lists the same images in reverse row order, as a table of other order would
      const ds = joinDataset([
        { reader: r, positions: [4, 9, 2] },
        { reader: r, positions: [ROWS - 1 - 4, null, ROWS - 1 - 2] },
      ], ([a, b], i) => `${i}:${String(a?.id)}:${b === null ? '-' : String(ROWS - 1 - (b.n as number))}`);
      expect(ds.size).toBe(3);
      expect(await ds.get([2, 1, 0])).toEqual(['2:im2:2', '1:im9:-', '0:im4:4']);
      await expect(joinDataset([{ reader: r, positions: [ROWS] }], () => 0).get([0])).rejects.toThrow(/row 23 is out of range/);
      expect(() => joinDataset([{ reader: r, positions: [1] }, { reader: r, positions: [] }], () => 0)).toThrow(/one position per item/);
    } finally {
      await r.close();
    }
  });
});

describe('streamed CAM training', () => {
  it('gives byte-identical weights to the in-memory path for a seed', async () => {
    const p = defaultParams();
    const cam = { ...p.cam, backbone: 'resnet' as const, crop: 16, batch_size: 4, epochs: 2, probe_iters: 3, lr: 0.01 };
    const positions = [0, 3, 5, 8, 11, 14, 16, 20, 22];
    const target = (n: number) => Float32Array.from([n % 2, 1 - (n % 2)]);
    const inMemory: TrainImage[] = positions.map((n) => ({ id: `im${n}`, pixels: pixelsOf(n), height: H, width: W, target: target(n) }));
    const weights = async (images: Parameters<typeof trainCam>[0]['images'], sub: string) => {
      const net = await buildCamNet({
        format: CAM_MODEL_FORMAT, version: 1, backbone: { kind: 'resnet', outputStride: 8, norm: 'batch', width: 4, depth: [1, 1, 1, 1] },
        classes: ['a', 'b'], background: null, outputs: [0, 1],
      }, 0, true);
      try {
        await trainCam({ net, images, cam, seed: 7, checkpointDir: path.join(dir, sub), hash: 'k' });
        return [...net.named().values()].map((v) => Buffer.from(v.dataSync().buffer).toString('base64'));
      } finally {
        net.dispose();
      }
    };
    const a = await weights(inMemory, 'ckpt-memory');
    const r = await RowReader.open(file, { stage: 'ingest' }, { cacheBatches: 1 });
    let b: string[];
    try {
      const ds = tableDataset<TrainImage>([r], positions, ([row], i) => ({
        id: row.id as string, pixels: row.pixels as Uint8Array, height: row.height as number, width: row.width as number, target: inMemory[i].target,
      }));
      b = await weights(ds, 'ckpt-stream');
      expect(r.stats.maxHeld).toBeLessThanOrEqual(3); // cache 1 + a step being read and its prefetch
    } finally {
      await r.close();
    }
    expect(b).toEqual(a);
    expect(await weights(memoryDataset(inMemory), 'ckpt-wrapped')).toEqual(a);
    // negative control: another seed's order and draws change the weights
    const net = await buildCamNet({
      format: CAM_MODEL_FORMAT, version: 1, backbone: { kind: 'resnet', outputStride: 8, norm: 'batch', width: 4, depth: [1, 1, 1, 1] },
      classes: ['a', 'b'], background: null, outputs: [0, 1],
    }, 0, true);
    try {
      await trainCam({ net, images: inMemory, cam, seed: 8, checkpointDir: path.join(dir, 'ckpt-seed8'), hash: 'k' });
      const d = [...net.named().values()].map((v) => Buffer.from(v.dataSync().buffer).toString('base64'));
      expect(d).not.toEqual(a);
    } finally {
      net.dispose();
    }
  }, 120_000);
});
