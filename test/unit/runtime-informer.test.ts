// The informer's bookkeeping, driven through its ListWatch interface (our own)
// with a scripted server and a hand-moved clock. The real API server paths
// (410, stalls, restarts) are covered in test/integration/runtime-*.test.ts.
import { strict as assert } from "node:assert";
import { Informer, type ListWatch } from "../../src/runtime/informer.js";
import type { WatchEnd, WatchEvent, WatchHandle } from "../../src/runtime/kube-client.js";
import type { KubeObject } from "../../src/runtime/objects.js";
import { FakeClock, flushPromises } from "../fixture/fake-clock.js";

interface Machine extends KubeObject {
  spec: { plan: string };
}

const machine = (name: string, plan: string, resourceVersion: string, namespace = "ns"): Machine => ({
  metadata: { name, namespace, resourceVersion },
  spec: { plan },
});

/** A scripted API: list() returns `listed`; each watch() is recorded so the test can push events or end it. */
class ScriptedApi implements ListWatch<Machine> {
  listed: Machine[] = [];
  listResourceVersion = "10";
  listFailures = 0;
  readonly watches: {
    resourceVersion: string;
    push: (event: WatchEvent) => void;
    end: (end: WatchEnd) => void;
    aborted?: string;
  }[] = [];

  list() {
    if (this.listFailures > 0) {
      this.listFailures--;
      return Promise.reject(new Error("connection refused"));
    }
    return Promise.resolve({
      items: this.listed.map((m) => structuredClone(m)),
      resourceVersion: this.listResourceVersion,
    });
  }

  watch(resourceVersion: string, onEvent: (event: WatchEvent) => void): Promise<WatchHandle> {
    let settle: (end: WatchEnd) => void = () => undefined;
    const ended = new Promise<WatchEnd>((resolve) => (settle = resolve));
    const record = { resourceVersion, push: onEvent, end: settle, aborted: undefined as string | undefined };
    this.watches.push(record);
    return Promise.resolve({
      ended,
      abort: (reason) => {
        record.aborted = reason;
        settle({ kind: "error", error: new Error(reason) });
      },
    });
  }

  get current() {
    const watch = this.watches.at(-1);
    assert.ok(watch !== undefined, "no watch was opened");
    return watch;
  }
}

function setup(options: { stallTimeoutMs?: number; resyncPeriodMs?: number } = {}) {
  const clock = new FakeClock();
  const api = new ScriptedApi();
  const informer = new Informer<Machine>({
    name: "machines",
    listWatch: api,
    clock,
    indexers: { plan: (m) => [m.spec.plan] },
    backoff: { initialMs: 100, maxMs: 1000, jitter: 0 },
    ...options,
  });
  const seen: string[] = [];
  informer.addHandler({
    onAdd: (m) => seen.push(`add ${m.metadata.name}`),
    onUpdate: (old, m) => seen.push(old === m ? `resync ${m.metadata.name}` : `update ${m.metadata.name}`),
    onDelete: (m) => seen.push(`delete ${m.metadata.name}`),
  });
  return { clock, api, informer, seen };
}

const names = (machines: Machine[]) => machines.map((m) => m.metadata.name).sort();

