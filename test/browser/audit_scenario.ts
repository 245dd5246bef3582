/**
 * What a reviewer does with reports/audit/index.html, as browser steps with checks: open it from
 * the file system, sort by suspicion, filter a class and a split, toggle the mask stage, page
 * through thousands of rows. Written against a small `ReportPage` driver so the steps read the
 * same whatever drives the browser (audit_report.test.ts: playwright-core + Debian's chromium).
 */
import { expect } from 'vitest';
import { parseDecisions } from '../../data/review.js';

export interface ReportPage {
  goto(url: string): Promise<void>;
  /** Evaluates a JS expression in the page and returns its (JSON) value. */
  evaluate<T>(expression: string): Promise<T>;
  click(selector: string): Promise<void>;
  /** Chooses the <option> with this label in a <select>. */
  selectLabel(selector: string, label: string): Promise<void>;
  /** Uncaught page errors so far. */
  errors(): string[];
  /** Presses a key (Playwright key names: 'j', 'ArrowRight', 'Escape', 'V'). */
  press(key: string): Promise<void>;
  /** Reloads the page (same URL, hash included) and waits for it to be ready. */
  reload(): Promise<void>;
  /** Clicks `selector`, waits for the download it starts, returns the downloaded file's text. */
  download(selector: string): Promise<string>;
  /** Types `text` into the input `selector` (replacing its value) and commits it (change event). */
  fill(selector: string, text: string): Promise<void>;
  /** Gives the file input `selector` a file with this name and text. */
  upload(selector: string, name: string, text: string): Promise<void>;
}

interface ShownRow { id: string; rank: number; suspicion: number; split: string; tags: string[]; src: string; stage: string; loaded: boolean; href: string }

const SHOWN = `Array.from(document.querySelectorAll('#images tbody tr[data-id]')).map(function (tr) {
  var img = tr.querySelector('td.thumb img');
  return { id: tr.getAttribute('data-id'), rank: Number(tr.querySelector('td.rank').textContent), suspicion: parseFloat(tr.querySelector('td.suspicion').textContent),
    split: tr.querySelector('td.split').textContent, tags: Array.from(tr.querySelectorAll('td.tags .chip')).map(function (c) { return c.getAttribute('data-class'); }),
    src: img.getAttribute('src'), stage: img.getAttribute('data-stage'), loaded: img.complete && img.naturalWidth > 0, href: tr.querySelector('td.thumb a').href };
})`;

const shown = (page: ReportPage) => page.evaluate<ShownRow[]>(SHOWN);
const text = (page: ReportPage, sel: string) => page.evaluate<string>(`document.querySelector(${JSON.stringify(sel)}).textContent`);
/** Waits until every thumbnail has finished loading (or failed). */
const imagesSettled = (page: ReportPage) => page.evaluate<boolean>(`new Promise(function (ok) {
  var t0 = Date.now();
  (function poll() {
    var imgs = Array.from(document.querySelectorAll('#images img'));
    if (imgs.every(function (i) { return i.complete; }) || Date.now() - t0 > 5000) ok(true); else setTimeout(poll, 50);
  })();
})`);

