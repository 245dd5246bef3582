/**
 * The `tagseg` command line. Every verb is a thin layer over a module function, so tests call
 * the functions and DVC calls these commands; both run the same code.
 */
import * as path from 'node:path';
import { Argument, Command, InvalidArgumentError, Option } from 'commander';
import { TagsegError, formatError } from '../pipeline/errors.js';
import { setQuiet } from '../pipeline/log.js';
import { tagsegVersion } from './version.js';

const program = new Command();

/** Parse an integer option with a readable error. */
function int(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be an integer, got '${v}'`);
    return n;
  };
}
function collect(v: string, acc: string[]): string[] {
  return [...acc, v];
}
function print(json: boolean, summary: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(summary, null, 2)}\n` : `${human()}\n`);
}
const rootOf = (): string => path.resolve(program.opts<{ root: string }>().root);

program
  .name('tagseg')
  .version(tagsegVersion())
  .description(
    'Image-level tags -> pixel pseudo-masks -> a trained segmentation network.\n' +
      'A DVC pipeline: ingest -> cam_train -> cam -> affinity_train -> affinity -> contrast_train -> contrast -> refine -> segment (see dvc.yaml).\n' +
      'Every stage reads and writes Arrow tables under cache/, so any stage can be rerun alone.',
  )
  .option('--root <dir>', 'project directory holding params.yaml and dvc.yaml', '.')
  .option('-q, --quiet', 'no progress output')
  .option('--debug', 'print the stack trace of any error')
  .hook('preAction', async (cmd, action) => {
    setQuiet(Boolean(cmd.opts().quiet));
    // Finish or undo the commit of a stage a kill interrupted before anything reads the outputs.
    if (['repro', 'status', 'import'].includes(action.name())) {
      const { recoverCommits } = await import('../pipeline/commit.js');
      await recoverCommits(rootOf());
    }
  })
  .showHelpAfterError('(run with --help for usage)')
  .addHelpText(
    'after',
    `
Typical use:
  tagseg doctor                 check the TensorFlow backend and machine
  tagseg repro                  run the whole pipeline (dvc repro in a DVC project with dvc installed)
  tagseg status                 which stages are stale, and why
  tagseg run cam_train --set cam.epochs=3
                                run one stage now with a param override (not recorded)
  tagseg import ../shared/datasets/msrc-v2 --size 320 --out /tmp/msrc
                                import a dataset into Arrow tables without the pipeline`,
  );

program
  .command('doctor')
  .description('report the TensorFlow backend, TF version, threads, a conv/matmul throughput probe, sharp and dvc')
  .option('--json', 'print JSON')
  .action(async (o: { json?: boolean }) => {
    const { doctor, formatDoctor } = await import('./doctor.js');
    const r = await doctor();
    print(Boolean(o.json), r, () => formatDoctor(r));
  });

program
  .command('synth')
  .description('generate the synthetic dataset (textured shapes with exact masks, VOC layout), seeded and deterministic')
  .option('--from-params', 'take every setting from params.yaml `synth` and `seed` (what dvc.yaml runs)')
  .option('--out <dir>', 'output folder')
  .option('--images <n>', 'number of images', int('--images'))
  .option('--size <px>', 'image side in pixels', int('--size'))
  .option('--classes <k>', 'number of object classes (plus background)', int('--classes'))
  .option('--val-fraction <f>', 'fraction of images in the val split', parseFloat)
  .option('--seed <n>', 'random seed', int('--seed'))
  .option('--set <key=value>', 'params.yaml override (repeatable)', collect, [])
  .option('--json', 'print a JSON summary')
  .action(async (o: Record<string, unknown>) => {
    // The shared sections only (seed, synth), as a stage run: the synth stage's code deps hold no stage's params.
    const { readParams, stageSpec } = await import('../pipeline/params_core.js');
    const { generateSynthetic } = await import('../data/synth.js');
    const p = (await readParams(stageSpec(), path.join(rootOf(), 'params.yaml'), o.set as string[])) as import('../stages/params.js').Params;
    const opts = {
      out: path.resolve(rootOf(), (o.out as string) ?? p.synth.out),
      images: (o.images as number) ?? p.synth.images,
      size: (o.size as number) ?? p.synth.size,
      classes: (o.classes as number) ?? p.synth.classes,
      valFraction: (o.valFraction as number) ?? p.synth.val_fraction,
      seed: (o.seed as number) ?? p.seed,
    };
    const t0 = performance.now();
    const r = await generateSynthetic(opts);
    const summary = { ...r, seconds: (performance.now() - t0) / 1000 };
    print(Boolean(o.json), summary, () => `wrote ${opts.images} images (${r.classes.length} classes) to ${opts.out} in ${summary.seconds.toFixed(1)} s`);
  });

