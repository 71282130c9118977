// Recovery of data end to end on `ksr local`, as a user drives it: the operator installed by
// `ksr install --wait`, a StatefulSet that logs a timestamped line every 0.2 s (and serves its
// volume over HTTP), `kubectl apply`-style creation of a policy and a machine, and `kubectl dr`
// for the drill, the unplanned failover after `ksr local site down primary`, the change of
// recovery point and the commit. Each case has a namespace (and machine) of its own.
import { strict as assert } from "node:assert";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { failoverRuns, protectedMachines, replicationPolicies, type FailoverRun } from "../../src/api/types.js";
import { apiDurationMs } from "../../src/util/duration.js";
import {
  KubeClient,
  namespaces,
  nodes,
  pods,
  services,
  statefulSets,
  type Pod,
  type StatefulSet,
} from "../../src/runtime/index.js";
import { readContainerLog } from "../../src/local/node/logs.js";
import { eventually } from "../fixture/eventually.js";
import { fastPolicy, primaryStatefulSet } from "../fixture/writer.js";
import { ksr } from "../fixture/ksr-cli.js";
import { kubectlDr } from "../fixture/kubectl-dr.js";
import { protectedMachine, useRecoverySuite } from "../fixture/recovery-suite.js";
import { activeStep, killLeaderAt } from "../fixture/leader-killer.js";
import { prober, proberSettlesOn } from "./network-probers.js";

interface Line {
  node: string;
  ms: number;
  text: string;
}

/** The writer's log: "NODE UNIX-NANOSECONDS" per line; a torn last line (a cut mid-write) is dropped. */
function parseLog(text: string): Line[] {
  return text
    .split("\n")
    .map((line) => /^(\S+) ([0-9]{19})$/.exec(line))
    .flatMap((match) =>
      match === null
        ? []
        : [{ node: match[1] ?? "", ms: Number(BigInt(match[2] ?? "0") / 1_000_000n), text: match[0] }],
    );
}

