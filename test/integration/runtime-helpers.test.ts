import { strict as assert } from "node:assert";
import { useCluster } from "../fixture/cluster.js";
import {
  addFinalizer,
  configMaps,
  EventRecorder,
  eventsV1,
  KubeClient,
  removeFinalizer,
  setCondition,
  updateStatus,
  type ConfigMap,
} from "../../src/runtime/index.js";
import { mirrors, type Mirror } from "./sample-controller.js";
import { installMirrorCrd, mirror } from "./runtime-fixture.js";

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

  it("writes status only when it changes, recomputing from a fresh copy on conflict", async () => {
    const created = await client.create(mirrors, mirror(cluster.namespace, "status", { k: "v" }));
    const ready = (current: Mirror) => ({
      observedGeneration: current.metadata.generation,
      conditions: setCondition(
        current.status?.conditions,
        { type: "Ready", status: "True", reason: "Done" },
        { observedGeneration: current.metadata.generation, now: Date.now() },
      ),
    });
    const first = await updateStatus(client, mirrors, created, ready);
    assert.equal(first.changed, true);
    const unchanged = await updateStatus(client, mirrors, first.object!, ready);
    assert.equal(unchanged.changed, false);
    assert.equal(
      (await client.get(mirrors, "status", cluster.namespace))?.metadata.resourceVersion,
      first.object?.metadata.resourceVersion,
    );

    // A spec change makes `created` stale twice over; the helper re-reads and computes from generation 2.
    await client.replace(mirrors, { ...first.object!, spec: { data: { k: "w" } } });
    const recomputed = await updateStatus(client, mirrors, created, ready);
    assert.equal(recomputed.changed, true);
    assert.equal(recomputed.object?.status?.observedGeneration, 2);
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