/** The report of test/stages/audit_fixtures.ts (4 images; 'bad' is the bad one; good-3 has no ground truth). */
export async function fixtureScenario(page: ReportPage, url: string): Promise<void> {
  await page.goto(url);
  expect(await page.evaluate<boolean>('window.auditReady === true')).toBe(true);
  // Default view: most suspicious first, pseudo-masks shown, every thumbnail loads from file://.
  let rows = await shown(page);
  expect(rows.map((r) => r.id)).toEqual(['bad', 'good-3', 'good-2', 'good-1']);
  await imagesSettled(page);
  rows = await shown(page);
  expect(rows.every((r) => r.stage === 'final' && r.src.includes('/final/') && r.loaded)).toBe(true);
  expect(rows[0].href).toMatch(/img\/full\/\d{6}_bad\.jpg$/);

  // Sort by suspicion: clicking the sorted column flips it to ascending, again back to descending.
  await page.click('th[data-sort="suspicion"]');
  rows = await shown(page);
  expect(rows.map((r) => r.suspicion)).toEqual([...rows.map((r) => r.suspicion)].sort((a, b) => a - b));
  expect(rows.at(-1)?.id).toBe('bad');
  expect(await page.evaluate<string>(`document.querySelector('th[data-sort="suspicion"]').className`)).toBe('sorted-asc');
  await page.click('th[data-sort="suspicion"]');
  rows = await shown(page);
  expect(rows[0]).toMatchObject({ id: 'bad', rank: 1 });
  expect(rows.map((r) => r.suspicion)).toEqual([...rows.map((r) => r.suspicion)].sort((a, b) => b - a));

  // Filter a class: only images tagged with (or masked as) dog.
  await page.selectLabel('#class-filter', 'dog');
  rows = await shown(page);
  expect(rows.map((r) => r.id)).toEqual(['bad', 'good-2']);
  expect(rows.every((r) => r.tags.includes('dog'))).toBe(true);
  expect(await text(page, '#row-count')).toBe('2 of 4 images');

  // Toggle a stage: the thumbnails switch to the CAM overlays, and they load.
  await page.click('input[name="stage"][value="cam"]');
  await imagesSettled(page);
  rows = await shown(page);
  expect(rows.every((r) => r.stage === 'cam' && r.src.includes('/cam/') && r.loaded)).toBe(true);
  // The view is in the URL, so a reload (or a shared link) shows the same.
  expect(await page.evaluate<string>('location.hash')).toContain('stage=cam');

  // Ground truth: shown where it exists; the image without it falls back to the pseudo-mask.
  await page.selectLabel('#class-filter', 'all classes');
  await page.click('input[name="stage"][value="gt"]');
  rows = await shown(page);
  expect(Object.fromEntries(rows.map((r) => [r.id, r.stage]))).toEqual({ bad: 'gt', 'good-1': 'gt', 'good-2': 'gt', 'good-3': 'final' });

  // Split filter.
  await page.selectLabel('#split-filter', 'val');
  rows = await shown(page);
  expect(rows.map((r) => r.id)).toEqual(['good-3']);

  // The class table and charts are there.
  expect(await page.evaluate<number>(`document.querySelectorAll('#class-table tbody tr').length`)).toBe(3);
  expect(await page.evaluate<number>(`document.querySelectorAll('#class-charts svg').length`)).toBe(4);
  expect(page.errors()).toEqual([]);
}

/** A report with `n` images (data.js made large by the caller): one page in the DOM, paging works, fast. */
export async function largeScenario(page: ReportPage, url: string, n: number): Promise<{ loadMs: number; filterMs: number }> {
  const t0 = Date.now();
  await page.goto(url);
  expect(await page.evaluate<boolean>('window.auditReady === true')).toBe(true);
  const loadMs = Date.now() - t0;
  expect(await page.evaluate<number>(`document.querySelectorAll('#images tbody tr').length`)).toBe(50);
  expect(await text(page, '#row-count')).toBe(`${n} of ${n} images`);
  expect(await text(page, '#page-info')).toBe(`page 1 of ${Math.ceil(n / 50)}`);
  const first = await shown(page);
  await page.click('#next');
  const second = await shown(page);
  expect(await text(page, '#page-info')).toBe(`page 2 of ${Math.ceil(n / 50)}`);
  expect(second[0].rank).toBe(first.at(-1)!.rank + 1);
  const t1 = Date.now();
  await page.selectLabel('#class-filter', 'cat');
  const filterMs = Date.now() - t1;
  expect((await shown(page)).every((r) => r.tags.includes('cat'))).toBe(true);
  expect(await text(page, '#page-info')).toMatch(/^page 1 of /);
  expect(page.errors()).toEqual([]);
  return { loadMs, filterMs };
}

/** data.js with the fixture's rows repeated to `n` rows (distinct ids, ranks and decreasing suspicion). */
export function enlargeData(dataJs: string, n: number): string {
  const prefix = 'window.AUDIT = ';
  const A = JSON.parse(dataJs.slice(prefix.length).trim().replace(/;$/, '')) as { images: unknown[][]; imageFields: string[] };
  const idI = A.imageFields.indexOf('id');
  const rankI = A.imageFields.indexOf('rank');
  const susI = A.imageFields.indexOf('suspicion');
  const base = A.images;
  A.images = Array.from({ length: n }, (_, i) => {
    const r = [...base[i % base.length]];
    r[idI] = `${String(r[idI])}-${i}`;
    r[rankI] = i + 1;
    r[susI] = 1 - i / n;
    return r;
  });
  return `${prefix}${JSON.stringify(A)};\n`;
}

