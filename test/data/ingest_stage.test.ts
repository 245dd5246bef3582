/**
 * The ingest stage on a CSV folder inside a temp project: skipped items in metrics/ingest.json
 * (no absolute paths, no timings), the derived class list pinned in the project (classes.json +
 * dataset.classes), never written into the dataset folder, and kept by the next run.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { setQuiet } from '../../pipeline/log.js';
import { DEFAULT_PARAMS_YAML, loadParams, writeOverrides } from '../../stages/params.js';
import { stage } from '../../stages/ingest/index.js';
import { makeTemp, rmTemp, writeRgb } from './helpers.js';

setQuiet(true);
let project: string;
const photos = () => path.join(project, 'data', 'photos');

beforeAll(async () => {
  project = await makeTemp('tagseg-ingest-stage-');
  await fs.writeFile(path.join(project, 'params.yaml'), DEFAULT_PARAMS_YAML);
  await writeOverrides(path.join(project, 'params.yaml'), ['dataset.root=data/photos', 'dataset.format=csv', 'ingest.size=8', 'ingest.on_error=skip']);
  for (const id of ['a', 'b', 'c']) await writeRgb(path.join(photos(), `${id}.png`), 8, 6);
  await fs.writeFile(path.join(photos(), 'tags.csv'), 'image_id,tags\na,cat\nb,dog|potted plant\nc,cat\nzz,cat\n');
});
afterAll(async () => {
  await rmTemp(project);
});

async function runStage(overrides: string[] = []): Promise<Record<string, unknown>> {
  const params = await loadParams(path.join(project, 'params.yaml'), overrides);
  return stage.run({ params, root: project, path: (rel) => path.resolve(project, rel), json: true });
}

describe('ingest stage: skipped items and the derived class list', () => {
  it('records skipped items without absolute paths or timings, pins the derived classes in the project', async () => {
    await runStage();
    const text = await fs.readFile(path.join(project, 'metrics/ingest.json'), 'utf8');
    expect(text).not.toContain(project);
    const rec = JSON.parse(text);
    expect(rec).not.toHaveProperty('seconds');
    expect(rec).not.toHaveProperty('peakRssMiB');
    expect(rec.dataset).toBe('data/photos');
    expect(rec.images).toBe(3);
    expect(rec.classes).toEqual(['cat', 'dog', 'potted plant']);
    expect(rec.skipped).toBe(1);
    expect(rec.skippedItems).toEqual([{ id: 'zz', file: 'tags.csv', reason: 'line 5: missing image: no zz.jpg/.jpeg/.png in .' }]);

    // Pinned in the project and named by the param; the dataset folder is left as it was.
    expect(JSON.parse(await fs.readFile(path.join(project, 'classes.json'), 'utf8'))).toEqual({
      classes: ['cat', 'dog', 'potted plant'],
      background: null,
      void: 255,
    });
    expect((await loadParams(path.join(project, 'params.yaml'))).dataset.classes).toBe('classes.json');
    expect((await fs.readdir(photos())).sort()).toEqual(['a.png', 'b.png', 'c.png', 'tags.csv']);
  });

  it('a later run with a new tag keeps the indices: the new class is a per-item error', async () => {
    await writeRgb(path.join(photos(), 'd.png'), 8, 6);
    await fs.appendFile(path.join(photos(), 'tags.csv'), 'd,bird|cat\n'); // "bird" would sort first and shift every index
    const r = (await runStage()) as { classes: string[]; skipped: { id: string; reason: string }[] };
    expect(r.classes).toEqual(['cat', 'dog', 'potted plant']);
    expect(r.skipped.map((s) => [s.id, s.reason])).toEqual([
      ['zz', 'line 5: missing image: no zz.jpg/.jpeg/.png in .'],
      ['d', 'line 6: unknown class "bird" for image d'],
    ]);
    const rows = await readAll(path.join(project, 'cache/dataset.arrow'), { stage: 'ingest' });
    expect(rows.map((row) => [row.id, Array.from(row.tags as number[])])).toEqual([
      ['a', [0]],
      ['b', [1, 2]],
      ['c', [0]],
    ]);

    // Default (fail): the first bad item is a TagsegError naming the CSV and the reason.
    const err = await runStage(['ingest.on_error=fail']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TagsegError);
    expect((err as TagsegError).file).toBe(path.join(photos(), 'tags.csv'));
    expect((err as TagsegError).reason).toBe('line 5: missing image: no zz.jpg/.jpeg/.png in .');
  });

  it('an unpinned run never overwrites a different classes.json in the project', async () => {
    await fs.writeFile(path.join(project, 'classes.json'), JSON.stringify({ classes: ['dog', 'cat'] }));
    const err = await runStage(["dataset.classes=''"]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TagsegError);
    expect((err as TagsegError).file).toBe(path.join(project, 'classes.json'));
    expect((err as TagsegError).reason).toMatch(/this file holds another list/);
    expect(JSON.parse(await fs.readFile(path.join(project, 'classes.json'), 'utf8'))).toEqual({ classes: ['dog', 'cat'] });
  });
});