program
  .command('import')
  .description('import a dataset into Arrow tables: <out>/dataset.arrow (manifest) and <out>/images.arrow (pixels at the working size)')
  .argument('<dataset>', 'a VOC-layout folder (JPEGImages/, ImageSets/Segmentation/, optional SegmentationClass/, tags.csv or Annotations/) or a folder of images with a CSV')
  .addOption(new Option('--format <f>', 'dataset layout').choices(['voc', 'csv']).default('voc'))
  .option('--csv <file>', 'csv format: image_id,tags[,split] file, relative to the dataset folder', 'tags.csv')
  .option('--splits <list>', 'comma-separated VOC splits to import (default: all but trainval)')
  .option('--classes <file>', "classes.json that fixes the class indices (default: the dataset's; csv without one: derived and written to <out>/classes.json)")
  .option('--size <px>', 'long side of the working size (0 = original)', int('--size'), 320)
  .option('--concurrency <n>', 'images decoded at once', int('--concurrency'), 4)
  .addOption(new Option('--on-error <mode>', 'fail on the first bad item, or skip bad items and report them').choices(['fail', 'skip']).default('fail'))
  .option('--out <dir>', 'output folder for the tables', 'cache')
  .option('--json', 'print a JSON summary')
  .action(async (dataset: string, o: Record<string, unknown>) => {
    const { ingestDataset, formatIngest } = await import('../stages/ingest/ingest.js');
    const { withStageCommit } = await import('../pipeline/commit.js');
    const out = path.resolve(rootOf(), o.out as string);
    const tables = [path.join(out, 'dataset.arrow'), path.join(out, 'images.arrow')];
    // Both tables are committed together, as the ingest stage's are (commit.ts).
    const r = await withStageCommit(rootOf(), 'import', tables, () => ingestDataset({
      root: path.resolve(rootOf(), dataset),
      format: o.format as 'voc' | 'csv',
      csv: o.csv as string,
      splits: o.splits ? (o.splits as string).split(',').map((s) => s.trim()).filter(Boolean) : [],
      size: o.size as number,
      concurrency: o.concurrency as number,
      onError: o.onError as 'fail' | 'skip',
      classesFile: o.classes ? path.resolve(rootOf(), o.classes as string) : undefined,
      datasetTable: path.join(out, 'dataset.arrow'),
      imagesTable: path.join(out, 'images.arrow'),
      paramsHash: 'cli-import',
    }));
    print(Boolean(o.json), r, () => formatIngest(r));
  });

program
  .command('run')
  .description('run stages now, in the order given, without checking whether they are up to date (dvc.yaml cmds call this)')
  .argument('<stage...>', 'stage names (see `tagseg status`)')
  .option('--set <key=value>', 'params.yaml override for this run only, e.g. --set cam.epochs=3 (repeatable)', collect, [])
  .option('--shard <k/N>', 'run only shard k of N of a sharded stage (cam, affinity, contrast, refine, audit; N must equal its <stage>.shards param)')
  .option('--json', 'print JSON summaries')
  .action(async (names: string[], o: { set: string[]; shard?: string; json?: boolean }) => {
    const { runStages } = await import('../stages/index.js');
    const { parseShard } = await import('../pipeline/shard.js');
    const results = await runStages(rootOf(), names, o.set, Boolean(o.json), o.shard === undefined ? undefined : parseShard(o.shard));
    if (o.json) print(true, results, () => '');
  });

program
  .command('repro')
  .description('bring the pipeline up to date: `dvc repro` in a DVC project (.dvc/) with dvc on PATH, else run dvc.yaml stages in order, skipping unchanged ones')
  .argument('[stage]', 'reproduce this stage and what it depends on (default: every stage)')
  .option('-f, --force', 'rerun even when up to date')
  .option('-s, --single', 'only this stage, not its upstream (like dvc repro -s)')
  .option('--dry-run', 'print what would run and why; runs and writes nothing (--set applies in memory)')
  .option('--no-dvc', "use tagseg's own runner even in a DVC project with dvc installed")
  .option('--set <key=value>', 'edit params.yaml before running, like `dvc exp run -S` (repeatable)', collect, [])
  .action(async (stage: string | undefined, o: { force?: boolean; single?: boolean; dryRun?: boolean; dvc: boolean; set: string[] }) => {
    const { reproCommand } = await import('./runner.js');
    const code = await reproCommand(rootOf(), stage, o);
    process.exitCode = code;
  });

program
  .command('status')
  .description('which stages are stale and why, against dvc.lock (`dvc status` in a DVC project with dvc on PATH)')
  .option('--json', 'print JSON')
  .option('--no-dvc', "use tagseg's own check even when dvc could run")
  .action(async (o: { json?: boolean; dvc: boolean }) => {
    const { statusCommand } = await import('./runner.js');
    const r = await statusCommand(rootOf(), o);
    if ('exitCode' in r) process.exitCode = r.exitCode;
    else print(Boolean(o.json), r.stages, () => r.text);
  });