describe("Recovery of data: drill, unplanned failover, change of point (e2e)", function () {
  this.timeout(15 * 60_000);
  const cluster = useRecoverySuite("rd");
  let client: KubeClient;

  const dr = (args: string[]) => kubectlDr(cluster.state.kubeconfig, args);
  const site = (...args: string[]) => ksr(["local", "site", ...args, "--dir", cluster.state.dir]);

  const writer = (namespace: string): StatefulSet =>
    primaryStatefulSet({
      name: "db",
      namespace,
      container: {
        name: "db",
        image: "debian:12",
        command: [
          "bash",
          "-c",
          'trap "exit 0" TERM; python3 -m http.server 8080 --directory /data >/dev/null 2>&1 & ' +
            'while true; do echo "$NODE $(date +%s%N)" >> /data/log; sleep 0.2; done',
        ],
        env: [{ name: "NODE", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } }],
        ports: [{ name: "http", containerPort: 8080 }],
        volumeMounts: [{ name: "data", mountPath: "/data" }],
      },
      storage: "1Gi",
    });

  /** A namespace with the writer, its Service, a policy and a machine replicating to NAMESPACE-dr. */
  async function protectWriter(namespace: string): Promise<void> {
    await cluster.openNamespaces(namespace, `${namespace}-dr`);
    await client.create(replicationPolicies, fastPolicy(namespace));
    await client.create(statefulSets, writer(namespace));
    await client.create(services, {
      metadata: { name: "db", namespace },
      spec: { selector: { app: "db" }, ports: [{ name: "http", port: 8080, targetPort: "http" }] },
    });
    await client.create(protectedMachines, protectedMachine({ name: "db", namespace, target: `${namespace}-dr` }));
  }

  const machineOf = (namespace: string) => client.get(protectedMachines, "db", namespace);
  const withPoints = (namespace: string, count: number) =>
    cluster.untilMachine(namespace, "db", `Protected with ${count} recovery points`, (found) =>
      found.status?.phase === "Protected" && (found.status.recoveryPoints?.count ?? 0) >= count ? found : undefined,
    );
  const runOf = (namespace: string, name: string) => client.get(failoverRuns, name, namespace);
  const logIn = async (namespace: string, node: string) =>
    parseLog(await readFile(join(await cluster.volumeDir(namespace, "data-db-0", node), "log"), "utf8"));
  const podIP = async (namespace: string, name: string) =>
    eventually(`pod ${namespace}/${name} running with an IP`, async () => {
      const pod = await client.get(pods, name, namespace);
      return pod?.status?.phase === "Running" ? pod.status.podIP : undefined;
    });
  /** The recovered lines of the source: a prefix of the source's log, nothing after the point. */
  const assertRecoveredTo = (recovered: Line[], source: Line[], pointTime: string, what: string) => {
    const replicated = recovered.filter((line) => line.node === "ksr-primary");
    assert.ok(replicated.length > 0, `${what}: no line of the source`);
    assert.deepEqual(
      replicated.map((line) => line.text),
      source.slice(0, replicated.length).map((line) => line.text),
      `${what}: the source's lines are not a prefix of its log`,
    );
    const last = replicated.at(-1)?.ms ?? 0;
    // A point's time is whole seconds; the cut is at or after the last line it holds.
    assert.ok(last < Date.parse(pointTime) + 1000, `${what}: line at ${last} is after the point (${pointTime})`);
    return last;
  };

  /** The hydration pods' output, for a failure's message. */
  const hydrationLogs = async (namespace: string) => {
    const found = await client.list(pods, { namespace, labelSelector: "app.kubernetes.io/component=hydrator" });
    return found.items
      .flatMap((pod) =>
        (pod.spec?.containers ?? []).map((container) => {
          try {
            const text = readContainerLog({
              dir: cluster.state.dir,
              namespace,
              pod: pod.metadata.name,
              container: container.name,
            });
            return `${pod.metadata.name}/${container.name}:\n${text.slice(-2000)}`;
          } catch (error) {
            return `${pod.metadata.name}/${container.name}: ${(error as Error).message}`;
          }
        }),
      )
      .join("\n");
  };

  before(async () => {
    client = cluster.client;
    await Promise.all([protectWriter(`${cluster.namespace}-drill`), protectWriter(`${cluster.namespace}-unpl`)]);
  });
  after(async () => {
    // Whatever happened, the next suite gets both sites back.
    await site("up", "primary");
  });

  it("drills a chosen point into a namespace of its own while replication goes on, isolated, and cleans up exactly what it made", async () => {
    const ns = `${cluster.namespace}-drill`;
    const protectedMachine = await withPoints(ns, 2);
    const chosen = protectedMachine.status?.recoveryPoints?.oldest;
    assert.ok(chosen !== undefined);
    const appliedBefore = protectedMachine.status?.volumes?.[0]?.lastAppliedSequence ?? 0;

    const drill = await dr(["test", "--machine", "db", "-n", ns, "--point", chosen.id, "--name", "drill1", "--wait"]);
    if (drill.code !== 0)
      assert.fail(
        `kubectl dr test failed:\n${drill.stdout}\n${drill.stderr}\n${await hydrationLogs("ksr-drill-drill1")}`,
      );
    const run = (await runOf(ns, "drill1")) as FailoverRun;
    assert.equal(run.status?.phase, "Succeeded");
    assert.deepEqual(
      run.status.recoveryPoints?.map((point) => [point.machine, point.id]),
      [["db", chosen.id]],
    );
    const drillNs = run.status.drillNamespace ?? "";
    assert.equal(drillNs, "ksr-drill-drill1");
    const hydrateSteps = run.status.steps?.filter((step) => step.action === "Recover") ?? [];
    assert.equal(hydrateSteps.length, 1);
    process.stdout.write(
      `      drill RTO ${run.status.rto ?? "?"} (kubectl dr test --machine db --point ${chosen.id} --wait)\n`,
    );

    // The drill holds the chosen point; the source (and the replica) went on past it.
    const drilled = await logIn(drillNs, "ksr-recovery");
    const source = await logIn(ns, "ksr-primary");
    const last = assertRecoveredTo(drilled, source, chosen.time, "drill");
    assert.ok((source.at(-1)?.ms ?? 0) > last + 1000, "the source has lines after the drilled point");
    // Replication went on during the drill: the replica's applied sequence kept advancing.
    const advanced = await eventually("the replica's applied sequence to advance", async () => {
      const seq = (await machineOf(ns))?.status?.volumes?.[0]?.lastAppliedSequence ?? 0;
      return seq > appliedBefore ? seq : undefined;
    });
    process.stdout.write(`      replica applied seq during the drill: ${appliedBefore} -> ${advanced}\n`);
    const replica = await logIn(`${ns}-dr`, "ksr-recovery");
    assert.ok(replica.length > drilled.length, "the replica moved on past the drilled point");

    // The workload runs there with a copy of its Service; isolation holds both ways.
    const drillIP = await podIP(drillNs, "db-0");
    const sourceIP = await podIP(ns, "db-0");
    assert.ok((await client.get(services, "db", drillNs)) !== undefined, "the Service is copied into the drill");
    const targets = { drill: `http://${drillIP}:8080/log`, source: `http://${sourceIP}:8080/log` };
    for (const [name, namespace] of [
      ["outside", ns],
      ["inside", drillNs],
    ] as const) {
      const pod = prober(name, "recovery", { app: "probe" }, targets);
      if (pod.metadata !== undefined) pod.metadata.namespace = namespace;
      await client.create(pods, pod as Pod);
    }
    await proberSettlesOn(cluster.state.dir, ns, "outside", { drill: "blocked", source: "ok" });
    await proberSettlesOn(cluster.state.dir, drillNs, "inside", { drill: "ok", source: "blocked" });

    const cleanup = await dr(["cleanup", "drill1", "-n", ns, "--wait"]);
    assert.equal(cleanup.code, 0, `kubectl dr cleanup failed:\n${cleanup.stdout}\n${cleanup.stderr}`);
    assert.equal((await runOf(ns, "drill1"))?.status?.phase, "CleanedUp");
    await eventually("the drill namespace to be gone", async () =>
      (await client.get(namespaces, drillNs)) === undefined ? true : undefined,
    );
    // Nothing of the drill is left elsewhere, and production is untouched.
    for (const namespace of [ns, `${ns}-dr`]) {
      const labelled = await client.list(pods, { namespace, labelSelector: "dr.ksr.io/failover-run=drill1" });
      assert.equal(labelled.items.length, 0);
    }
    assert.equal((await client.get(statefulSets, "db", ns))?.spec?.replicas, 1);
    assert.equal((await machineOf(ns))?.spec.paused, false);
  });

  it("fails over unplanned after `ksr local site down primary`, changes the point, commits, and the returning source stays fenced", async () => {
    const ns = `${cluster.namespace}-unpl`;
    // The machine's status lists no points once its source is stopped: what it showed before.
    const points = (await withPoints(ns, 2)).status?.recoveryPoints;
    const down = await site("down", "primary", "--mode", "power");
    assert.equal(down.code, 0, down.stderr);
    const source = await logIn(ns, "ksr-primary");
    const lastWrite = source.at(-1)?.ms ?? 0;

    // The leader dies in the rollback of each recovery (the failover's and the change's) and while
    // the change stops the recovered workload; every step still runs once.
    const killer = await killLeaderAt(client, {
      operatorNamespace: cluster.operatorNamespace,
      namespace: ns,
      name: "uf",
      moments: ["rollback", "stop", "change rollback"],
      momentOf: (found, next) => {
        const active = activeStep(found);
        const change = active?.name.startsWith("change-") === true;
        const moment =
          active?.action === "Stop"
            ? "stop"
            : active?.action === "Recover"
              ? change
                ? "change rollback"
                : "rollback"
              : undefined;
        return moment === next ? moment : undefined;
      },
    });
    const failover = await dr(["failover", "--machine", "db", "-n", ns, "--unplanned", "--name", "uf", "--wait"]);
    assert.equal(failover.code, 0, `kubectl dr failover --unplanned failed:\n${failover.stdout}\n${failover.stderr}`);
    let run = (await runOf(ns, "uf")) as FailoverRun;
    assert.equal(run.status?.phase, "Succeeded");
    const used = run.status.recoveryPoints?.[0];
    assert.ok(used !== undefined);
    assert.ok(
      Date.parse(used.time) >= Date.parse(points?.latest?.time ?? ""),
      `LatestProcessed ${used.time} is the newest point (${points?.latest?.time ?? ""} or one after it)`,
    );
    const recovered = await eventually("the recovered workload writing", async () => {
      const lines = await logIn(`${ns}-dr`, "ksr-recovery");
      return lines.some((line) => line.node === "ksr-recovery") ? lines : undefined;
    });
    const lastRecovered = assertRecoveredTo(recovered, source, used.time, "unplanned");
    // The window the run reports: the last change the recovery site held minus the point; the
    // writer's log bounds it: at most everything the source wrote after the recovered line.
    const window = apiDurationMs(run.status.dataLossWindow ?? "") ?? -1;
    const lostByLog = lastWrite - lastRecovered;
    process.stdout.write(
      `      unplanned RTO ${run.status.rto ?? "?"}, data-loss window ${run.status.dataLossWindow ?? "?"}; writer's log: ${lostByLog} ms after the recovered line\n`,
    );
    assert.ok(window >= 0 && window <= lostByLog + 1000, `window ${window} ms, log ${lostByLog} ms`);

    // Change to the oldest point, then commit.
    const older = points?.oldest;
    assert.ok(older !== undefined && older.id !== used.id);
    const change = await dr(["change-point", "uf", "-n", ns, "--point", older.id, "--wait"]);
    assert.equal(change.code, 0, `kubectl dr change-point failed:\n${change.stdout}\n${change.stderr}`);
    run = await eventually("the change of point to finish", async () => {
      const current = await runOf(ns, "uf");
      const steps = current?.status?.steps?.filter((step) => step.name.startsWith("change-1/")) ?? [];
      return current?.status?.phase === "Succeeded" && steps.length > 0 && steps.every((s) => s.phase === "Succeeded")
        ? current
        : undefined;
    });
    assert.equal(run.status?.recoveryPoints?.[0]?.id, older.id);
    const changed = await eventually("the workload writing again on the older point", async () => {
      const lines = await logIn(`${ns}-dr`, "ksr-recovery");
      return lines.some((line) => line.node === "ksr-recovery") ? lines : undefined;
    });
    const lastChanged = assertRecoveredTo(changed, source, older.time, "change of point");
    assert.ok(lastChanged < lastRecovered, "the change moved to an older point");
    killer.stop();
    assert.deepEqual(
      killer.kills.map((kill) => kill.step),
      ["rollback", "stop", "change rollback"],
    );
    const recorded = (run.status.steps ?? []).map((step) => step.name);
    assert.equal(new Set(recorded).size, recorded.length, `a step recorded twice: ${recorded.join(", ")}`);
    for (const step of run.status.steps ?? []) {
      if (step.phase === "Skipped") continue;
      assert.equal(step.phase, "Succeeded", step.name);
      assert.equal(step.attempts, 1, `${step.name} started once`);
    }
    const commit = await dr(["commit", "uf", "-n", ns, "--wait"]);
    assert.equal(commit.code, 0, `kubectl dr commit failed:\n${commit.stdout}\n${commit.stderr}`);
    await eventually("the run committed", async () =>
      (await runOf(ns, "uf"))?.status?.phase === "Committed" ? true : undefined,
    );

    // The source comes back: it must not write into the replica the recovered workload now uses.
    const up = await site("up", "primary");
    assert.equal(up.code, 0, up.stderr);
    await eventually(
      "the primary node Ready",
      async () =>
        (await client.get(nodes, "ksr-primary"))?.status?.conditions?.some(
          (c) => c.type === "Ready" && c.status === "True",
        ) === true
          ? true
          : undefined,
      3 * 60_000,
    );
    await eventually(
      "no source or agent pod left on the returned site",
      async () => {
        const left = (await client.list(pods, { namespace: ns })).items.filter(
          (pod) =>
            pod.metadata.labels?.app === "db" || pod.metadata.labels?.["app.kubernetes.io/component"] === "agent",
        );
        return left.length === 0 ? true : undefined;
      },
      3 * 60_000,
    );
    assert.equal((await client.get(statefulSets, "db", ns))?.spec?.replicas, 0);
    const after = await logIn(`${ns}-dr`, "ksr-recovery");
    const fromSource = after.filter((line) => line.node === "ksr-primary");
    assert.equal(fromSource.at(-1)?.ms, lastChanged, "no line of the returned source reached the replica");
  });
});
