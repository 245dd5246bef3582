/**
 * Optimisers with the update rules written out on tf.Variables, so that the state is plain named
 * tensors (checkpointable, inspectable) and the rules are exactly PyTorch's, which the reference
 * code (IRN, PSA, RCA) uses:
 *
 * SGD (torch.optim.SGD, dampening 0), per variable p with gradient g:
 *   L2 decay (default):        g <- g + wd * p
 *   momentum:                  buf <- mu * buf + g       (buf starts at 0, i.e. buf = g at step 1, as torch)
 *                              d <- nesterov ? g + mu * buf : buf
 *   decoupled decay (SGDW):    p <- p - lr * wd * p      (Loshchilov & Hutter 2019, lr-scaled like torch AdamW)
 *   update:                    p <- p - lr * d
 * AdamW (torch.optim.AdamW):
 *   p <- p * (1 - lr * wd); m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; t <- t + 1
 *   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *
 * Parameter groups carry an lr multiplier and their own weight decay: IRN trains the new
 * classifier with 10x lr (irn step/train_cam.py param_groups), PSA uses 1x/2x/10x/20x for
 * backbone weights / biases / new weights / new biases, RCA 10x for new layers.
 * The base lr is set by the caller each iteration, e.g. `opt.lr = polyLr(base, iter, maxIter)`.
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';
import type { Backbone } from './backbone.js';
import type { NamedVariables } from './params.js';

export interface ParamGroup {
  /** Group name, for logs and error messages. */
  name: string;
  /** Variables under stable names (the names key the optimizer state in checkpoints). */
  params: NamedVariables;
  /** Learning-rate multiplier. Default 1. */
  lrMult?: number;
  /** Weight decay of this group; default the optimizer's. */
  weightDecay?: number;
}

export interface SgdOptions {
  lr: number;
  /** Default 0.9. */
  momentum?: number;
  /** Default false. */
  nesterov?: boolean;
  /** Default 0. */
  weightDecay?: number;
  /** false (default): L2 added to the gradient, as torch SGD; true: decoupled decay (SGDW). */
  decoupledWeightDecay?: boolean;
}

export interface AdamWOptions {
  lr: number;
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Default 0.01 (torch AdamW). */
  weightDecay?: number;
}

/** JSON part of an optimizer's state; the tensors travel separately (see `stateTensors`). */
export interface OptimizerStateJson {
  kind: 'sgd' | 'adamw';
  config: Record<string, number | boolean>;
  lr: number;
  iterations: number;
  /** Per-parameter step counts (AdamW bias correction); empty for SGD. */
  steps: Record<string, number>;
}

interface Entry {
  name: string;
  variable: tf.Variable;
  group: ParamGroup;
}

/**
 * Variables up to this many elements are updated together on a flat concatenation (see
 * Optimizer.updateBucket). Break-even on the dev machine: ~15 ops x ~30 us of launch overhead
 * per variable vs ~7 extra copies of its elements (concat/split of parameter, gradient, slots).
 */
const FLAT_MAX_SIZE = 32768;

/** Hyper-parameters of one update: group lr, weight decay, and the parameter's step count (AdamW). */
interface Hyper {
  lr: number;
  wd: number;
  step: number;
}

export abstract class Optimizer {
  /** Current base learning rate (group lr = lr * group.lrMult). Set it per iteration for schedules. */
  lr: number;
  /** Number of `applyGradients` calls so far. */
  iterations = 0;
  readonly groups: ParamGroup[];
  protected readonly entries: Entry[] = [];
  /** tf.Variable.name -> entry. */
  protected readonly byVarName = new Map<string, Entry>();
  /** Slot variables: `${slot}/${paramName}` -> variable. */
  protected readonly slots = new Map<string, tf.Variable>();
  protected abstract readonly slotNames: string[];

  protected constructor(groups: ParamGroup[], lr: number) {
    if (!(lr >= 0)) throw new TagsegError(`learning rate must be >= 0, got ${lr}`);
    this.lr = lr;
    this.groups = groups;
    const seen = new Set<string>();
    for (const g of groups) {
      if (g.lrMult !== undefined && !(g.lrMult >= 0)) throw new TagsegError(`group '${g.name}': lrMult must be >= 0, got ${g.lrMult}`);
      for (const [name, v] of g.params) {
        if (seen.has(name)) throw new TagsegError(`parameter '${name}' appears in two optimizer groups`);
        if (this.byVarName.has(v.name)) throw new TagsegError(`variable of '${name}' appears twice in the optimizer groups`);
        seen.add(name);
        const e = { name, variable: v, group: g };
        this.entries.push(e);
        this.byVarName.set(v.name, e);
      }
    }
  }