program
  .command('params')
  .description('print the validated params (params.yaml + --set), or --fill: add the sections and keys a newer tagseg needs, with their defaults')
  .option('--fill', 'append every missing top-level section of params.yaml (default values and comments) and add every missing key of a present section (its default value)')
  .option('--defaults', "print the default params.yaml generated from the stages' params.ts declarations (the repo's params.yaml is this text)")
  .option('--set <key=value>', 'override to apply before printing (repeatable)', collect, [])
  .action(async (o: { fill?: boolean; defaults?: boolean; set: string[] }) => {
    const file = path.join(rootOf(), 'params.yaml');
    if (o.defaults) {
      process.stdout.write((await import('../stages/params.js')).DEFAULT_PARAMS_YAML);
      return;
    }
    if (o.fill) {
      const { fillMissingSections } = await import('./params_fill.js');
      const added = await fillMissingSections(file);
      process.stdout.write(added.length ? `added to ${file}: ${added.join(', ')}\n` : `${file} already has every section\n`);
      return;
    }
    const { loadParams } = await import('../stages/params.js');
    process.stdout.write(`${JSON.stringify(await loadParams(file, o.set), null, 2)}\n`);
  });

program
  .command('workspace')
  .description('create a project directory for another dataset or experiment: own params.yaml, dvc.yaml, cache/; code linked to this repo')
  .argument('<dir>', 'new directory, e.g. runs/msrc')
  .option('--preset <name|file>', 'start params.yaml from a preset: a name in presets/ (photos: real photos, pretrained MobileNet; msrc-v2: photos + its class priors) or a YAML file')
  .option('--set <key=value>', 'params.yaml override, wins over the preset (repeatable), e.g. --set dataset.root=/data/my-photos', collect, [])
  .action(async (dir: string, o: { set: string[]; preset?: string }) => {
    const { createWorkspace } = await import('./workspace.js');
    const made = await createWorkspace(path.resolve(rootOf(), dir), o.set, o.preset);
    process.stdout.write(`workspace ready: ${made}\n  cd ${path.relative(process.cwd(), made) || '.'} && node bin/tagseg.js repro\n`);
  });

program
  .command('dvc-deps')
  .description("check dvc.yaml's deps against each stage's import closure and data reads (cli/code_deps.ts); --write rewrites them")
  .option('--write', 'rewrite the deps lists of dvc.yaml (code deps first, data deps kept)')
  .action(async (o: { write?: boolean }) => {
    const { dvcDepsCommand } = await import('./code_deps.js');
    const r = await dvcDepsCommand(rootOf(), Boolean(o.write));
    process.stdout.write(`${r.text}\n`);
    if (r.diffs.length > 0) process.exitCode = 1;
  });

/** Parse a comma-separated list of positive numbers (inference scales). */
function scaleList(v: string): number[] {
  const xs = v.split(',').map((x) => Number(x.trim()));
  if (xs.length === 0 || xs.some((x) => !(x > 0))) throw new InvalidArgumentError(`--scales must be positive numbers separated by commas, got '${v}'`);
  return xs;
}

