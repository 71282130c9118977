import { strict as assert } from "node:assert";
import { useCluster } from "../fixture/cluster.js";
import {
  addFinalizer,
  configMaps,
  EventRecorder,
  eventsV1,
  KubeClient,
  removeFinalizer,
  reconcileWithStatus,
  StatusWriter,
  systemClock,
  findCondition,
  type ConfigMap,
} from "../../src/runtime/index.js";
import { mirrors, type Mirror } from "../fixture/sample-controller.js";
import { installMirrorCrd, mirror } from "../fixture/runtime.js";

describe("runtime: finalizer, status and event helpers on a real API server", function () {
  this.timeout(30_000);
  const cluster = useCluster("runtime-help");
  let client: KubeClient;

  before(async () => {
    await installMirrorCrd(cluster.kubeConfig);
    client = new KubeClient(cluster.kubeConfig);
  });
  after(() => {
    client.close();
  });

  it("adds and removes finalizers from stale copies without losing anyone else's", async () => {
    const created = await client.create(configMaps, { metadata: { name: "fin", namespace: cluster.namespace } });
    // Two controllers act on the same stale copy at once: one write conflicts, is re-read and retried.
    const results = await Promise.all([
      addFinalizer(client, configMaps, created, "a.example.com/one"),
      addFinalizer(client, configMaps, created, "b.example.com/two"),
    ]);
    assert.ok(results.every((result) => result.changed));
    const both = await client.get(configMaps, "fin", cluster.namespace);
    assert.deepEqual([...(both?.metadata.finalizers ?? [])].sort(), ["a.example.com/one", "b.example.com/two"]);

    const again = await addFinalizer(client, configMaps, both!, "a.example.com/one");
    assert.equal(again.changed, false, "already there: no write");

    // A copy from before b's finalizer was added: a blind write of its list minus a would drop b's.
    const onlyA = await client.create(configMaps, {
      metadata: { name: "fin2", namespace: cluster.namespace, finalizers: ["a.example.com/one"] },
    });
    await addFinalizer(client, configMaps, onlyA, "b.example.com/two");
    const removed = await removeFinalizer(client, configMaps, onlyA, "a.example.com/one");
    assert.deepEqual(removed.object?.metadata.finalizers, ["b.example.com/two"]);
    // Nobody else removes these test finalizers, and they would hold up the namespace's deletion.
    for (const name of ["fin", "fin2"]) {
      await client.patch(
        configMaps,
        { name, namespace: cluster.namespace },
        { metadata: { finalizers: null } },
        "merge",
      );
    }
  });

  it("writes status once, only when it changes, with the generation reconciled even after a conflict", async () => {
    const created = await client.create(mirrors, mirror(cluster.namespace, "status", { k: "v" }));
    const ready = (object: Mirror) => {
      const writer = new StatusWriter(client, mirrors, object, systemClock);
      writer.set({ copiedKeys: 1 });
      writer.condition({ type: "Ready", status: "True", reason: "Done" });
      return writer;
    };
    const firstWriter = ready(created);
    const first = await firstWriter.write();
    assert.equal(first.changed, true);
    assert.equal(first.object?.status?.observedGeneration, 1);
    await assert.rejects(firstWriter.write(), /written already/);
    const unchanged = await ready(first.object).write();
    assert.equal(unchanged.changed, false);
    assert.equal(
      (await client.get(mirrors, "status", cluster.namespace))?.metadata.resourceVersion,
      first.object.metadata.resourceVersion,
    );

    // A spec change while generation 1 was being reconciled: the write conflicts, is applied to the fresh
    // copy, and still says generation 1 was observed (generation 2 has not been reconciled yet).
    await client.replace(mirrors, { ...first.object, spec: { data: { k: "w" } } });
    const stale = ready(first.object);
    stale.condition({ type: "Ready", status: "False", reason: "Stale" });
    const afterConflict = await stale.write();
    assert.equal(afterConflict.changed, true);
    assert.equal(afterConflict.object?.metadata.generation, 2);
    assert.equal(afterConflict.object.status?.observedGeneration, 1);
    const condition = findCondition(afterConflict.object.status.conditions, "Ready");
    assert.equal(condition?.reason, "Stale");
    assert.equal(condition.observedGeneration, 1);
  });

  it("writes status when the reconcile body fails, and not at all once the signal aborted", async () => {
    const created = await client.create(mirrors, mirror(cluster.namespace, "deferred", { k: "v" }));
    const failing = new StatusWriter(client, mirrors, created, systemClock);
    await assert.rejects(
      reconcileWithStatus(failing, new AbortController().signal, () => {
        failing.condition({ type: "Ready", status: "False", reason: "CopyFailed", message: "boom" });
        return Promise.reject(new Error("boom"));
      }),
      /boom/,
    );
    const afterFailure = await client.get(mirrors, "deferred", cluster.namespace);
    assert.equal(findCondition(afterFailure?.status?.conditions, "Ready")?.reason, "CopyFailed");

    const stopped = new AbortController();
    const late = new StatusWriter(client, mirrors, afterFailure!, systemClock);
    await reconcileWithStatus(late, stopped.signal, () => {
      late.condition({ type: "Ready", status: "True", reason: "Done" });
      stopped.abort();
      return Promise.resolve(undefined);
    });
    const afterAbort = await client.get(mirrors, "deferred", cluster.namespace);
    assert.equal(afterAbort?.metadata.resourceVersion, afterFailure?.metadata.resourceVersion, "nothing written");
  });

  it("records events.k8s.io/v1 Events and folds repeats into one series", async () => {
    const regarding = await client.create(configMaps, {
      metadata: { name: "evented", namespace: cluster.namespace },
    } satisfies ConfigMap);
    const recorder = new EventRecorder(client, { reportingController: "runtime-test", reportingInstance: "test-1" });
    for (let i = 0; i < 4; i++) {
      await recorder.record(regarding, {
        type: "Warning",
        reason: "Retrying",
        action: "Reconcile",
        note: "still failing",
      });
    }
    await recorder.record(regarding, { type: "Normal", reason: "Recovered", action: "Reconcile", note: "fine again" });
    await recorder.record(regarding, { type: "Normal", reason: "not camel case", action: "Reconcile", note: "" });
    const events = (await client.list(eventsV1, { namespace: cluster.namespace })).items.filter(
      (event) => event.regarding.uid === regarding.metadata.uid,
    );
    const summary = events.map((event) => `${event.type}/${event.reason}/${event.series?.count ?? 1}`).sort();
    assert.deepEqual(summary, ["Normal/Recovered/1", "Warning/Retrying/4"]);
    const retrying = events.find((event) => event.reason === "Retrying");
    assert.equal(retrying?.reportingController, "runtime-test");
    assert.equal(retrying.regarding.kind, "ConfigMap");
  });
});