  /** The group variables that are currently trainable (input for tf.variableGrads). */
  trainableVariables(): tf.Variable[] {
    return this.entries.map((e) => e.variable).filter((v) => v.trainable);
  }

  /**
   * Gradients of f() w.r.t. the trainable group variables. Returns the loss (caller disposes) and
   * the gradients keyed by tf.Variable.name (caller disposes, e.g. via applyGradients + tf.dispose).
   */
  computeGradients(f: () => tf.Scalar): { value: tf.Scalar; grads: tf.NamedTensorMap } {
    const vars = this.trainableVariables();
    if (vars.length === 0) throw new TagsegError('the optimizer has no trainable variables');
    const { value, grads } = tf.variableGrads(f, vars);
    return { value, grads: grads as tf.NamedTensorMap };
  }

  /**
   * One update from gradients keyed by tf.Variable.name (what tf.variableGrads returns).
   * Variables without a gradient (null / absent) are skipped entirely, weight decay included, as
   * torch does for params whose .grad is None. Does not dispose `grads`.
   */
  applyGradients(grads: tf.NamedTensorMap | Record<string, tf.Tensor | null>): void {
    for (const key of Object.keys(grads)) {
      if (!this.byVarName.has(key)) throw new TagsegError(`gradient for a variable not managed by this optimizer (${key})`);
    }
    const todo: { e: Entry; g: tf.Tensor }[] = [];
    for (const e of this.entries) {
      const g = grads[e.variable.name];
      if (g == null) continue;
      if (g.shape.length !== e.variable.shape.length || g.shape.some((d, i) => d !== e.variable.shape[i])) {
        throw new TagsegError(`gradient of '${e.name}' has shape [${g.shape.join(', ')}], variable [${e.variable.shape.join(', ')}]`);
      }
      todo.push({ e, g });
    }
    // Nothing changes before every gradient passed the checks above.
    const buckets = new Map<string, { hyper: Hyper; items: { e: Entry; g: tf.Tensor }[] }>();
    for (const { e, g } of todo) {
      const hyper = { lr: this.lr * (e.group.lrMult ?? 1), wd: e.group.weightDecay ?? this.defaultWeightDecay(), step: this.nextStep(e.name) };
      // Large tensors update on their own: for them the copies into and out of the flat buffer
      // cost more than the per-op overhead saved.
      const key = `${hyper.lr}|${hyper.wd}|${hyper.step}${e.variable.size > FLAT_MAX_SIZE ? `|${e.name}` : ''}`;
      const b = buckets.get(key) ?? { hyper, items: [] };
      b.items.push({ e, g });
      buckets.set(key, b);
    }
    for (const { hyper, items } of buckets.values()) this.updateBucket(items, hyper);
    this.iterations++;
  }

  /**
   * Runs `rule` once for all (small) variables that share lr, weight decay and step count, on
   * their flattened concatenation, then splits the results back. The rules are elementwise, so the
   * values are bit-identical to one update per variable; what changes is the number of kernel
   * launches: ~15 ops per variable (x ~37 variables for a small ResNet + head) become ~15 per
   * bucket plus a reshape/concat/split per variable, and per-op overhead dominated the update
   * of the many small tensors (BN gamma/beta, head) on tfjs-node (bench/torch_step.ts).
   */
  private updateBucket(items: { e: Entry; g: tf.Tensor }[], hyper: Hyper): void {
    const slots = items.map(({ e }) => this.slotNames.filter((n) => this.usesSlot(n)).map((n) => this.slot(n, e)));
    tf.tidy(() => {
      if (items.length === 1) {
        const out = this.rule(items[0].e.variable, items[0].g, slots[0], hyper);
        items[0].e.variable.assign(out.p);
        slots[0].forEach((v, i) => v.assign(out.slots[i]));
        return;
      }
      const flat = (ts: tf.Tensor[]) => tf.concat(ts.map((t) => (t.rank === 1 ? t : tf.reshape(t, [-1]))));
      const sizes = items.map(({ e }) => e.variable.size);
      const unflat = (t: tf.Tensor) => tf.split(t, sizes).map((part, i) => (items[i].e.variable.rank === 1 ? part : tf.reshape(part, items[i].e.variable.shape)));
      const out = this.rule(
        flat(items.map(({ e }) => e.variable)),
        flat(items.map(({ g }) => g)),
        slots[0].map((_, k) => flat(slots.map((s) => s[k]))),
        hyper,
      );
      unflat(out.p).forEach((t, i) => items[i].e.variable.assign(t));
      out.slots.forEach((flatSlot, k) => unflat(flatSlot).forEach((t, i) => slots[i][k].assign(t)));
    });
  }

  /** computeGradients + applyGradients; returns the loss (caller disposes). */
  minimize(f: () => tf.Scalar): tf.Scalar {
    const { value, grads } = this.computeGradients(f);
    try {
      this.applyGradients(grads);
    } finally {
      tf.dispose(Object.values(grads));
    }
    return value;
  }