program
  .command('predict')
  .description('segment a folder of images with a trained model: one palette PNG mask per image (VOC colours, the dataset\'s class indices, original image size)')
  .requiredOption('--model <dir>', 'model folder written by the segment stage (models/segment: config.json + weights/)')
  .requiredOption('--images <dir>', 'folder of images, any format sharp reads (.jpg .jpeg .png .webp .tif .tiff .gif .avif ..., any case); its top level only: subfolders are not read, they are listed as skipped')
  .option('--ids <file>', 'only the ids listed in this file (one per line, e.g. ImageSets/Segmentation/test.txt)')
  .addOption(new Option('--on-error <mode>', 'a missing, ambiguous (a.jpg + a.png) or undecodable image: fail (stop, naming it) or skip (list it with the reason and go on)').choices(['fail', 'skip']).default('fail'))
  .requiredOption('--out <dir>', 'output folder for <id>.png')
  .option('--tags <file>', "the importer's image_id,tags CSV: each image's prediction restricted to its tagged classes (+ background); an image without a row is an error (or skipped with --on-error skip)")
  .option('--overlay <dir>', 'also write <dir>/<id>.png: the photo with the predicted classes blended in the class palette, and a legend (another folder than --out)')
  .option('--scales <list>', "inference scales, e.g. 0.75,1,1.25 (default: the model's segment.scales)", scaleList)
  .option('--no-flip', 'do not add the mirrored image at each scale')
  .option('--flip', "add the mirrored image at each scale (default: the model's segment.flip)")
  .option('--no-crf', "skip the dense CRF on the probabilities (default: the model's segment.crf)")
  .option('--crf', "apply the dense CRF: the model's segment.crf, or params.yaml's default kernel for a model trained without one")
  .option('--batch-size <n>', 'images per network batch (images of one size)', int('--batch-size'), 4)
  .option('--threads <n>', 'CRF worker threads, each image\'s CRF on one while the next images are decoded and run through the network (default: every core; 1 = the main thread)', int('--threads'))
  .option('--shard <k/N>', 'only the images of shard k of N (a hash of the id); N processes with k = 0..N-1 may share --out')
  .option('--json', 'print a JSON summary')
  .addHelpText(
    'after',
    `
Example: masks for MSRC-v2's test images, then their scores where masks exist
  tagseg predict --model models/segment --images ../shared/datasets/msrc-v2/JPEGImages \\
    --ids ../shared/datasets/msrc-v2/ImageSets/Segmentation/test.txt --out outputs/test_masks
  tagseg eval --pred outputs/test_masks --gt path/to/SegmentationClass --classes models/segment/classes.json`,
  )
  .action(async (o: { model: string; images: string; ids?: string; out: string; overlay?: string; tags?: string; scales?: number[]; flip?: boolean; crf?: boolean; batchSize: number; threads?: number; onError: 'fail' | 'skip'; shard?: string; json?: boolean }, cmd: Command) => {
    const { predictFolder } = await import('../stages/segment/predict.js');
    const { readIdsFile } = await import('../eval/segeval.js');
    const flipSet = cmd.getOptionValueSource('flip') === 'cli';
    const crfSet = cmd.getOptionValueSource('crf') === 'cli';
    const r = await predictFolder({
      model: path.resolve(o.model), images: path.resolve(o.images), out: path.resolve(o.out), overlay: o.overlay ? path.resolve(o.overlay) : undefined,
      ids: o.ids ? await readIdsFile(path.resolve(o.ids)) : undefined, idsFile: o.ids ? path.resolve(o.ids) : undefined,
      scales: o.scales, flip: flipSet ? Boolean(o.flip) : undefined, crf: crfSet ? Boolean(o.crf) : undefined, batchSize: o.batchSize, threads: o.threads,
      onError: o.onError, tags: o.tags ? path.resolve(o.tags) : undefined,
      shard: o.shard === undefined ? undefined : (await import('../pipeline/shard.js')).parseShard(o.shard),
    });
    const skippedLines = r.skipped.map((s) => `\n  skipped ${path.relative(process.cwd(), s.file) || s.file}: ${s.reason}`).join('');
    print(Boolean(o.json), r, () => `wrote ${r.images} masks to ${r.out} (scales ${r.scales.join(', ')}${r.flip ? ' + flip' : ''}${r.crf ? ' + CRF' : ''}) in ${r.seconds.toFixed(1)} s, ${r.imagesPerSecond.toFixed(2)} images/s (${r.threads} CRF thread${r.threads === 1 ? '' : 's'}); ${r.skipped.length} skipped${skippedLines}`);
  });

program
  .command('eval')
  .description('score predicted masks against ground-truth masks (<id>.png in both folders): per-class IoU, mIoU, pixel accuracy, confusion matrix; void pixels ignored')
  .requiredOption('--pred <dir>', 'predicted masks (palette or 8-bit grey PNGs, pixel value = class index)')
  .requiredOption('--gt <dir>', 'ground-truth masks, same file names (e.g. the dataset\'s SegmentationClass/)')
  .requiredOption('--classes <file>', 'classes.json: {"classes": [...], "background": 0 | null, "void": 255} (models/segment/classes.json, or the dataset\'s)')
  .option('--ids <file>', 'score only these ids (default: every PNG in --pred; each needs a ground-truth mask)')
  .option('--out <file>', 'write the JSON report here (default: <pred>/eval.json)')
  .option('--json', 'print the JSON report instead of the table')
  .action(async (o: { pred: string; gt: string; classes: string; ids?: string; out?: string; json?: boolean }) => {
    const { evaluateFolders, formatFolderEval, readIdsFile } = await import('../eval/segeval.js');
    const { writeFileAtomic } = await import('../pipeline/fsutil.js');
    const r = await evaluateFolders({
      pred: path.resolve(o.pred), gt: path.resolve(o.gt), classes: path.resolve(o.classes),
      ids: o.ids ? await readIdsFile(path.resolve(o.ids)) : undefined,
    });
    const out = path.resolve(o.out ?? path.join(o.pred, 'eval.json'));
    await writeFileAtomic(out, `${JSON.stringify(r, null, 1)}\n`);
    print(Boolean(o.json), r, () => `${formatFolderEval(r)}\nreport: ${out}`);
  });

