import { strict as assert } from "node:assert";
import { setTimeout as sleep } from "node:timers/promises";
import { useCluster } from "../fixture/cluster.js";
import { once } from "node:events";
import {
  configMaps,
  findCondition,
  isFenced,
  KubeClient,
  leases,
  type Manager,
  type Reconciler,
} from "../../src/runtime/index.js";
import { microTime } from "../../src/runtime/events.js";
import { addMirrorController, mirrors, newMirrorReconciler } from "../fixture/sample-controller.js";
import { absentKind, installMirrorCrd, mirror, testManager, waitFor } from "../fixture/runtime.js";

const timing = { leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 500 };

describe("runtime: leader election on a Lease", function () {
  this.timeout(60_000);
  const cluster = useCluster("runtime-le");
  let managers: Manager[] = [];
  let client: KubeClient;

  before(async () => {
    await installMirrorCrd(cluster.kubeConfig);
    client = new KubeClient(cluster.kubeConfig);
  });
  afterEach(async () => {
    await Promise.all(managers.map((m) => m.stop()));
    managers = [];
  });
  after(() => {
    client.close();
  });

  /** A manager whose reconciles are counted, so the test knows who did the work. */
  function candidate(identity: string, leaseName: string) {
    const manager = testManager(cluster.kubeConfig, {
      leaderElection: { leaseName, leaseNamespace: cluster.namespace, identity, ...timing },
    });
    const reconciled: string[] = [];
    const sample = newMirrorReconciler(manager, cluster.namespace);
    const counting: Reconciler = (request, context) => {
      reconciled.push(request.name);
      return sample(request, context);
    };
    addMirrorController(manager, { reconciler: counting, namespace: cluster.namespace });
    managers.push(manager);
    return { manager, reconciled };
  }

  /** Someone else takes the lease (as after a network partition long enough for it to expire). */
  async function stealLease(name: string): Promise<void> {
    const lease = (await client.get(leases, name, cluster.namespace))!;
    const now = microTime(Date.now());
    await client.replace(leases, {
      ...lease,
      spec: {
        holderIdentity: "thief",
        leaseDurationSeconds: 60,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: 1,
      },
    });
  }

  const isReady = async (name: string) =>
    findCondition((await client.get(mirrors, name, cluster.namespace))?.status?.conditions, "Ready")?.status === "True";
  const leaderGauge = async (manager: Manager) =>
    (await manager.metrics.leaderStatus.get()).values.find((value) => value.value === 1) !== undefined;

  it("elects exactly one leader, and hands over within the lease duration when it stops", async () => {
    const a = candidate("candidate-a", "handover");
    const b = candidate("candidate-b", "handover");
    await Promise.all([a.manager.start(), b.manager.start()]);
    await waitFor("a leader", () => a.manager.isLeader || b.manager.isLeader);
    // Several retry periods later there is still exactly one.
    await sleep(4 * timing.retryPeriodMs);
    assert.equal([a, b].filter((c) => c.manager.isLeader).length, 1);
    const [leader, follower] = a.manager.isLeader ? [a, b] : [b, a];
    assert.equal(
      (await client.get(leases, "handover", cluster.namespace))?.spec?.holderIdentity,
      leader.manager.identity,
    );
    assert.ok(await leaderGauge(leader.manager));
    assert.ok(!(await leaderGauge(follower.manager)));

    await client.create(mirrors, mirror(cluster.namespace, "first", { k: "v" }));
    await waitFor("first Ready", () => isReady("first"));
    assert.ok(leader.reconciled.includes("first"));
    assert.equal(follower.reconciled.length, 0, "a follower never reconciles");

    const stoppedAt = performance.now();
    await leader.manager.stop();
    await waitFor("the follower to take over", () => follower.manager.isLeader, timing.leaseDurationMs);
    const handoverMs = performance.now() - stoppedAt;
    assert.ok(handoverMs < timing.leaseDurationMs, `handover took ${Math.round(handoverMs)} ms`);

    await client.create(mirrors, mirror(cluster.namespace, "second", { k: "v" }));
    await waitFor("second Ready", () => isReady("second"));
    assert.ok(follower.reconciled.includes("second"));
    assert.equal((await client.get(leases, "handover", cluster.namespace))?.spec?.leaseTransitions, 1);
  });

  it("stops every controller when it loses the lease", async () => {
    const only = candidate("candidate-c", "stolen");
    await only.manager.start();
    await waitFor("leadership", () => only.manager.isLeader);
    await client.create(mirrors, mirror(cluster.namespace, "before-loss", { k: "v" }));
    await waitFor("before-loss Ready", () => isReady("before-loss"));

    await stealLease("stolen");
    const lostAt = performance.now();
    assert.equal(await only.manager.done, "lost-leadership");
    const lostAfterMs = performance.now() - lostAt;
    assert.ok(
      lostAfterMs <= timing.renewDeadlineMs + timing.retryPeriodMs * 2,
      `noticed after ${Math.round(lostAfterMs)} ms`,
    );
    assert.ok(!(await leaderGauge(only.manager)));

    const reconcilesAtLoss = only.reconciled.length;
    await client.create(mirrors, mirror(cluster.namespace, "after-loss", { k: "v" }));
    await sleep(1500);
    assert.equal(only.reconciled.length, reconcilesAtLoss, "no reconcile after losing the lease");
    assert.equal(await isReady("after-loss"), false);
    assert.equal(
      (await client.get(leases, "stolen", cluster.namespace))?.spec?.holderIdentity,
      "thief",
      "nothing released a lease it no longer held",
    );
  });

  it("aborts a reconcile in flight when the lease is lost, and its writes no longer reach the API", async () => {
    const manager = testManager(cluster.kubeConfig, {
      leaderElection: { leaseName: "fenced", leaseNamespace: cluster.namespace, identity: "fenced", ...timing },
    });
    managers.push(manager);
    let started: () => void = () => undefined;
    const inFlight = new Promise<void>((resolve) => (started = resolve));
    const attempts: unknown[] = [];
    manager
      .controller("ignores-the-signal")
      .for(mirrors, { scope: { namespace: cluster.namespace } })
      .complete(async ({ name }, context) => {
        assert.equal(context.clock, manager.clock, "reconciles see the manager's clock");
        started();
        await once(context.signal, "abort");
        // A reconciler that keeps going regardless: the client it was given refuses.
        const late = { metadata: { name: `${name}-after-loss`, namespace: cluster.namespace } };
        attempts.push(await manager.client.create(configMaps, late).catch((error: unknown) => error));
        return undefined;
      });
    await manager.start();
    await waitFor("leadership", () => manager.isLeader);
    await client.create(mirrors, mirror(cluster.namespace, "in-flight", { k: "v" }));
    await inFlight;

    await stealLease("fenced");
    assert.equal(await manager.done, "lost-leadership");
    assert.equal(attempts.length, 1);
    assert.ok(isFenced(attempts[0]), `the write was refused, got ${String(attempts[0])}`);
    assert.equal(await client.get(configMaps, "in-flight-after-loss", cluster.namespace), undefined);
  });

  it("keeps renewing while its controllers still wait for caches that cannot sync", async () => {
    const waiting = testManager(cluster.kubeConfig, {
      leaderElection: { leaseName: "unsynced", leaseNamespace: cluster.namespace, identity: "waiting", ...timing },
    });
    managers.push(waiting);
    waiting
      .controller("never-synced")
      .for(absentKind, { scope: { namespace: cluster.namespace } })
      .complete(() => Promise.resolve(undefined));
    await waiting.start();
    await waitFor("leadership", () => waiting.isLeader);
    const rival = candidate("rival", "unsynced");
    await rival.manager.start();
    await sleep(2 * timing.leaseDurationMs);
    assert.equal(waiting.cache.synced(), false, "the cache of a kind that does not exist never syncs");
    assert.equal(rival.manager.isLeader, false, "the lease was renewed all along");
    assert.equal((await client.get(leases, "unsynced", cluster.namespace))?.spec?.holderIdentity, "waiting");
  });
});
