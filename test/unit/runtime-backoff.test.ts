import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Backoff, backoffDelay } from "../../src/runtime/backoff.js";

describe("runtime/backoff", () => {
  it("doubles from initialMs up to maxMs without jitter, and starts over after reset", () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0 });
    assert.deepEqual(
      Array.from({ length: 6 }, () => backoff.next()),
      [100, 200, 400, 800, 1000, 1000],
    );
    backoff.reset();
    assert.equal(backoff.next(), 100);
  });

  it("property: jitter only ever shortens a delay, by at most the jitter fraction", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (attempt, random) => {
          const policy = { initialMs: 250, maxMs: 30_000, jitter: 0.5 };
          const plain = backoffDelay({ ...policy, jitter: 0 }, attempt);
          const jittered = backoffDelay(policy, attempt, () => random);
          assert.ok(jittered <= plain && jittered >= Math.floor(plain * 0.5), `${jittered} vs ${plain}`);
        },
      ),
    );
  });
});