program
  .command('audit')
  .description('audit the pseudo-masks (the `audit` and `audit_report` stages, run now): per-image and per-class measures, a suspicion ranking, reports/audit/index.html')
  .option('--set <key=value>', 'params.yaml override for this run only, e.g. --set audit.weights.ignore=2 (repeatable)', collect, [])
  .option('--json', 'print the summary as JSON (metrics/audit.json + report path and timings)')
  .addHelpText(
    'after',
    `
Reads every earlier stage's table (run \`tagseg repro refine\` first). Writes cache/audit.arrow (one row
per image and class), cache/audit_images.arrow (one row per image, ranked by suspicion), CSVs and a static
HTML report in reports/audit/ (open index.html in a browser, no server needed), metrics/audit.json.
Columns: stages/audit/columns.ts; the suspicion score: stages/audit/suspicion.ts.`,
  )
  .action(async (o: { set: string[]; json?: boolean }) => {
    const { runStages } = await import('../stages/index.js');
    const { formatAudit } = await import('../stages/audit/report_stage.js');
    // json: true keeps the stages from printing their own summaries; this command prints one.
    const out = await runStages(rootOf(), ['audit', 'audit_report'], o.set, true);
    const m = out.audit as import('../stages/audit/index.js').AuditMeasuresResult;
    const rep = out.audit_report as import('../stages/audit/report_stage.js').AuditOutput;
    const r = { ...rep, seconds: m.seconds + rep.seconds, measureSeconds: m.measureSeconds, overlaySeconds: m.overlaySeconds };
    print(Boolean(o.json), r, () => formatAudit(r));
  });

program
  .command('cv')
  .description('the evaluation protocol: k-fold cross-validation of the segment stage over the train split\'s images with masks (train on k-1 folds, score the held-out one); resumable')
  .addOption(new Option('--preset <name>', 'cheap: 3 folds x 1 seed at half the epochs, for choosing; full: 3 folds x 3 seeds, for reported tables').choices(['cheap', 'full']).default('cheap'))
  .option('--folds <k>', 'number of folds (overrides the preset)', int('--folds'))
  .option('--seeds <n>', 'training seeds per fold: params seed, seed + 1, ... (overrides the preset)', int('--seeds'))
  .option('--epochs-factor <f>', 'segment.epochs x f, rounded, at least 1 (overrides the preset)', parseFloat)
  .option('--oracle', 'train on the ground-truth masks instead of the pseudo-masks (the weak / oracle ratio needs both)')
  .option('--oof', 'folds over every train image; score each pseudo-mask under the model that never trained on it (confident learning) -> review/label_quality.csv, read by the audit')
  .option('--fold-seed <n>', 'seed of the fold assignment', int('--fold-seed'), 0)
  .option('--workspace-cam', "start every run from the workspace's models/cam, which trained on the held-out fold's tags too (the protocol before 2026-12-06), instead of a CAM model trained without the held-out fold")
  .option('--set <key=value>', 'segment.* or seed override of the trained recipe (repeatable)', collect, [])
  .option('--choose <key=v1,v2,...>', 'choose pseudo-mask settings instead: refine.* candidates, chosen on k-1 folds\' masks and scored on the held-out one (repeatable: a grid)', collect, [])
  .option('--out <dir>', 'results folder: <out>/<recipe hash>/fold<k>-seed<s>.json, summary.json', 'runs/cv')
  .option('--json', 'print the summary as JSON')
  .addHelpText(
    'after',
    `
Needs a workspace run up to refine (tagseg repro refine). Finished (fold, seed) runs are kept and skipped
on a rerun, so the protocol can be stopped and continued. Every score is on a held-out fold, at full
coverage (every pixel with a valid ground truth counts, ignore counts as wrong). The segmenter of
fold k starts from a CAM model trained on the tags of the other folds only (cam_train again, once per
fold, kept in <out>/cam/ and shared by every seed and by --oracle), so nothing it starts from has seen
the photos it is scored on. Protocol: cli/cv.ts.

Choosing pseudo-mask (refine) settings, nothing retrained (--folds, --fold-seed, --out, --json apply):
  tagseg cv --choose refine.bg_threshold=0.15,0.25,0.35 --choose refine.ignore_margin=0.05,0.1
refines the train masks' images once per candidate of the grid (kept in <out>/refine/<candidate>/, so a
rerun refines nothing again), then per fold picks the candidate with the best full-coverage mIoU on the
other folds' images and scores it on the held-out fold: the nested-CV estimate is the mean ± sd of those.
A candidate's score over all folds is printed too, for reading, not for choosing. Module: cli/cv_pseudo.ts.`,
  )
  .action(async (o: { preset: 'cheap' | 'full'; folds?: number; seeds?: number; epochsFactor?: number; oracle?: boolean; oof?: boolean; foldSeed: number; workspaceCam?: boolean; set: string[]; choose: string[]; out: string; json?: boolean }, cmd: Command) => {
    const { CV_PRESETS, runCv } = await import('./cv.js');
    const { formatCv } = await import('./cv_summary.js');
    const { log } = await import('../pipeline/log.js');
    const preset = CV_PRESETS[o.preset];
    if (o.choose.length) {
      const trains = ['preset', 'seeds', 'epochsFactor', 'oracle', 'oof', 'workspaceCam', 'set'].filter((k) => cmd.getOptionValueSource(k) === 'cli');
      if (trains.length) throw new TagsegError(`--choose trains nothing, so it takes no ${trains.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}`, { hint: 'fix a refine setting for every candidate with a one-value --choose, e.g. --choose refine.crf.iterations=5' });
      const { runPseudoChoice } = await import('./cv_pseudo.js');
      const { formatPseudoChoice } = await import('./cv_pseudo_summary.js');
      const r = await runPseudoChoice({
        root: rootOf(), folds: o.folds ?? preset.folds, foldSeed: o.foldSeed, choose: o.choose, out: o.out,
        onCandidate: (c) => log.info(`cv: ${c.label}: ${c.kept} of ${c.kept + c.refined} images kept from an earlier run (${c.dir})`),
      });
      print(Boolean(o.json), r, () => formatPseudoChoice(r));
      return;
    }
    const pct = (v: number | null | undefined) => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));
    const r = await runCv({
      root: rootOf(), folds: o.folds ?? preset.folds, seeds: o.seeds ?? preset.seeds, epochsFactor: o.epochsFactor ?? preset.epochsFactor,
      oracle: Boolean(o.oracle), oof: Boolean(o.oof), foldSeed: o.foldSeed, cam: o.workspaceCam ? 'workspace' : 'fold', sets: o.set, out: o.out,
      onRun: (x, trained) => log.info(`cv: fold ${x.fold} seed ${x.seed}: segmenter ${pct(x.segmenter.miou)} on ${x.heldOutImages} held-out images${trained ? ` (${x.seconds.toFixed(0)} s)` : ' (kept from an earlier run)'}`),
    });
    print(Boolean(o.json), r, () => formatCv(r));
  });

