/**
 * The audit report in a real browser: headless Chromium from Debian (`apt-get install chromium`,
 * /usr/bin/chromium; never a downloaded browser) driven by playwright-core. Opens
 * reports/audit/index.html of the hand-made audit (test/stages/audit_fixtures.ts) from the file
 * system, sorts by suspicion, filters a class and a split, toggles the stage, checks what is shown
 * (audit_scenario.ts), then pages through a 20,000-row copy of the data.
 *
 * Skipped, with the reason printed, when /usr/bin/chromium or playwright-core is missing (a failure
 * under CI=true)
 * (CHROMIUM_PATH overrides the browser path).
 */
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setQuiet } from '../../pipeline/log.js';
import { defaultParams } from '../../stages/params.js';
import { runAudit, writeAuditFixture } from '../stages/audit_fixtures.js';
import { skipWithout } from '../helpers/ci.js';
import { type ReportPage, detailScenario, enlargeData, fixtureScenario, largeScenario } from './audit_scenario.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** The part of playwright-core's API used here (typed locally: the package is an optional devDependency). */
interface PwPage {
  goto(url: string): Promise<unknown>;
  evaluate<T>(expression: string): Promise<T>;
  click(selector: string): Promise<void>;
  selectOption(selector: string, value: { label: string }): Promise<string[]>;
  on(event: 'pageerror', fn: (err: Error) => void): void;
  waitForFunction(expression: string): Promise<unknown>;
  reload(): Promise<unknown>;
  keyboard: { press(key: string): Promise<void> };
  waitForEvent(event: 'download'): Promise<{ path(): Promise<string | null> }>;
  fill(selector: string, value: string): Promise<void>;
  dispatchEvent(selector: string, type: string): Promise<void>;
  setInputFiles(selector: string, files: { name: string; mimeType: string; buffer: Buffer }): Promise<void>;
  close(): Promise<void>;
}
interface PwBrowser { newPage(): Promise<PwPage>; close(): Promise<void> }
interface Playwright { chromium: { launch(o: { executablePath: string; headless: boolean; args?: string[] }): Promise<PwBrowser> } }

async function loadPlaywright(): Promise<Playwright | string> {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} not found (install Debian's chromium: apt-get install -y chromium)`;
  const name = 'playwright-core'; // a variable: typecheck must pass where the package is not installed
  try {
    return (await import(name)) as Playwright;
  } catch {
    return 'playwright-core is not installed (npm install --save-dev playwright-core)';
  }
}

const pw = await loadPlaywright();
const skip = skipWithout('audit report browser', typeof pw === 'string' ? pw : undefined);

describe.skipIf(skip)('audit report in Chromium', () => {
  let root: string;
  let browser: PwBrowser;

  beforeAll(async () => {
    setQuiet(true);
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-audit-browser-'));
    await writeAuditFixture(root);
    await runAudit({ params: defaultParams(), path: (rel) => path.resolve(root, rel) });
    browser = await (pw as Playwright).chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--disable-gpu', '--allow-file-access-from-files'] });
  });
  afterAll(async () => {
    await browser?.close();
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  async function open(): Promise<ReportPage & { close(): Promise<void> }> {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    return {
      async goto(url) {
        await page.goto(url);
        await page.waitForFunction('window.auditReady === true');
      },
      evaluate: (expression) => page.evaluate(expression),
      click: (selector) => page.click(selector),
      async selectLabel(selector, label) {
        await page.selectOption(selector, { label });
      },
      errors: () => errors,
      press: (key) => page.keyboard.press(key),
      async reload() {
        await page.reload();
        await page.waitForFunction('window.auditReady === true');
      },
      async download(selector) {
        const [dl] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
        const file = await dl.path();
        if (!file) throw new Error('the download failed');
        return fs.readFile(file, 'utf8');
      },
      async fill(selector, text) {
        await page.fill(selector, text);
        await page.dispatchEvent(selector, 'change');
      },
      async upload(selector, name, text) {
        const loads = `Number(document.getElementById('decision-count').getAttribute('data-loads') || 0)`;
        const before = await page.evaluate<number>(loads);
        await page.setInputFiles(selector, { name, mimeType: 'text/csv', buffer: Buffer.from(text) });
        // FileReader is asynchronous: wait until the page has taken the file in
        await page.waitForFunction(`${loads} > ${before}`);
      },
      close: () => page.close(),
    };
  }

  it('opens from file://, sorts by suspicion, filters class and split, toggles the stage', async () => {
    const page = await open();
    try {
      await fixtureScenario(page, pathToFileURL(path.join(root, 'reports/audit/index.html')).href);
    } finally {
      await page.close();
    }
  });

  it('detail view: every stage side by side, keyboard navigation and marking, state in the URL, decisions.csv download', async () => {
    const page = await open();
    try {
      await detailScenario(page, pathToFileURL(path.join(root, 'reports/audit/index.html')).href);
    } finally {
      await page.close();
    }
  });

  it('stays fast with 20,000 images: one page of rows in the DOM, paging and filtering work', async () => {
    const dir = path.join(root, 'reports/audit');
    const big = path.join(root, 'big');
    await fs.mkdir(big);
    await fs.copyFile(path.join(dir, 'index.html'), path.join(big, 'index.html'));
    await fs.writeFile(path.join(big, 'data.js'), enlargeData(await fs.readFile(path.join(dir, 'data.js'), 'utf8'), 20000));
    const page = await open();
    try {
      const t = await largeScenario(page, pathToFileURL(path.join(big, 'index.html')).href, 20000);
      process.stdout.write(`audit report with 20000 images: loaded in ${t.loadMs} ms, class filter in ${t.filterMs} ms\n`);
      expect(t.loadMs).toBeLessThan(10000);
      expect(t.filterMs).toBeLessThan(2000);
    } finally {
      await page.close();
    }
  });
});
