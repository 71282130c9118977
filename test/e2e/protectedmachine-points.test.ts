// Points the operator cuts itself, end to end on `ksr local`: exec quiesce hooks run in the
// workload's container through pods/exec around the agents' barrier (app-consistent points), a
// failing hook (no app point, the thaw still runs), and a consistency group of two machines cut
// at one barrier. Driven as a user does: ksr install, kubectl apply, kubectl dr points.
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  protectedMachines,
  replicationPolicies,
  type ProtectedMachine,
  type QuiesceSpec,
  type ReplicationPolicy,
} from "../../src/api/types.js";
import { KubeClient, namespaces, statefulSets } from "../../src/runtime/index.js";
import { eventually } from "../fixture/eventually.js";
import { eventsAbout, kubectlDr, prepareNamespaces } from "../fixture/machine-suite.js";
import { useOperator } from "../fixture/operator.js";
import { appendSmall, writerStatefulSet } from "../fixture/writer.js";

const run = promisify(execFile);

describe("recovery points the operator cuts: exec hooks and consistency groups (e2e)", function () {
  this.timeout(10 * 60_000);
  const cluster = useOperator("pts");
  let client: KubeClient;
  let control: string;
  let ns: string;
  let target: string;

  /** Appends PHASE to /data/hooks.log in the writer's container and syncs it: what a database's CHECKPOINT would flush. */
  const logHook = (phase: string, extra = "") => ({
    exec: { container: "writer", command: ["sh", "-c", `echo ${phase} >> /data/hooks.log && sync${extra}`] },
  });
  const hooks = (
    pre = logHook("freeze"),
    onFailure: QuiesceSpec["onFailure"] = "TakeCrashConsistent",
  ): QuiesceSpec => ({
    pre,
    post: logHook("thaw"),
    timeout: "20s",
    onFailure,
  });
  const machine = (name: string, spec: Partial<ProtectedMachine["spec"]> = {}): ProtectedMachine => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ProtectedMachine",
    metadata: { name, namespace: ns },
    spec: {
      policyRef: { name: "app-points" },
      source: { workloadRef: { kind: "StatefulSet", name } },
      target: { site: "recovery", namespace: target, storageClassName: "standard" },
      paused: false,
      ...spec,
    },
  });
  const get = (name: string) => client.get(protectedMachines, name, ns);
  const describe = (name: string) => async () => JSON.stringify((await get(name))?.status ?? {});
  const dr = (...args: string[]) => kubectlDr(cluster.state.kubeconfig, ns, ...args);
  const hookLog = async (pod: string) => {
    const { stdout } = await run("kubectl", [
      "--kubeconfig",
      cluster.state.kubeconfig,
      "-n",
      ns,
      "exec",
      pod,
      "-c",
      "writer",
      "--",
      "cat",
      "/data/hooks.log",
    ]);
    return stdout.split("\n").filter((line) => line !== "");
  };
  const reasonsFor = (name: string) => eventsAbout(client, ns, name);
  const latestApp = (name: string) =>
    eventually(
      `an app-consistent point of ${name}`,
      async () => {
        const found = await get(name);
        const point = found?.status?.recoveryPoints?.latestAppConsistent;
        return point?.consistency === "AppConsistent" ? point : undefined;
      },
      5 * 60_000,
      { describe: describe(name), intervalMs: 2000 },
    );

  before(async function () {
    client = new KubeClient(cluster.kubeConfig);
    ns = cluster.namespace;
    target = `${ns}-dr`;
    control = await mkdtemp(join(tmpdir(), "ksr-pts-ctl-"));
    await prepareNamespaces(client, ns, target);
    const policy: ReplicationPolicy = {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "ReplicationPolicy",
      metadata: { name: "app-points", namespace: ns },
      spec: {
        rpoThreshold: "5m",
        recoveryPointRetention: "1h",
        crashConsistentFrequency: "5m",
        appConsistentFrequency: "5m",
        capture: "Continuous",
        compression: "zstd",
        resync: { mode: "Automatic" },
      },
    };
    await client.create(replicationPolicies, policy);
    for (const name of ["db", "broken", "web", "api"])
      await client.create(
        statefulSets,
        writerStatefulSet({ name, namespace: ns, mib: 2, control, whileWriting: appendSmall }),
      );
  });
  after(async () => {
    await client.delete(namespaces, { name: target });
    client.close();
    await rm(control, { recursive: true, force: true });
  });

  it("runs exec hooks in the workload's container around the cut and records the point as app-consistent", async () => {
    await client.create(
      protectedMachines,
      machine("db", { source: { workloadRef: { kind: "StatefulSet", name: "db" }, quiesce: hooks() } }),
    );
    const point = await latestApp("db");
    // The freeze ran before the cut and the thaw after it, in the container, once each so far.
    assert.deepEqual((await hookLog("db-0")).slice(0, 2), ["freeze", "thaw"]);
    const found = await get("db");
    const unavailable = found?.status?.conditions?.find((c) => c.type === "AppConsistencyUnavailable");
    assert.equal(unavailable?.status, "False", JSON.stringify(unavailable));
    const shown = await dr("points", "db");
    // One row per point; a point that is also the latest or the oldest is named so on the same row.
    assert.match(shown, new RegExp(`^[a-z, -]*latest app-consistent[a-z, ]*\\s+${point.id}\\s+\\S+ \\(app\\)$`, "m"));
    const taken = (await reasonsFor("db")).find((event) => event.reason === "RecoveryPointTaken");
    assert.ok(taken !== undefined && taken.note.includes(point.id), JSON.stringify(await reasonsFor("db")));
    assert.match(taken.note, /: app across 1 streams/);
  });

  it("takes no app-consistent point when the freeze fails: the thaw still runs, the point is crash-consistent, and the condition says why", async () => {
    const failing = logHook("freeze", "; exit 3");
    await client.create(
      protectedMachines,
      machine("broken", { source: { workloadRef: { kind: "StatefulSet", name: "broken" }, quiesce: hooks(failing) } }),
    );
    const found = await eventually(
      "AppConsistencyUnavailable=QuiesceHookFailed",
      async () => {
        const current = await get("broken");
        const condition = current?.status?.conditions?.find((c) => c.type === "AppConsistencyUnavailable");
        return condition?.reason === "QuiesceHookFailed" ? { current, condition } : undefined;
      },
      5 * 60_000,
      { describe: describe("broken"), intervalMs: 2000 },
    );
    assert.match(found.condition.message, /broken\/broken-0 pre: exit code 3/);
    assert.deepEqual((await hookLog("broken-0")).slice(0, 2), ["freeze", "thaw"]);
    const recorded = await reasonsFor("broken");
    assert.ok(recorded.some((event) => event.reason === "QuiesceHookFailed" && event.type === "Warning"));
    const taken = await eventually("the fallback point", async () =>
      (await reasonsFor("broken")).find((event) => event.reason === "RecoveryPointTaken"),
    );
    // onFailure TakeCrashConsistent (the default): a point anyway, never labelled app.
    assert.doesNotMatch(taken.note, /: app /);
    assert.equal((await get("broken"))?.status?.recoveryPoints?.latestAppConsistent, undefined);
  });

  it("cuts a consistency group's point across both members at one barrier, app-consistent after both members' hooks", async () => {
    for (const name of ["web", "api"])
      await client.create(
        protectedMachines,
        machine(name, {
          consistencyGroup: "shop",
          source: { workloadRef: { kind: "StatefulSet", name }, quiesce: hooks() },
        }),
      );
    const [web, api] = await Promise.all([latestApp("web"), latestApp("api")]);
    assert.equal(web.id, api.id, "one point, shared by the group's members");
    assert.match(web.id, /^shop-\d+-\d+$/);
    assert.equal(web.time, api.time);
    for (const pod of ["web-0", "api-0"]) assert.deepEqual((await hookLog(pod)).slice(0, 2), ["freeze", "thaw"]);
    const grouped = (await reasonsFor("api")).find((event) => event.reason === "GroupPointTaken");
    assert.ok(grouped !== undefined && grouped.note.includes(web.id));
    assert.match(grouped.note, /group point of shop .*: app across 2 streams/);
  });
});