interface Detail { id: string; panel: string; panels: string[]; loaded: boolean[]; classes: string[]; classSuspicion: number[]; badges: string; legend: string[]; hash: string; listHidden: boolean }

const DETAIL = `(function () {
  var d = document.getElementById('detail');
  if (d.hidden) return null;
  var main = document.getElementById('detail-main');
  return { id: d.querySelector('h2 span').textContent, panel: main.getAttribute('data-panel'),
    panels: Array.from(d.querySelectorAll('.panels figure')).map(function (f) { return f.getAttribute('data-panel'); }),
    loaded: Array.from(d.querySelectorAll('.panels img')).concat([main]).map(function (i) { return i.complete && i.naturalWidth > 0; }),
    classes: Array.from(d.querySelectorAll('#detail-classes tbody tr')).map(function (tr) { return tr.getAttribute('data-class'); }),
    classSuspicion: Array.from(d.querySelectorAll('#detail-classes td.class-suspicion')).map(function (td) { return parseFloat(td.textContent); }),
    badges: document.getElementById('detail-decision').textContent,
    legend: Array.from(d.querySelectorAll('#detail-legend .chip')).map(function (c) { return c.textContent; }),
    hash: location.hash, listHidden: document.getElementById('review').hidden };
})()`;

const detail = (page: ReportPage) => page.evaluate<Detail | null>(DETAIL);
const detailImagesSettled = (page: ReportPage) => page.evaluate<boolean>(`new Promise(function (ok) {
  var t0 = Date.now();
  (function poll() {
    var imgs = Array.from(document.querySelectorAll('#detail img'));
    imgs.forEach(function (i) { i.loading = 'eager'; });
    if (imgs.every(function (i) { return i.complete; }) || Date.now() - t0 > 5000) ok(true); else setTimeout(poll, 50);
  })();
})`);

/**
 * The detail view of the fixture report: open it from a row, every stage side by side (photo, the
 * CAM heatmap of each tag, random walk, RCA, pseudo-mask, ground truth), the class rows, keyboard
 * navigation and marking, state kept in the URL and across a reload, the list ranking by a
 * class's suspicion, and the downloaded decisions.csv.
 */
