/**
 * pyyaml.ts against what ruamel.yaml (the library DVC dumps dvc.lock with; 0.19.1, DVC's settings)
 * wrote for the same values: quoting by YAML 1.2 resolution, Python float repr, folding of plain,
 * single- and double-quoted scalars at width 80, nesting. The expected texts are ruamel's output.
 */
import { describe, expect, it } from 'vitest';
import { PyFloat, type PyMap, dumpPy, parsePy, pyEqual, pyFloatRepr } from '../../cli/pyyaml.js';

const RUAMEL_1 = `stages:
  train:
    cmd: python -c 'import train; train.main()' --out models/a --epochs 12 
      --log-dir runs/train "quoted" --x y
    params:
      params.yaml:
        s:
        - '2.0'
        - ''
        - yes
        - 'a: b'
        - '#x'
        - -x
        - it's
        - 'null'
        - '2024-01-01'
        - é
        f:
        - 1e-05
        - 1e+16
        - 0.0001
        - 1.0
        - -0.0
        - .inf
        - 123456789.125
        - 0.1
        i:
        - 12345678901234567890
        - -3
        n:
        b: true
        e: []
        m: {}
        nest:
        - - 1
          - 2
        - k: v
`;

const RUAMEL_2 = `q: "'single' then a long tail of words that goes past the eighty column limit of ruamel's
  emitter"
nl: "first line\\nsecond line with more words, enough words to need folding past eighty
  columns"
sq: '@at the start then a long tail of words that goes past the eighty column limit
  ok'
`;

const f = (x: number) => new PyFloat(x);
const VALUES_1: PyMap = {
  stages: {
    train: {
      cmd: `python -c 'import train; train.main()' --out models/a --epochs 12 --log-dir runs/train "quoted" --x y`,
      params: {
        'params.yaml': {
          s: ['2.0', '', 'yes', 'a: b', '#x', '-x', "it's", 'null', '2024-01-01', '\u00e9'],
          f: [f(1e-5), f(1e16), f(0.0001), f(1), f(-0), f(Infinity), f(123456789.125), f(0.1)],
          i: [12345678901234567890n, -3],
          n: null,
          b: true,
          e: [],
          m: {},
          nest: [[1, 2], { k: 'v' }],
        },
      },
    },
  },
};

describe('pyyaml: dvc.lock YAML as ruamel writes it', () => {
  it('dumps values byte for byte as ruamel does', () => {
    expect(dumpPy(VALUES_1)).toBe(RUAMEL_1);
    expect(
      dumpPy({
        q: "'single' then a long tail of words that goes past the eighty column limit of ruamel's emitter",
        nl: 'first line\nsecond line with more words, enough words to need folding past eighty columns',
        sq: '@at the start then a long tail of words that goes past the eighty column limit ok',
      }),
    ).toBe(RUAMEL_2);
  });

  it('parses back the Python types (1.0 stays a float) and re-dumps identically', () => {
    const parsed = parsePy(RUAMEL_1, 'x') as PyMap;
    expect(dumpPy(parsed)).toBe(RUAMEL_1);
    expect(pyEqual(parsed, VALUES_1)).toBe(true);
    expect(parsePy('a: 1.0', 'x')).toEqual({ a: f(1) });
    expect(parsePy('a: 1', 'x')).toEqual({ a: 1 });
    // negative control: a changed value is not equal
    expect(pyEqual(parsePy('a: [1, 2]', 'x'), parsePy('a: [1, 3]', 'x'))).toBe(false);
    expect(pyEqual(parsePy('a: 1', 'x'), parsePy('a: 1.0', 'x'))).toBe(true); // Python: 1 == 1.0
  });

  it("formats floats as Python's repr", () => {
    const cases: Array<[number, string]> = [[1, '1.0'], [0.1, '0.1'], [1e-5, '1e-05'], [1.5e20, '1.5e+20'], [1e15, '1000000000000000.0'], [1e16, '1e+16'], [123.456, '123.456'], [-2.5e-7, '-2.5e-07'], [0.0001, '0.0001']];
    for (const [x, repr] of cases) expect(pyFloatRepr(x)).toBe(repr);
  });
});