/** The sharded stages named (default: every one), and their shard count (--shards or params.yaml). */
async function shardedStages(names: string[] | undefined, shards: number | undefined, sets: string[]) {
  const { loadStage, loadStages } = await import('../stages/index.js');
  const { loadParams, getParam } = await import('../stages/params.js');
  const p = await loadParams(path.join(rootOf(), 'params.yaml'), sets);
  const all = await loadStages();
  const stages = names?.length ? await Promise.all(names.map((n) => loadStage(n))) : all.filter((s) => s.sharded);
  return stages.map((s, i) => {
    if (!s?.sharded) throw new TagsegError(`'${names?.[i]}' is not a sharded stage`, { hint: `sharded stages: ${all.filter((x) => x.sharded).map((x) => x.name).join(', ')}` });
    const n = shards ?? (getParam(p, s.sharded.param) as number);
    if (n !== getParam(p, s.sharded.param)) process.stderr.write(`note: set ${s.sharded.param}: ${n} in params.yaml (it is ${String(getParam(p, s.sharded.param))}); each shard checks it\n`);
    return { stage: s, n };
  });
}

const cluster = program
  .command('cluster')
  .description('run the sharded stages\' shards (cam, affinity, contrast, refine, audit) on DVC, Kubernetes or Slurm: print the dvc.yaml stanza, Indexed Job manifests or a job-array script');
const shardOptions = (c: Command) => c
  .option('--stage <name>', 'sharded stage (repeatable; default: every sharded stage)', collect, [])
  .option('--shards <n>', 'shard count (default: the stage\'s <stage>.shards param)', int('--shards'))
  .option('--set <key=value>', 'params.yaml override (repeatable)', collect, []);

shardOptions(cluster.command('dvc'))
  .description('print the dvc.yaml stanza of each sharded stage as foreach (or matrix) shards: `dvc repro refine@<k>` runs shard k')
  .addOption(new Option('--form <form>', 'DVC syntax').choices(['foreach', 'matrix']).default('foreach'))
  .action(async (o: { stage: string[]; shards?: number; set: string[]; form: 'foreach' | 'matrix' }) => {
    const { dvcShardedStages } = await import('./cluster.js');
    const { loadParams } = await import('../stages/params.js');
    const YAML = (await import('yaml')).default;
    const { readFile } = await import('node:fs/promises');
    const raw = YAML.parse(await readFile(path.join(rootOf(), 'dvc.yaml'), 'utf8')) as { stages: Record<string, Record<string, unknown>> };
    const params = await loadParams(path.join(rootOf(), 'params.yaml'), o.set);
    let out: Record<string, unknown> = {};
    for (const { stage, n } of await shardedStages(o.stage, o.shards, o.set)) {
      const changed = dvcShardedStages(stage, params, raw.stages, n, o.form);
      raw.stages = { ...raw.stages, ...changed };
      out = { ...out, ...changed };
    }
    process.stdout.write(`# replaces these stages in dvc.yaml (the sharded stage, and the stages whose deps moved to its shards' folders)\n${YAML.stringify({ stages: out }, { lineWidth: 0 })}`);
  });

