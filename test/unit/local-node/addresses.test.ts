import { strict as assert } from "node:assert";
import fc from "fast-check";
import { LoopbackAddressPool, podRangeOctet } from "../../../src/local/node/addresses.js";

describe("local node pod addresses", () => {
  it("gives each owner one stable loopback address in the cluster's /16", () => {
    const pool = new LoopbackAddressPool(42);
    const a = pool.allocate("a");
    const b = pool.allocate("b");
    assert.equal(a, "127.42.0.1");
    assert.equal(b, "127.42.0.2");
    assert.equal(pool.allocate("a"), a);
  });

  it("does not hand a released address out again before the others", () => {
    const pool = new LoopbackAddressPool(42);
    const first = pool.allocate("a");
    pool.release("a");
    assert.notEqual(pool.allocate("b"), first);
  });

  it("never hands out one address twice while it is in use", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 20 })), { maxLength: 200 }), (ops) => {
        const pool = new LoopbackAddressPool(7);
        const held = new Map<string, string>();
        for (const [allocate, id] of ops) {
          const owner = `pod-${id}`;
          if (allocate) held.set(owner, pool.allocate(owner));
          else {
            pool.release(owner);
            held.delete(owner);
          }
        }
        const addresses = [...held.values()];
        return new Set(addresses).size === addresses.length && addresses.every((a) => /^127\.7\.\d+\.\d+$/.test(a));
      }),
    );
  });

  it("keeps cluster ranges away from 127.0.x and 127.1.x and inside the octet", () => {
    fc.assert(
      fc.property(fc.string(), (dir) => {
        const octet = podRangeOctet(`/tmp/${dir}`);
        return octet >= 2 && octet <= 254;
      }),
    );
  });

  it("rejects an octet outside 1..254", () => {
    assert.throws(() => new LoopbackAddressPool(0), /not 1\.\.254/);
  });
});