  /** Slot variables under stable names `${slot}/${paramName}` (live; do not dispose). */
  stateTensors(): Map<string, tf.Tensor> {
    return new Map(this.slots);
  }

  /** JSON part of the state. */
  stateJson(): OptimizerStateJson {
    return { kind: this.kind(), config: this.config(), lr: this.lr, iterations: this.iterations, steps: this.stepCounts() };
  }

  /**
   * Restore state saved by stateJson/stateTensors (e.g. from a checkpoint). The tensors are
   * copied. Errors clearly on another optimizer kind, unknown parameter names or shape mismatch;
   * parameters without saved state start fresh (as in torch).
   */
  loadState(json: OptimizerStateJson, tensors: Map<string, tf.Tensor>): void {
    if (json.kind !== this.kind()) throw new TagsegError(`optimizer state is for '${json.kind}', this optimizer is '${this.kind()}'`);
    const byName = new Map(this.entries.map((e) => [e.name, e]));
    for (const [key, t] of tensors) {
      const slash = key.indexOf('/');
      const slot = key.slice(0, slash);
      const name = key.slice(slash + 1);
      const e = byName.get(name);
      if (slash < 0 || !this.slotNames.includes(slot)) throw new TagsegError(`unknown optimizer state tensor '${key}'`);
      if (!e) throw new TagsegError(`optimizer state for parameter '${name}', which this optimizer does not manage`);
      if (t.shape.length !== e.variable.shape.length || t.shape.some((d, i) => d !== e.variable.shape[i])) {
        throw new TagsegError(`optimizer state '${key}' has shape [${t.shape.join(', ')}], parameter [${e.variable.shape.join(', ')}]`);
      }
    }
    for (const v of this.slots.values()) v.dispose();
    this.slots.clear();
    // tf.variable shares t's data (ref-counted), so the caller may dispose t afterwards.
    for (const [key, t] of tensors) this.slots.set(key, tf.variable(t, false));
    this.lr = json.lr;
    this.iterations = json.iterations;
    this.loadStepCounts(json.steps ?? {});
  }

  dispose(): void {
    for (const v of this.slots.values()) v.dispose();
    this.slots.clear();
  }

  /** The slot variable `${slot}/${name}`, created as zeros on first use. */
  protected slot(slot: string, e: Entry): tf.Variable {
    const key = `${slot}/${e.name}`;
    let v = this.slots.get(key);
    if (!v) {
      // tf.variable shares the initial tensor's data but does not own the tensor: dispose it,
      // or every slot leaks one tensor (caught by the cam stage's leak test).
      const zeros = tf.zerosLike(e.variable);
      v = tf.variable(zeros, false);
      zeros.dispose();
      this.slots.set(key, v);
    }
    return v;
  }

  protected abstract kind(): 'sgd' | 'adamw';
  protected abstract config(): Record<string, number | boolean>;
  protected abstract defaultWeightDecay(): number;
  /**
   * The update rule, elementwise: parameter p, gradient g and the slot tensors (in `slotNames`
   * order, those with `usesSlot`) -> new parameter and slots. Called on single variables and on
   * flattened concatenations of variables alike.
   */
  protected abstract rule(p: tf.Tensor, g: tf.Tensor, slots: tf.Tensor[], h: Hyper): { p: tf.Tensor; slots: tf.Tensor[] };
  /** Whether the rule needs slot `name` (SGD without momentum keeps no buffer). */
  protected usesSlot(_name: string): boolean {
    return true;
  }
  /** Advances and returns the step count of a parameter (AdamW bias correction); 0 if unused. */
  protected nextStep(_name: string): number {
    return 0;
  }
  protected stepCounts(): Record<string, number> {
    return {};
  }
  protected loadStepCounts(_steps: Record<string, number>): void {}
}

export class SGD extends Optimizer {
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly decoupledWeightDecay: boolean;
  protected readonly slotNames = ['momentum'];

  constructor(groups: ParamGroup[], opts: SgdOptions) {
    super(groups, opts.lr);
    this.momentum = opts.momentum ?? 0.9;
    this.nesterov = opts.nesterov ?? false;
    this.weightDecay = opts.weightDecay ?? 0;
    this.decoupledWeightDecay = opts.decoupledWeightDecay ?? false;
    if (this.nesterov && this.momentum <= 0) throw new TagsegError('Nesterov momentum requires momentum > 0');
  }

  protected kind(): 'sgd' {
    return 'sgd';
  }
  protected config(): Record<string, number | boolean> {
    return { momentum: this.momentum, nesterov: this.nesterov, weightDecay: this.weightDecay, decoupledWeightDecay: this.decoupledWeightDecay };
  }
  protected defaultWeightDecay(): number {
    return this.weightDecay;
  }