shardOptions(cluster.command('k8s'))
  .description('print a Kubernetes Indexed Job per sharded stage (JOB_COMPLETION_INDEX picks the shard; the project lives on a PersistentVolumeClaim)')
  .requiredOption('--image <image>', 'container image with Node 20 and tagseg installed (npm ci)')
  .requiredOption('--pvc <claim>', 'PersistentVolumeClaim holding the project (params.yaml, cache/, the dataset)')
  .option('--mount <path>', 'where the claim is mounted in the container', '/workspace')
  .option('--project <path>', 'the project folder in the container (default: the mount path)')
  .option('--tagseg <cmd>', 'command that runs tagseg in the image', 'node /opt/tagseg/bin/tagseg.js')
  .option('--parallelism <n>', 'shards running at once (default: all)', int('--parallelism'))
  .option('--cpus <n>', 'CPU request per shard', int('--cpus'))
  .option('--memory <q>', 'memory request per shard, e.g. 4Gi')
  .action(async (o: { stage: string[]; shards?: number; set: string[]; image: string; pvc: string; mount: string; project?: string; tagseg: string; parallelism?: number; cpus?: number; memory?: string }) => {
    const { k8sJob, k8sYaml } = await import('./cluster.js');
    const jobs = (await shardedStages(o.stage, o.shards, o.set)).map(({ stage, n }) => k8sJob({
      stage, shards: n, image: o.image, pvc: o.pvc, mountPath: o.mount, project: o.project ?? o.mount, tagseg: o.tagseg,
      parallelism: o.parallelism, cpus: o.cpus, memory: o.memory,
    }));
    process.stdout.write(k8sYaml(jobs));
  });

shardOptions(cluster.command('slurm'))
  .description('print a Slurm job-array script per sharded stage (SLURM_ARRAY_TASK_ID picks the shard; the project on a shared filesystem)')
  .option('--project <path>', 'the project folder as the nodes see it (default: this project, absolute)')
  .option('--tagseg <cmd>', 'command that runs tagseg on the nodes (default: this checkout\'s bin/tagseg.js)')
  .option('--parallelism <n>', 'array tasks running at once (default: all)', int('--parallelism'))
  .option('--cpus <n>', 'cpus per task', int('--cpus'))
  .option('--memory <q>', 'memory per task, e.g. 4Gi')
  .option('--logs <dir>', 'folder for the tasks\' output files (must exist; default: Slurm\'s slurm-%A_%a.out)')
  .action(async (o: { stage: string[]; shards?: number; set: string[]; project?: string; tagseg?: string; parallelism?: number; cpus?: number; memory?: string; logs?: string }) => {
    const { slurmScript } = await import('./cluster.js');
    const { REPO_ROOT } = await import('./workspace.js');
    const { shellQuote } = await import('./dvcfile.js');
    const scripts = (await shardedStages(o.stage, o.shards, o.set)).map(({ stage, n }) => slurmScript({
      stage, shards: n, project: o.project ?? rootOf(), tagseg: o.tagseg ?? `node ${shellQuote(path.join(REPO_ROOT, 'bin/tagseg.js'))}`,
      parallelism: o.parallelism, cpus: o.cpus, memory: o.memory, logs: o.logs,
    }));
    process.stdout.write(scripts.join('\n'));
  });

const review = program
  .command('review')
  .description('record review decisions (accept / reject / relabel, per image or per class) in review/decisions.csv')
  .addHelpText(
    'after',
    `
review/decisions.csv (id,decision,class,note; plain RFC 4180 CSV) is a dep of the segment stage: rejected
images leave its training, a class rejected on one image is ignored there, and hand-fixed masks in
dataset.corrections replace pseudo-masks. The audit report downloads its marks as a decisions.csv:
merge it with \`tagseg review import <file>\`.`,
  );

