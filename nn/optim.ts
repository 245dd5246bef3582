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
    for (const e of this.entries) {
      const g = grads[e.variable.name];
      if (g == null) continue;
      if (g.shape.length !== e.variable.shape.length || g.shape.some((d, i) => d !== e.variable.shape[i])) {
        throw new TagsegError(`gradient of '${e.name}' has shape [${g.shape.join(', ')}], variable [${e.variable.shape.join(', ')}]`);
      }
      const lr = this.lr * (e.group.lrMult ?? 1);
      this.update(e, g, lr, e.group.weightDecay ?? this.defaultWeightDecay());
    }
    this.iterations++;
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
  protected abstract update(e: Entry, g: tf.Tensor, lr: number, wd: number): void;
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

  protected update(e: Entry, grad: tf.Tensor, lr: number, wd: number): void {
    const p = e.variable;
    const buf = this.momentum !== 0 ? this.slot('momentum', e) : undefined;
    tf.tidy(() => {
      let g = grad;
      if (wd !== 0 && !this.decoupledWeightDecay) g = tf.add(g, tf.mul(p, wd));
      let d = g;
      if (buf) {
        const nb = tf.add(tf.mul(buf, this.momentum), g);
        buf.assign(nb);
        d = this.nesterov ? tf.add(g, tf.mul(nb, this.momentum)) : nb;
      }
      let np: tf.Tensor = p;
      if (wd !== 0 && this.decoupledWeightDecay) np = tf.mul(np, 1 - lr * wd);
      p.assign(tf.sub(np, tf.mul(d, lr)));
    });
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

  protected update(e: Entry, g: tf.Tensor, lr: number, wd: number): void {
    const p = e.variable;
    const m = this.slot('m', e);
    const v = this.slot('v', e);
    const t = (this.steps.get(e.name) ?? 0) + 1;
    this.steps.set(e.name, t);
    const bc1 = 1 - this.beta1 ** t;
    const bc2 = 1 - this.beta2 ** t;
    tf.tidy(() => {
      const nm = tf.add(tf.mul(m, this.beta1), tf.mul(g, 1 - this.beta1));
      const nv = tf.add(tf.mul(v, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
      m.assign(nm);
      v.assign(nv);
      const denom = tf.add(tf.div(tf.sqrt(nv), Math.sqrt(bc2)), this.eps);
      const decayed = wd !== 0 ? tf.mul(p, 1 - lr * wd) : p;
      p.assign(tf.sub(decayed, tf.mul(tf.div(nm, denom), lr / bc1)));
    });
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
}

/**
 * The optimiser every stage trains with: the backbone group at `lr` and the new head at
 * `head_lr_mult` x lr (IRN/PSA/RCA: 10x on new layers); SGD uses IRN's momentum 0.9.
 */
export function backboneHeadOptimizer(backbone: NamedVariables, head: NamedVariables, o: OptimizerSettings): Optimizer {
  const groups: ParamGroup[] = [
    { name: 'backbone', params: backbone },
    { name: 'head', params: head, lrMult: o.head_lr_mult },
  ];
  return o.optimizer === 'sgd'
    ? new SGD(groups, { lr: o.lr, momentum: 0.9, weightDecay: o.weight_decay })
    : new AdamW(groups, { lr: o.lr, weightDecay: o.weight_decay });
}
