import { strict as assert } from "node:assert";
import fc from "fast-check";
import { WorkQueue, type RateLimitPolicy } from "../../src/runtime/workqueue.js";
import { FakeClock, flushPromises } from "../fixture/fake-clock.js";

const relaxedBudget: RateLimitPolicy = { baseDelayMs: 5, maxDelayMs: 1000, retriesPerSecond: 1000, burst: 1000 };

function newQueue(rateLimit: RateLimitPolicy = relaxedBudget) {
  const clock = new FakeClock();
  return { clock, queue: new WorkQueue({ clock, rateLimit }) };
}

const pending = Symbol("pending");

/** Resolves to the key get() hands out, or `pending` if it is still waiting after the event loop settles. */
async function poll(promise: Promise<string | undefined>): Promise<string | undefined | typeof pending> {
  let result: string | undefined | typeof pending = pending;
  void promise.then((key) => (result = key));
  await flushPromises();
  return result;
}

describe("runtime/workqueue", () => {
  it("hands out each waiting key once, in order of arrival", async () => {
    const { queue } = newQueue();
    for (const key of ["a", "b", "a", "c", "b"]) queue.add(key);
    assert.equal(queue.length, 3);
    assert.deepEqual([await queue.get(), await queue.get(), await queue.get()], ["a", "b", "c"]);
    assert.equal(await poll(queue.get()), pending);
  });

  it("never hands out a key being processed; re-adds meanwhile run exactly once afterwards", async () => {
    const { queue } = newQueue();
    queue.add("a");
    const first = await queue.get();
    queue.add("a");
    queue.add("a");
    const second = queue.get();
    assert.equal(await poll(second), pending, "a is in flight, so nobody else may get it");
    queue.done("a");
    assert.equal(await poll(second), "a");
    queue.done("a");
    assert.equal(first, "a");
    assert.equal(await poll(queue.get()), pending, "the two re-adds collapsed into one run");
  });

  it("gives concurrent workers different keys", async () => {
    const { queue } = newQueue();
    const workers = [queue.get(), queue.get()];
    queue.add("a");
    queue.add("b");
    assert.deepEqual((await Promise.all(workers)).sort(), ["a", "b"]);
    assert.equal(queue.inFlight, 2);
  });

  it("backs a failing key off exponentially, and forget() starts over", async () => {
    const { clock, queue } = newQueue();
    const readyAfter: number[] = [];
    for (let failure = 0; failure < 5; failure++) {
      const start = clock.now();
      queue.addRateLimited("a");
      while (queue.length === 0) await clock.advance(1);
      readyAfter.push(clock.now() - start);
      await queue.get();
      queue.done("a");
    }
    assert.deepEqual(readyAfter, [5, 10, 20, 40, 80]);
    assert.equal(queue.numRequeues("a"), 5);
    queue.forget("a");
    queue.addRateLimited("a");
    await clock.advance(5);
    assert.equal(queue.length, 1);
  });

  it("caps per-key back-off at maxDelayMs", async () => {
    const { clock, queue } = newQueue({ ...relaxedBudget, maxDelayMs: 100 });
    // Twenty failures in a row; the pending retry keeps its earliest deadline (5 ms).
    for (let i = 0; i < 20; i++) queue.addRateLimited("a");
    await clock.advance(5);
    assert.equal(await queue.get(), "a");
    queue.done("a");
    queue.addRateLimited("a");
    await clock.advance(99);
    assert.equal(queue.length, 0);
    await clock.advance(1);
    assert.equal(queue.length, 1, "5 ms · 2^20 is capped at 100 ms");
  });

  it("limits retries overall with a token bucket", async () => {
    const { clock, queue } = newQueue({ baseDelayMs: 1, maxDelayMs: 1000, retriesPerSecond: 2, burst: 2 });
    for (const key of ["a", "b", "c", "d"]) queue.addRateLimited(key);
    await clock.advance(1);
    assert.equal(queue.length, 2, "the burst lets two retries through at once");
    await clock.advance(499);
    assert.equal(queue.length, 3);
    await clock.advance(500);
    assert.equal(queue.length, 4);
  });

  it("addAfter keeps the earliest deadline and add() makes a delayed key ready at once", async () => {
    const { clock, queue } = newQueue();
    queue.addAfter("a", 1000);
    queue.addAfter("a", 300);
    queue.addAfter("a", 2000);
    await clock.advance(299);
    assert.equal(queue.length, 0);
    await clock.advance(1);
    assert.equal(queue.length, 1);
    queue.addAfter("b", 1000);
    queue.add("b");
    assert.equal(queue.length, 2);
  });

  it("shutDown releases waiting workers at once", async () => {
    const { queue } = newQueue();
    const idle = queue.get();
    queue.shutDown();
    assert.equal(await idle, undefined);
  });

  it("shutDown drops waiting keys, ignores new ones and drains work in flight", async () => {
    const { clock, queue } = newQueue();
    queue.add("a");
    queue.add("dropped");
    assert.equal(await queue.get(), "a");
    queue.addAfter("later", 10);
    let drained = false;
    const draining = queue.shutDownAndDrain().then(() => (drained = true));
    queue.add("b");
    await clock.advance(100);
    assert.equal(await queue.get(), undefined);
    assert.equal(drained, false, "a is still being processed");
    queue.done("a");
    await draining;
    assert.equal(drained, true);
    assert.equal(queue.length, 0);
  });

  it("property: no key is ever processed twice at once, and every add is followed by a run", async () => {
    type Op = { kind: "add"; key: string } | { kind: "take"; worker: number } | { kind: "finish"; worker: number };
    const key = fc.constantFrom("a", "b", "c");
    const worker = fc.integer({ min: 0, max: 2 });
    const op: fc.Arbitrary<Op> = fc.oneof(
      key.map((k) => ({ kind: "add" as const, key: k })),
      worker.map((w) => ({ kind: "take" as const, worker: w })),
      worker.map((w) => ({ kind: "finish" as const, worker: w })),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const { queue } = newQueue();
        const holding: (string | undefined)[] = [undefined, undefined, undefined];
        // A key added after its last run started must run again: track which adds are still owed a run.
        const owed = new Set<string>();
        const take = async (w: number) => {
          const got = await poll(queue.get());
          assert.notEqual(got, pending, "a key was owed but the queue handed out nothing");
          if (got === undefined || got === pending) return;
          assert.ok(!holding.includes(got), `${got} handed to two workers`);
          holding[w] = got;
          owed.delete(got);
        };
        for (const step of ops) {
          if (step.kind === "add") {
            queue.add(step.key);
            owed.add(step.key);
          } else if (step.kind === "take" && holding[step.worker] === undefined && queue.length > 0) {
            await take(step.worker);
          } else if (step.kind === "finish" && holding[step.worker] !== undefined) {
            queue.done(holding[step.worker]!);
            holding[step.worker] = undefined;
          }
        }
        for (const [w, held] of holding.entries()) {
          if (held === undefined) continue;
          holding[w] = undefined;
          queue.done(held);
        }
        while (queue.length > 0) {
          await take(0);
          queue.done(holding[0]!);
          holding[0] = undefined;
        }
        assert.deepEqual([...owed], [], "every add was followed by a run");
      }),
      { numRuns: 200 },
    );
  });
});