describe("runtime/informer", () => {
  it("lists, then watches from the list's resourceVersion, keeping indexes current", async () => {
    const { api, informer, seen } = setup();
    api.listed = [machine("m1", "plan-a", "5"), machine("m2", "plan-b", "6")];
    informer.start();
    await informer.waitForSync();
    await flushPromises();
    assert.equal(api.current.resourceVersion, "10");
    api.current.push({ type: "MODIFIED", object: machine("m2", "plan-a", "11") });
    api.current.push({ type: "ADDED", object: machine("m3", "plan-c", "12", "other") });
    api.current.push({ type: "DELETED", object: machine("m1", "plan-a", "13") });
    assert.deepEqual(seen, ["add m1", "add m2", "update m2", "add m3", "delete m1"]);
    assert.deepEqual(names(informer.byIndex("plan", "plan-a")), ["m2"]);
    assert.deepEqual(informer.byIndex("plan", "plan-b"), []);
    assert.deepEqual(names(informer.list("ns")), ["m2"]);
    assert.deepEqual(names(informer.list()), ["m2", "m3"]);
    assert.equal(informer.get("m3", "other")?.spec.plan, "plan-c");
    assert.equal(informer.lastResourceVersion, "13");
    await informer.stop();
  });

  it("hands out frozen objects, so no handler can corrupt the cache", async () => {
    const { api, informer } = setup();
    api.listed = [machine("m1", "plan-a", "5")];
    informer.start();
    await informer.waitForSync();
    const cached = informer.get("m1", "ns")!;
    assert.throws(() => {
      cached.spec.plan = "changed";
    }, TypeError);
    await informer.stop();
  });

  it("continues from the last bookmark after the server closes the watch", async () => {
    const { api, informer } = setup();
    informer.start();
    await informer.waitForSync();
    await flushPromises();
    api.current.push({ type: "BOOKMARK", object: { metadata: { name: "", resourceVersion: "42" } } });
    api.current.end({ kind: "closed" });
    await flushPromises();
    assert.equal(api.watches.length, 2);
    assert.equal(api.current.resourceVersion, "42");
    assert.equal(informer.stats.lists, 1, "a normal close does not relist");
    await informer.stop();
  });

  it("relists on a 410 ERROR event and reports objects deleted while it was not watching", async () => {
    const { api, informer, seen } = setup();
    api.listed = [machine("m1", "plan-a", "5"), machine("m2", "plan-a", "6")];
    informer.start();
    await informer.waitForSync();
    await flushPromises();
    api.listed = [machine("m2", "plan-b", "20"), machine("m4", "plan-a", "21")];
    api.listResourceVersion = "22";
    api.current.push({
      type: "ERROR",
      object: { metadata: { name: "" }, code: 410, reason: "Expired", message: "too old" },
    });
    await flushPromises();
    assert.equal(api.watches[0]?.aborted, "error event");
    assert.equal(informer.stats.gone, 1);
    assert.equal(informer.stats.lists, 2);
    assert.equal(api.current.resourceVersion, "22");
    assert.deepEqual(seen.slice(2), ["update m2", "add m4", "delete m1"]);
    assert.deepEqual(names(informer.byIndex("plan", "plan-a")), ["m4"]);
    await informer.stop();
  });

  it("retries a failing list with exponential back-off, then syncs", async () => {
    const { api, clock, informer } = setup();
    api.listFailures = 3;
    informer.start();
    await flushPromises();
    assert.equal(informer.hasSynced(), false);
    await clock.advance(100 + 200 - 1);
    assert.equal(informer.hasSynced(), false, "two back-offs (100, 200 ms) have not both passed");
    await clock.advance(1 + 400);
    assert.equal(informer.hasSynced(), true);
    assert.equal(informer.stats.errors, 3);
    await informer.stop();
  });

  it("restarts a watch that shows nothing for stallTimeoutMs, from where it was", async () => {
    const { api, clock, informer } = setup({ stallTimeoutMs: 1000 });
    informer.start();
    await informer.waitForSync();
    await flushPromises();
    await clock.advance(600);
    api.current.push({ type: "BOOKMARK", object: { metadata: { name: "", resourceVersion: "15" } } });
    await clock.advance(999);
    assert.equal(api.watches.length, 1, "a bookmark counts as a sign of life");
    await clock.advance(1);
    assert.equal(api.watches[0]?.aborted, "stalled");
    assert.equal(informer.stats.stalls, 1);
    await clock.advance(100);
    assert.equal(api.watches.length, 2);
    assert.equal(api.current.resourceVersion, "15");
    await informer.stop();
  });

  it("resyncs every cached object periodically", async () => {
    const { api, clock, informer, seen } = setup({ resyncPeriodMs: 5000 });
    api.listed = [machine("m1", "plan-a", "5")];
    informer.start();
    await informer.waitForSync();
    await clock.advance(10_000);
    assert.deepEqual(seen, ["add m1", "resync m1", "resync m1"]);
    await informer.stop();
  });

  it("replays the cache to a handler added after the sync, and survives a throwing handler", async () => {
    const { api, informer } = setup();
    api.listed = [machine("m1", "plan-a", "5")];
    informer.start();
    await informer.waitForSync();
    await flushPromises();
    informer.addHandler({
      onUpdate: () => {
        throw new Error("handler bug");
      },
    });
    const late: string[] = [];
    informer.addHandler({ onAdd: (m) => late.push(m.metadata.name) });
    api.current.push({ type: "MODIFIED", object: machine("m1", "plan-b", "11") });
    api.current.push({ type: "ADDED", object: machine("m2", "plan-b", "12") });
    assert.deepEqual(late, ["m1", "m2"]);
    assert.equal(informer.get("m1", "ns")?.spec.plan, "plan-b");
    await informer.stop();
  });
});
