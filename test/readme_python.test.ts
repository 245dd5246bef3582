/**
 * The README's "Reading the outputs from Python" snippet, run as written against tables that
 * `tagseg import` just wrote: the documentation cannot drift from the format.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateSynthetic } from '../data/synth.js';
import { ingestDataset } from '../stages/ingest/ingest.js';
import { skipWithout } from './helpers/ci.js';
import { REPO, findPython } from './helpers/python.js';

const { python, why } = findPython(['pyarrow', 'duckdb', 'numpy']);
const skip = skipWithout('README python snippet (pyarrow, duckdb, numpy)', python ? undefined : why);

describe.skipIf(skip)('README python snippet', () => {
  it('reads cache/images.arrow as the README says', async () => {
    const readme = await fs.readFile(path.join(REPO, 'README.md'), 'utf8');
    const snippet = /## Reading the outputs from Python[\s\S]*?```python\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(snippet, 'README has the python snippet').toBeTruthy();
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-readme-'));
    try {
      await generateSynthetic({ out: path.join(dir, 'ds'), images: 6, size: 40, classes: 2, valFraction: 0.34, seed: 1 });
      await ingestDataset({
        root: path.join(dir, 'ds'), format: 'voc', csv: 'tags.csv', splits: [], size: 32, concurrency: 2, onError: 'fail',
        datasetTable: path.join(dir, 'cache/dataset.arrow'), imagesTable: path.join(dir, 'cache/images.arrow'), paramsHash: 'test',
      });
      // DuckDB (the version pip serves) answers SQL on the pyarrow table; the .arrow path alone it cannot read.
      const check = `${snippet}\nassert img.shape == (row["height"], row["width"], 3), img.shape\nassert classes[0] == "background"\n`
        + 'assert counts == sorted(collections.Counter(t.column("split").to_pylist()).items()), counts\n'
        + 'print("README-OK", len(t), sum(n for _, n in counts))\n';
      const out = execFileSync(python!, ['-c', `import collections\n${check}`], { cwd: dir, encoding: 'utf8' });
      expect(out).toContain('README-OK 6 6');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
