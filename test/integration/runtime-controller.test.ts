import { strict as assert } from "node:assert";
import { Writable } from "node:stream";
import { pino } from "pino";
import { useCluster } from "../fixture/cluster.js";
import {
  configMaps,
  eventsV1,
  findCondition,
  predicates,
  TerminalError,
  type Manager,
  type Reconciler,
} from "../../src/runtime/index.js";
import { addMirrorController, copyName, mirrors, newMirrorReconciler } from "../fixture/sample-controller.js";
import { absentKind, installMirrorCrd, mirror, testManager, waitFor } from "../fixture/runtime.js";

/** Collects pino's JSON lines. */
function captureLogs(): { lines: Record<string, unknown>[]; stream: Writable } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, stream };
}

describe("runtime: sample controller on a real API server", function () {
  this.timeout(60_000);
  const cluster = useCluster("runtime-ctl");
  let manager: Manager | undefined;

  before(async () => {
    await installMirrorCrd(cluster.kubeConfig);
  });
  afterEach(async () => {
    await manager?.stop();
    manager = undefined;
  });

  const isReady = async (client: Manager["client"], name: string, generation?: number) => {
    const current = await client.get(mirrors, name, cluster.namespace);
    const ready = findCondition(current?.status?.conditions, "Ready");
    return ready?.status === "True" && (generation === undefined || current?.status?.observedGeneration === generation);
  };

  it("converges: copies, follows spec changes, restores a deleted copy, cleans up through its finalizer", async () => {
    const logs = captureLogs();
    manager = testManager(cluster.kubeConfig, {
      logger: pino({ level: "info" }, logs.stream),
      health: { port: 0, host: "127.0.0.1" },
    });
    addMirrorController(manager, { namespace: cluster.namespace });
    await manager.start();
    const { client } = manager;
    const ns = cluster.namespace;

    await client.create(mirrors, mirror(ns, "alpha", { colour: "blue" }));
    await waitFor("alpha Ready", () => isReady(client, "alpha", 1));
    assert.deepEqual((await client.get(configMaps, copyName("alpha"), ns))?.data, { colour: "blue" });
    const firstReady = findCondition((await client.get(mirrors, "alpha", ns))?.status?.conditions, "Ready");

    const alpha = await client.get(mirrors, "alpha", ns);
    await client.replace(mirrors, { ...alpha!, spec: { data: { colour: "red", size: "L" } } });
    await waitFor(
      "the copy to follow the spec",
      async () => (await client.get(configMaps, copyName("alpha"), ns))?.data?.size === "L",
    );
    await waitFor("alpha Ready at generation 2", () => isReady(client, "alpha", 2));
    const after = await client.get(mirrors, "alpha", ns);
    assert.equal(after?.status?.copiedKeys, 2);
    assert.equal(
      findCondition(after.status.conditions, "Ready")?.lastTransitionTime,
      firstReady?.lastTransitionTime,
      "Ready stayed True, so its transition time stays",
    );

    // owns(): deleting the copy enqueues its owner, which recreates it.
    await client.delete(configMaps, { name: copyName("alpha"), namespace: ns });
    await waitFor(
      "the copy to come back",
      async () => (await client.get(configMaps, copyName("alpha"), ns)) !== undefined,
    );

    // The finalizer removes the copy before the Mirror goes.
    await client.delete(mirrors, { name: "alpha", namespace: ns });
    await waitFor(
      "alpha and its copy to be gone",
      async () =>
        (await client.get(mirrors, "alpha", ns)) === undefined &&
        (await client.get(configMaps, copyName("alpha"), ns)) === undefined,
    );

    const reconcileLines = logs.lines.filter((line) => line.reconcileID !== undefined);
    assert.ok(reconcileLines.length >= 3, "the reconciler logged");
    for (const line of reconcileLines) assert.equal(line.key, `${ns}/alpha`, JSON.stringify(line));

    const port = manager.healthPort!;
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (const name of [
      'controller_runtime_reconcile_total{controller="mirror",result="success"}',
      "controller_runtime_reconcile_time_seconds_bucket",
      'workqueue_adds_total{name="mirror",controller="mirror"}',
      "workqueue_queue_duration_seconds_bucket",
      "workqueue_depth",
    ]) {
      assert.ok(metrics.includes(name), `/metrics lacks ${name}`);
    }
    assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  });

  it("backs off a reconcile that keeps failing (intervals grow), aggregates its warnings, and recovers", async () => {
    manager = testManager(cluster.kubeConfig);
    const attempts: number[] = [];
    const sample = newMirrorReconciler(manager, cluster.namespace);
    const timed: Reconciler = (request, context) => {
      if (request.name === "blocked") attempts.push(performance.now());
      return sample(request, context);
    };
    addMirrorController(manager, { reconciler: timed, namespace: cluster.namespace });
    await manager.start();
    const { client } = manager;
    const ns = cluster.namespace;
    await client.create(configMaps, {
      metadata: { name: copyName("blocked"), namespace: ns },
      data: { someone: "else" },
    });
    await client.create(mirrors, mirror(ns, "blocked", { a: "1" }));

    await waitFor("eight failed attempts", () => attempts.length >= 8);
    const intervals = attempts.slice(1).map((at, i) => at - attempts[i]!);
    // Per-key back-off is 5 ms · 2^failures; each interval is at least that, and the later ones clearly grow.
    // Less the 1 ms of libuv's loop clock, which timers are scheduled against (a timer can fire up to 1 ms early by performance.now()).
    for (const [failures, interval] of intervals.entries()) {
      assert.ok(interval >= 5 * 2 ** failures - 1, `interval ${failures}: ${interval} ms`);
    }
    for (let i = 4; i < intervals.length; i++)
      assert.ok(intervals[i]! > intervals[i - 1]!, `intervals ${intervals.map(Math.round).join(", ")} ms`);

    const blocked = await client.get(mirrors, "blocked", ns);
    assert.equal(findCondition(blocked?.status?.conditions, "Ready")?.reason, "CopyBlocked");
    await waitFor("an aggregated warning event", async () => {
      const warnings = (await client.list(eventsV1, { namespace: ns })).items.filter(
        (event) => event.reason === "CopyBlocked",
      );
      return warnings.length === 1 && (warnings[0]?.series?.count ?? 0) >= 2;
    });
    const metrics = await manager.metrics.registry.getSingleMetricAsString("controller_runtime_reconcile_errors_total");
    assert.match(metrics, /controller_runtime_reconcile_errors_total\{controller="mirror"\} ([89]|\d\d+)/);

    await client.delete(configMaps, { name: copyName("blocked"), namespace: ns });
    await waitFor("blocked to recover once the way is clear", () => isReady(client, "blocked"));
  });

  it("does not retry a terminal error", async () => {
    manager = testManager(cluster.kubeConfig);
    let attempts = 0;
    addMirrorController(manager, {
      namespace: cluster.namespace,
      reconciler: ({ name }) => {
        if (name !== "terminal") return Promise.resolve(undefined);
        attempts++;
        return Promise.reject(new TerminalError("spec can never work"));
      },
    });
    await manager.start();
    await manager.client.create(mirrors, mirror(cluster.namespace, "terminal", {}));
    await waitFor("one attempt", () => attempts === 1);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(attempts, 1);
    const metrics = await manager.metrics.registry.getSingleMetricAsString(
      "controller_runtime_terminal_reconcile_errors_total",
    );
    assert.match(metrics, /\{controller="mirror"\} 1/);
  });

  it("watches(): a change to another kind enqueues the primary objects its map function names", async () => {
    manager = testManager(cluster.kubeConfig);
    const reconciled: string[] = [];
    manager
      .controller("mapped")
      .for(mirrors, { scope: { namespace: cluster.namespace } })
      .watches(
        configMaps,
        (cm) =>
          cm.metadata.labels?.mirror === undefined
            ? []
            : [{ namespace: cm.metadata.namespace, name: cm.metadata.labels.mirror }],
        {
          scope: { namespace: cluster.namespace },
          predicates: [predicates.labelsChanged],
        },
      )
      .complete(({ name }) => {
        reconciled.push(name);
        return Promise.resolve(undefined);
      });
    await manager.start();
    const ns = cluster.namespace;
    const settle = () => new Promise((resolve) => setTimeout(resolve, 500));
    await settle();
    reconciled.length = 0;

    await manager.client.create(configMaps, {
      metadata: { name: "pointer", namespace: ns, labels: { mirror: "target" } },
    });
    await waitFor("the mapped Mirror to be enqueued", () => reconciled.includes("target"));
    const pointer = (await manager.client.get(configMaps, "pointer", ns))!;
    await manager.client.replace(configMaps, { ...pointer, data: { unrelated: "change" } });
    await settle();
    assert.deepEqual(reconciled, ["target"], "a change that leaves the labels alone is filtered by labelsChanged");
    await manager.client.patch(
      configMaps,
      { name: "pointer", namespace: ns },
      { metadata: { labels: { mirror: "other" } } },
      "merge",
    );
    await waitFor("the newly named Mirror to be enqueued", () => reconciled.includes("other"));
  });

  it("requeues after requeueAfterMs, and runs up to `concurrency` different keys at once", async () => {
    manager = testManager(cluster.kubeConfig);
    const ns = cluster.namespace;
    const ticks: number[] = [];
    let running = 0;
    let mostAtOnce = 0;
    const inFlight = new Set<string>();
    manager
      .controller("paced")
      .for(mirrors, { scope: { namespace: ns } })
      .withConcurrency(3)
      .complete(async ({ name }) => {
        if (name === "ticker") {
          ticks.push(performance.now());
          return { requeueAfterMs: 300 };
        }
        if (!name.startsWith("slow-")) return undefined;
        assert.ok(!inFlight.has(name), `${name} reconciled twice at once`);
        inFlight.add(name);
        mostAtOnce = Math.max(mostAtOnce, ++running);
        await new Promise((resolve) => setTimeout(resolve, 200));
        running--;
        inFlight.delete(name);
        return undefined;
      });
    // Created before the start, so the first list hands all six to the queue at once.
    await Promise.all(
      ["a", "b", "c", "d", "e", "f"].map((n) => manager!.client.create(mirrors, mirror(ns, `slow-${n}`, {}))),
    );
    await manager.start();
    await manager.client.create(mirrors, mirror(ns, "ticker", {}));
    await waitFor("four ticks", () => ticks.length >= 4);
    const gaps = ticks.slice(1).map((at, i) => at - ticks[i]!);
    for (const gap of gaps) assert.ok(gap >= 295 && gap < 1000, `ticks ${gaps.map(Math.round).join(", ")} ms apart`);
    await waitFor("the slow keys to finish", () => running === 0 && mostAtOnce > 0);
    assert.equal(mostAtOnce, 3);
  });

  it("stops promptly even when a cache never syncs, and says so on /readyz", async () => {
    const stuck = testManager(cluster.kubeConfig, { health: { port: 0, host: "127.0.0.1" } });
    stuck
      .controller("never-synced")
      .for(absentKind)
      .complete(() => Promise.resolve(undefined));
    await stuck.start();
    const readyz = await fetch(`http://127.0.0.1:${stuck.healthPort!}/readyz`);
    assert.equal(readyz.status, 503);
    assert.match(await readyz.text(), /caches not synced: absents/);
    await stuck.stop();
    assert.equal(await stuck.done, "stopped");
  });
});
