/**
 * A kernel's engine switch: the fast engine by default, and the reference engine it is tested
 * against (the CRF's mean field, the random walk, AffinityNet's pairs). Tests and benches switch
 * it to compare the two.
 */
export class EngineSwitch<E extends string> {
  constructor(private engine: E) {}

  get current(): E {
    return this.engine;
  }

  /** Use `engine` from now on; returns the previous one (to restore it). */
  set(engine: E): E {
    const previous = this.engine;
    this.engine = engine;
    return previous;
  }
}