  protected override usesSlot(): boolean {
    return this.momentum !== 0;
  }

  protected rule(p: tf.Tensor, grad: tf.Tensor, slots: tf.Tensor[], { lr, wd }: Hyper): { p: tf.Tensor; slots: tf.Tensor[] } {
    let g = grad;
    if (wd !== 0 && !this.decoupledWeightDecay) g = tf.add(g, tf.mul(p, wd));
    let d = g;
    const outSlots: tf.Tensor[] = [];
    if (this.momentum !== 0) {
      const nb = tf.add(tf.mul(slots[0], this.momentum), g);
      outSlots.push(nb);
      d = this.nesterov ? tf.add(g, tf.mul(nb, this.momentum)) : nb;
    }
    let np = p;
    if (wd !== 0 && this.decoupledWeightDecay) np = tf.mul(np, 1 - lr * wd);
    return { p: tf.sub(np, tf.mul(d, lr)), slots: outSlots };
  }
}

export class AdamW extends Optimizer {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  protected readonly slotNames = ['m', 'v'];
  private steps = new Map<string, number>();

  constructor(groups: ParamGroup[], opts: AdamWOptions) {
    super(groups, opts.lr);
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
  }

  protected kind(): 'adamw' {
    return 'adamw';
  }
  protected config(): Record<string, number | boolean> {
    return { beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay };
  }
  protected defaultWeightDecay(): number {
    return this.weightDecay;
  }
  protected override stepCounts(): Record<string, number> {
    return Object.fromEntries(this.steps);
  }
  protected override loadStepCounts(steps: Record<string, number>): void {
    this.steps = new Map(Object.entries(steps));
  }

  protected override nextStep(name: string): number {
    const t = (this.steps.get(name) ?? 0) + 1;
    this.steps.set(name, t);
    return t;
  }

  protected rule(p: tf.Tensor, g: tf.Tensor, [m, v]: tf.Tensor[], { lr, wd, step }: Hyper): { p: tf.Tensor; slots: tf.Tensor[] } {
    const bc1 = 1 - this.beta1 ** step;
    const bc2 = 1 - this.beta2 ** step;
    const nm = tf.add(tf.mul(m, this.beta1), tf.mul(g, 1 - this.beta1));
    const nv = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
    const denom = tf.add(tf.div(tf.sqrt(nv), Math.sqrt(bc2)), this.eps);
    const decayed = wd !== 0 ? tf.mul(p, 1 - lr * wd) : p;
    return { p: tf.sub(decayed, tf.mul(tf.div(nm, denom), lr / bc1)), slots: [nm, nv] };
  }
}

/**
 * Poly learning-rate schedule: base * (1 - iter / maxIter)^power, power 0.9 (DeepLab; IRN's
 * torchutils.PolyOptimizer). iter counts from 0; clamped to 0 at and beyond maxIter.
 */
export function polyLr(base: number, iter: number, maxIter: number, power = 0.9): number {
  if (!(maxIter > 0)) throw new TagsegError(`polyLr: maxIter must be > 0, got ${maxIter}`);
  const frac = Math.min(Math.max(iter / maxIter, 0), 1);
  return base * (1 - frac) ** power;
}

/** Step schedule: base * gamma^(number of milestones <= epoch) (RCA: /10 at epochs 5 and 10). */
export function stepLr(base: number, epoch: number, milestones: number[], gamma = 0.1): number {
  return base * gamma ** milestones.filter((m) => epoch >= m).length;
}

/** The training settings of a stage's params section that pick its optimiser. */
export interface OptimizerSettings {
  optimizer: 'sgd' | 'adamw';
  lr: number;
  head_lr_mult: number;
  weight_decay: number;
  frozen_stages: number;
}

/**
 * The optimiser every stage trains with: the backbone group at `lr` and the new head at
 * `head_lr_mult` x lr (IRN/PSA/RCA: 10x on new layers); SGD uses IRN's momentum 0.9. The
 * backbone's first `frozen_stages` stages are frozen first (Backbone.freezeStages), so they get
 * no optimizer state, no weight decay and no backward pass.
 */
export function backboneHeadOptimizer(backbone: Backbone, head: NamedVariables, o: OptimizerSettings): Optimizer {
  backbone.freezeStages(o.frozen_stages);
  const groups: ParamGroup[] = [
    { name: 'backbone', params: backbone.params.namedTrainable('backbone/') },
    { name: 'head', params: head, lrMult: o.head_lr_mult },
  ];
  return o.optimizer === 'sgd'
    ? new SGD(groups, { lr: o.lr, momentum: 0.9, weightDecay: o.weight_decay })
    : new AdamW(groups, { lr: o.lr, weightDecay: o.weight_decay });
}