review
  .command('init')
  .description("create review/decisions.csv (header only) and the dataset.corrections folder where missing: segment deps (projects made before them)")
  .action(async () => {
    const { ensureReviewFiles } = await import('../data/review.js');
    const { loadParams } = await import('../stages/params.js');
    const p = await loadParams(path.join(rootOf(), 'params.yaml'));
    await ensureReviewFiles(rootOf(), p.dataset.corrections);
    process.stdout.write(`review files ready: review/decisions.csv${p.dataset.corrections ? `, ${p.dataset.corrections}/` : ''}\n`);
  });

review
  .command('set')
  .description('record a decision for an image (or one class of it); replaces an earlier one')
  .argument('<id>', 'image id (as in reports/audit/images.csv)')
  .argument('<decision>', 'accept | reject | relabel')
  .option('--class <name>', 'the decision is about this class of the image only')
  .option('--note <text>', 'free text')
  .action(async (id: string, decision: string, o: { class?: string; note?: string }) => {
    const { reviewSet } = await import('../stages/audit/review.js');
    const rows = await reviewSet(rootOf(), { id, decision, class: o.class, note: o.note });
    process.stdout.write(`${id}${o.class ? ` (${o.class})` : ''}: ${decision.toLowerCase()}; ${rows.length} decisions in review/decisions.csv\n`);
  });

review
  .command('unset')
  .description('remove the decision of an image (or of one class of it)')
  .argument('<id>', 'image id')
  .option('--class <name>', 'the per-class decision to remove')
  .action(async (id: string, o: { class?: string }) => {
    const { reviewUnset } = await import('../stages/audit/review.js');
    const removed = await reviewUnset(rootOf(), id, o.class ?? '');
    process.stdout.write(removed ? `removed the decision of ${id}${o.class ? ` (${o.class})` : ''}\n` : `${id} had no such decision\n`);
  });

review
  .command('list')
  .description('print the decisions')
  .option('--json', 'print JSON')
  .action(async (o: { json?: boolean }) => {
    const { reviewList, formatReviewList } = await import('../stages/audit/review.js');
    const rows = await reviewList(rootOf());
    print(Boolean(o.json), rows, () => formatReviewList(rows));
  });

review
  .command('import')
  .description("merge a decisions CSV (the audit report's download) into review/decisions.csv; its rows win")
  .argument('<file>', 'a CSV with id,decision[,class,note]')
  .action(async (file: string) => {
    const { reviewImport } = await import('../stages/audit/review.js');
    const r = await reviewImport(rootOf(), path.resolve(file));
    process.stdout.write(`imported ${r.imported} decisions; review/decisions.csv has ${r.total}\n`);
  });

program
  .command('export')
  .description('export a selection of images + pseudo-masks: a relabel list (CSV), a FiftyOne ImageSegmentationDirectory, or a CVAT "Segmentation mask 1.1" zip')
  .addArgument(new Argument('<format>', 'relabel | fiftyone | cvat').choices(['relabel', 'fiftyone', 'cvat']))
  .requiredOption('--out <path>', 'relabel: a .csv file; fiftyone: a folder (replaced); cvat: a .zip file')
  .option('--decision <list>', 'only images with one of these decisions (comma-separated: accept,reject,relabel), per image or per class')
  .option('--split <name>', 'only images of this split')
  .option('--class <name>', "rank by this class's suspicion (cache/audit.arrow) instead of the image's")
  .option('--min-suspicion <x>', 'only images at least this suspicious', parseFloat)
  .option('--top <k>', 'the k most suspicious images of the selection', int('--top'))
  .option('--json', 'print a JSON summary')
  .addHelpText(
    'after',
    `
Examples:
  tagseg export relabel --out review/relabel.csv --decision relabel,reject
  tagseg export cvat --out review/cvat.zip --top 50          # the 50 most suspicious images, for CVAT
  tagseg export fiftyone --out review/fiftyone --class dog --top 20`,
  )
  .action(async (format: 'relabel' | 'fiftyone' | 'cvat', o: { out: string; decision?: string; split?: string; class?: string; minSuspicion?: number; top?: number; json?: boolean }) => {
    const ex = await import('../stages/audit/export.js');
    const project = await ex.loadReviewProject(rootOf());
    const items = ex.selectItems(project, {
      decisions: o.decision?.split(',').map((d) => d.trim().toLowerCase()).filter(Boolean), split: o.split, class: o.class, minSuspicion: o.minSuspicion, top: o.top,
    });
    const out = path.resolve(rootOf(), o.out);
    const n = format === 'relabel' ? await ex.exportRelabel(items, out) : format === 'fiftyone' ? await ex.exportFiftyOne(project, items, out) : await ex.exportCvat(project, items, out);
    print(Boolean(o.json), { format, out, images: n, ids: items.map((it) => it.id) }, () => `exported ${n} of ${project.items.length} images (${format}) to ${out}`);
  });

async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    process.stderr.write(formatError(err, process.argv.includes('--debug')));
    process.exitCode = 1;
  }
}

await main();
