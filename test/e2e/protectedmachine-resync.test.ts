// Resync on the policy's schedule, end to end on `ksr local`: `kubectl dr resync` orders a
// block-hash resync; under an Automatic policy whose window opens a few minutes later it waits
// (phase Resynchronizing, the reason saying when, the RPO growing) and runs once the window
// opened; under a Manual policy the request itself runs it. Progress and the result in status.
import { strict as assert } from "node:assert";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  protectedMachines,
  replicationPolicies,
  type ProtectedMachine,
  type ReplicationPolicy,
} from "../../src/api/types.js";
import { policyDurationMs } from "../../src/controllers/replicationpolicy/flags.js";
import { KubeClient, namespaces, statefulSets } from "../../src/runtime/index.js";
import { eventually } from "../fixture/eventually.js";
import { eventsAbout, kubectlDr, prepareNamespaces, volumeDir } from "../fixture/machine-suite.js";
import { useOperator } from "../fixture/operator.js";
import { treesDiffer } from "../fixture/tree-compare.js";
import { appendSmall, writerStatefulSet } from "../fixture/writer.js";

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);

describe("resync on the policy's schedule (e2e)", function () {
  this.timeout(15 * 60_000);
  const cluster = useOperator("rsy");
  let client: KubeClient;
  let control: string;
  let ns: string;
  let target: string;
  let windowStart = 0;

  const machine = (name: string, policy: string): ProtectedMachine => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ProtectedMachine",
    metadata: { name, namespace: ns },
    spec: {
      policyRef: { name: policy },
      source: { workloadRef: { kind: "StatefulSet", name } },
      target: { site: "recovery", namespace: target, storageClassName: "standard" },
      paused: false,
    },
  });
  const policy = (name: string, resync: ReplicationPolicy["spec"]["resync"]): ReplicationPolicy => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ReplicationPolicy",
    metadata: { name, namespace: ns },
    spec: {
      rpoThreshold: "10m",
      recoveryPointRetention: "1h",
      crashConsistentFrequency: "5m",
      capture: "Continuous",
      compression: "zstd",
      resync,
    },
  });
  const get = (name: string) => client.get(protectedMachines, name, ns);
  const describe = (name: string) => async () => JSON.stringify((await get(name))?.status ?? {});
  const until = <T>(
    what: string,
    name: string,
    check: (m: ProtectedMachine) => T | undefined,
    timeoutMs = 5 * 60_000,
  ) =>
    eventually(
      what,
      async () => {
        const found = await get(name);
        return found === undefined ? undefined : check(found);
      },
      timeoutMs,
      { describe: describe(name), intervalMs: 2000 },
    );
  const dr = (...args: string[]) => kubectlDr(cluster.state.kubeconfig, ns, ...args);
  const reasons = async (name: string) => (await eventsAbout(client, ns, name)).map((event) => event.reason);
  const dirOf = (namespace: string, claim: string, node: string) =>
    volumeDir(client, cluster.state.dir, namespace, claim, node);
  const writing = (name: string, on: boolean) =>
    on ? writeFile(join(control, name, "write"), "") : rm(join(control, name, "write"), { force: true });

  before(async function () {
    client = new KubeClient(cluster.kubeConfig);
    ns = cluster.namespace;
    target = `${ns}-dr`;
    control = await mkdtemp(join(tmpdir(), "ksr-rsy-ctl-"));
    await prepareNamespaces(client, ns, target);
    // The window opens four minutes from now (whole minutes, UTC) and stays open for half an hour.
    windowStart = Math.ceil(Date.now() / 60_000) * 60_000 + 4 * 60_000;
    const window = { start: hhmm(windowStart), end: hhmm(windowStart + 30 * 60_000), timeZone: "UTC" };
    await client.create(replicationPolicies, policy("windowed", { mode: "Automatic", window }));
    await client.create(replicationPolicies, policy("manual", { mode: "Manual" }));
    for (const name of ["nightly", "manual"]) {
      await client.create(
        statefulSets,
        writerStatefulSet({ name, namespace: ns, mib: 8, control, whileWriting: appendSmall }),
      );
      await client.create(protectedMachines, machine(name, name === "nightly" ? "windowed" : "manual"));
    }
  });
  after(async () => {
    await client.delete(namespaces, { name: target });
    client.close();
    await rm(control, { recursive: true, force: true });
  });

  it("defers a resync until the policy's window opens: Resynchronizing with the reason and time, the RPO growing, then it runs", async () => {
    await until("nightly Protected", "nightly", (m) => (m.status?.phase === "Protected" ? m : undefined));
    assert.ok(Date.now() < windowStart - 30_000, "the window is still closed (the test set it up too slowly)");
    await writing("nightly", true);
    await dr("resync", "nightly");
    const waiting = await until("the resync waiting for the window", "nightly", (m) =>
      m.status?.resync?.state === "Waiting" ? m : undefined,
    );
    assert.equal(waiting.status?.phase, "Resynchronizing");
    assert.equal(waiting.status.resync?.nextStartTime, new Date(windowStart).toISOString().replace(".000", ""));
    const ready = waiting.status.conditions?.find((c) => c.type === "Ready");
    assert.equal(ready?.reason, "ResyncWaitingForWindow");
    assert.match(ready.message, new RegExp(`window \\(${hhmm(windowStart)}-.* UTC, every day\\) opens at `));
    // Changes are not shipped meanwhile: the RPO grows.
    const rpo = (m: ProtectedMachine) => policyDurationMs(m.status?.rpo ?? "0s", "rpo");
    const first = rpo(waiting);
    const later = await until("the RPO to grow by 20 s", "nightly", (m) =>
      m.status?.resync?.state === "Waiting" && rpo(m) >= first + 20_000 ? m : undefined,
    );
    assert.equal(later.status?.phase, "Resynchronizing");
    await writing("nightly", false);
    const done = await until(
      "the resync completed after the window opened",
      "nightly",
      (m) => (m.status?.resync?.state === "Completed" && m.status.phase === "Protected" ? m : undefined),
      10 * 60_000,
    );
    const resync = done.status?.resync;
    assert.ok(resync?.startTime !== undefined && Date.parse(resync.startTime) >= windowStart, JSON.stringify(resync));
    assert.ok((resync.bytesTotal ?? 0) >= 8 * 1024 * 1024, JSON.stringify(resync));
    assert.equal(resync.bytesCompared, resync.bytesTotal);
    const list = await reasons("nightly");
    for (const reason of ["ResyncRequested", "ResyncWaitingForWindow", "ResyncCompleted"])
      assert.ok(list.includes(reason), `events: ${list.join(", ")}`);
    const source = await dirOf(ns, "data-nightly-0", "ksr-primary");
    const replica = await dirOf(target, "data-nightly-0", "ksr-recovery");
    await eventually(
      "the replica to equal the source",
      async () => ((await treesDiffer(source, replica)) === "" ? true : undefined),
      3 * 60_000,
      { describe: () => treesDiffer(source, replica), intervalMs: 2000 },
    );
  });

  it("runs a manual resync on kubectl dr resync and sends only what differs", async () => {
    await until("manual Protected", "manual", (m) => (m.status?.phase === "Protected" ? m : undefined));
    await dr("resync", "manual");
    const requested = (await get("manual"))?.metadata.annotations?.["dr.ksr.io/resync-requested-at"];
    assert.ok(requested !== undefined);
    const done = await until("the manual resync completed", "manual", (m) =>
      m.status?.resync?.state === "Completed" && m.status.phase === "Protected" ? m : undefined,
    );
    const resync = done.status?.resync;
    assert.equal(resync?.requestedAt, requested, "the request it served");
    assert.ok((resync.bytesTotal ?? 0) >= 8 * 1024 * 1024, JSON.stringify(resync));
    // The replica already matched: the comparison read everything and sent almost nothing.
    assert.ok((resync.bytesSent ?? 0) < (resync.bytesTotal ?? 0) / 10, JSON.stringify(resync));
    const list = await reasons("manual");
    assert.ok(list.includes("ResyncRequested") && list.includes("ResyncCompleted"), list.join(", "));
    assert.ok(!list.includes("ResyncWaitingForRequest"), "the request itself was the go-ahead");
  });
});