export async function detailScenario(page: ReportPage, url: string): Promise<void> {
  await page.goto(url);
  await page.click('#images tbody tr[data-id="bad"] td.id');
  let d = (await detail(page))!;
  expect(d).toMatchObject({ id: 'bad', panel: 'final', listHidden: true });
  expect(d.panels).toEqual(['photo', 'heat-2', 'cam', 'random_walk', 'rca', 'final', 'gt']);
  await detailImagesSettled(page);
  d = (await detail(page))!;
  expect(d.loaded.every(Boolean)).toBe(true);
  // class rows: background, the wrongly present cat, the lost dog (most suspicious), legend with ignore
  expect(d.classes).toEqual(['background', 'cat', 'dog']);
  expect(d.classSuspicion[2]).toBe(Math.max(...d.classSuspicion));
  expect(d.legend).toEqual(['background', 'dog', 'cat', 'ignore (hatched grey)']); // tags first (dog lost), then the untagged cat
  expect(d.hash).toContain('view=bad');

  // keyboard: next / previous follow the list order (bad, good-3, good-2, good-1)
  await page.press('j');
  expect((await detail(page))!.id).toBe('good-3');
  await page.press('k');
  expect((await detail(page))!.id).toBe('bad');
  await page.press('ArrowRight');
  d = (await detail(page))!;
  expect(d.id).toBe('good-3');
  expect(d.panels).not.toContain('gt'); // no ground truth for good-3
  // cycle the view: after the pseudo-mask comes (wrapping) the photo; V goes back
  await page.press('v');
  d = (await detail(page))!;
  expect(d.panel).toBe('photo');
  expect(d.hash).toContain('panel=photo');
  await page.press('V');
  expect((await detail(page))!.panel).toBe('final');

  // mark: accept good-3, reject bad, and flag bad's dog for relabelling (per class)
  await page.press('a');
  expect((await detail(page))!.badges).toBe('accept');
  await page.press('ArrowLeft');
  await page.press('r');
  await page.fill('#detail-note', 'cat, not "dog"');
  await page.click('#detail-classes tr[data-class="dog"] button[data-class-decide="relabel"]');
  expect((await detail(page))!.badges).toBe('reject relabel: dog');

  // the URL and the browser keep the state: a reload shows the same image with its marks
  await page.reload();
  d = (await detail(page))!;
  expect(d).toMatchObject({ id: 'bad', panel: 'final', badges: 'reject relabel: dog' });

  // back to the list: decisions shown; a class filter ranks by that class's suspicion
  await page.press('Escape');
  expect(await detail(page)).toBeNull();
  expect(await page.evaluate<string[]>(`Array.from(document.querySelectorAll('#images tbody tr[data-id]')).map(function (tr) { return tr.getAttribute('data-id') + ':' + tr.querySelector('td.decision').textContent; })`))
    .toEqual(['bad:reject relabel: dog', 'good-3:accept', 'good-2:', 'good-1:']);
  await page.selectLabel('#class-filter', 'cat');
  const cat = await shown(page);
  expect(cat[0].id).toBe('bad'); // its cat is wrong: the most suspicious cat, though good-3's image score is close
  expect(cat.map((r) => r.suspicion)).toEqual([...cat.map((r) => r.suspicion)].sort((a, b) => b - a));
  // the numbers shown are the cat rows' suspicion from cache/audit.arrow, not the images' scores
  const catRows = await page.evaluate<[string, number, number][]>(`(function () {
    var A = window.AUDIT, F = {}, CF = {};
    A.imageFields.forEach(function (n, i) { F[n] = i; });
    A.classRowFields.forEach(function (n, i) { CF[n] = i; });
    var cat = A.classes.findIndex(function (c) { return c.name === 'cat'; });
    return A.images.map(function (r) {
      var c = r[F.crows].filter(function (x) { return x[CF['class']] === cat; })[0];
      return c ? [r[F.id], c[CF.suspicion], r[F.suspicion]] : null;
    }).filter(Boolean).sort(function (a, b) { return b[1] - a[1]; });
  })()`);
  expect(cat.map((r) => r.id)).toEqual(catRows.map((r) => r[0]));
  expect(cat.map((r) => r.suspicion)).toEqual(catRows.map((r) => Number(r[1].toFixed(3))));
  expect(catRows.some((r) => Math.abs(r[1] - r[2]) > 0.01)).toBe(true); // class and image scores differ here
  expect(await page.evaluate<string>(`document.querySelector('#images tbody td.suspicion').textContent`)).toContain('(cat)');

  // export: the downloaded file is review/decisions.csv's format, which the CLI reads back
  const csv = await page.download('#download-decisions');
  expect(csv).toBe('id,decision,class,note\nbad,reject,,"cat, not ""dog"""\nbad,relabel,dog,\ngood-3,accept,,\n');
  expect(parseDecisions(csv, 'decisions.csv').map((r) => [r.id, r.decision, r.class, r.note])).toEqual([['bad', 'reject', '', 'cat, not "dog"'], ['bad', 'relabel', 'dog', ''], ['good-3', 'accept', '', '']]);
  expect(await page.evaluate<string>(`document.getElementById('decision-count').textContent`)).toBe('3 decisions marked');

  // load a decisions.csv (e.g. the project's review/decisions.csv) to continue from it: its rows win
  await page.upload('#load-decisions', 'decisions.csv', 'id,decision,class,note\r\ngood-1,reject,,"blurry, ""dark"""\r\nbad,accept,,\r\n');
  expect(await page.evaluate<string>(`document.getElementById('decision-count').textContent`)).toBe('4 decisions marked');
  expect(await page.download('#download-decisions')).toBe('id,decision,class,note\nbad,accept,,\nbad,relabel,dog,\ngood-1,reject,,"blurry, ""dark"""\ngood-3,accept,,\n');
  expect(page.errors()).toEqual([]);
}
