// Reprotect of a plan end to end on `ksr local`, driven by `kubectl dr` as a user does: two writer
// StatefulSets in one namespace, one RecoveryPlan. Reprotect turns both around into ONE master
// target on the original site (each into its own original volume, compared byte for byte), and
// releases the points and journal of the epoch it ended at the old master target. A drill of the
// reversed machine hydrates from that master target at the original site, while replication goes
// on, and its cleanup leaves nothing. Failback of both and a second reprotect close the ASR cycle.
// With KSR_E2E_TRANSCRIPT=FILE the `kubectl dr` commands and what they printed are appended there
// (the README's round trip is taken from such a run).
import { strict as assert } from "node:assert";
import { appendFile, mkdtemp, readdir, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  failoverRuns,
  protectedMachines,
  recoveryPlans,
  replicationPolicies,
  type FailoverRun,
  type ProtectedMachine,
} from "../../src/api/types.js";
import { journalClaimName, masterTargetName, streamId } from "../../src/controllers/protectedmachine/names.js";
import { epochStreamId } from "../../src/controllers/protectedmachine/direction.js";
import {
  deployments,
  jobs,
  KubeClient,
  namespaces,
  persistentVolumeClaims,
  pods,
  services,
  statefulSets,
} from "../../src/runtime/index.js";
import { eventually } from "../fixture/eventually.js";
import { kubectlDr } from "../fixture/kubectl-dr.js";
import { prepareNamespaces, volumeDir as volumeDirOf } from "../fixture/machine-suite.js";
import { activeStep, killLeaderAt } from "../fixture/leader-killer.js";
import { useOperator } from "../fixture/operator.js";
import { treesDiffer } from "../fixture/tree-compare.js";
import { appendSmall, fastPolicy, writerStatefulSet } from "../fixture/writer.js";

const nodeOf = { primary: "ksr-primary", recovery: "ksr-recovery" } as const;
type Site = keyof typeof nodeOf;
const writers = ["alpha", "beta"] as const;
const plan = "pair";
const claimOf = (name: string) => `data-${name}-0`;

describe("reprotect of a plan: two machines, one reverse master target, drills and release of old points (e2e)", function () {
  this.timeout(15 * 60_000);
  const cluster = useOperator("rpp");
  let client: KubeClient;
  let control: string;
  let ns: string;
  let target: string;

  const transcript = async (command: string, output: string) => {
    const file = process.env.KSR_E2E_TRANSCRIPT;
    if (file !== undefined && file !== "") await appendFile(file, `$ ${command}\n${output}`);
  };
  /** `kubectl -n NS dr ARGS`, recorded in the transcript. */
  const dr = async (...args: string[]) => {
    const result = await kubectlDr(cluster.state.kubeconfig, ["-n", ns, ...args]);
    await transcript(`kubectl -n ${ns} dr ${args.join(" ")}`, result.stdout + result.stderr);
    return result;
  };
  /** A `kubectl dr` that creates a run and waits for it: the run's name. */
  const runDr = async (...args: string[]): Promise<string> => {
    const result = await dr(...args);
    assert.equal(result.code, 0, `kubectl dr ${args.join(" ")}:\n${result.stdout}\n${result.stderr}`);
    const name = /failoverrun\.dr\.ksr\.io\/(\S+) created/.exec(result.stdout)?.[1];
    assert.ok(name !== undefined, result.stdout);
    return name;
  };
  /** The machines, plans and runs as `kubectl dr status` shows them, for the transcript. */
  const status = async () => {
    assert.equal((await dr("status")).code, 0);
  };

  const machine = (name: string) => client.get(protectedMachines, name, ns);
  const waitMachines = (what: string, ready: (found: ProtectedMachine) => boolean) =>
    Promise.all(
      writers.map((name) =>
        eventually(
          `ProtectedMachine ${name}: ${what}`,
          async () => {
            const found = await machine(name);
            return found !== undefined && found.status?.observedGeneration === found.metadata.generation && ready(found)
              ? found
              : undefined;
          },
          5 * 60_000,
          { describe: async () => JSON.stringify((await machine(name))?.status ?? {}), intervalMs: 1000 },
        ),
      ),
    );
  const volumeDir = (claim: string, namespace: string, site: Site) =>
    volumeDirOf(client, cluster.state.dir, namespace, claim, nodeOf[site]);
  /** Both writers' volumes hold the same bytes at the two ends (eventually: replication is asynchronous). */
  const volumesEqual = async (from: [string, Site], to: [string, Site]) => {
    for (const name of writers) {
      const source = await volumeDir(claimOf(name), ...from);
      const replica = await volumeDir(claimOf(name), ...to);
      await eventually(
        `${name}: ${from.join("@")} and ${to.join("@")} to hold the same bytes`,
        async () => ((await treesDiffer(source, replica)) === "" ? true : undefined),
        3 * 60_000,
        { describe: () => treesDiffer(source, replica), intervalMs: 2000 },
      );
    }
  };
  const write = async (seconds: number, names: readonly string[] = writers) => {
    for (const name of names) await writeFile(join(control, name, "write"), "");
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    for (const name of names) await unlink(join(control, name, "write"));
    await new Promise((resolve) => setTimeout(resolve, 500)); // the round in progress ends
  };
  const runningOn = (namespace: string, site: Site) =>
    Promise.all(
      writers.map((name) =>
        eventually(`pod ${namespace}/${name}-0 running on ${nodeOf[site]}`, async () => {
          const pod = await client.get(pods, `${name}-0`, namespace);
          return pod?.status?.phase === "Running" && pod.spec?.nodeName === nodeOf[site] ? pod : undefined;
        }),
      ),
    );
  const reverseStepMessages = async (run: string) =>
    ((await client.get(failoverRuns, run, ns))?.status?.steps ?? [])
      .filter((step) => step.action === "Reverse")
      .map((step) => step.message ?? "");
  /** A commit releases the recovered machines' points: at least one of each writer. */
  const assertCommitReleased = async (run: string) => {
    const commit = ((await client.get(failoverRuns, run, ns))?.status?.steps ?? []).find((s) => s.action === "Commit");
    const released = Number(/; (\d+) recovery points? released with their journal;/.exec(commit?.message ?? "")?.[1]);
    assert.ok(
      released >= writers.length,
      `the commit released ${released} points: ${commit?.message ?? "no commit step"}`,
    );
  };
  /** Bytes of a stream's journal segments and moved-out entries on a master target's journal claim. */
  const journalBytes = async (masterTarget: string, namespace: string, site: Site, stream: string) => {
    const root = join(await volumeDir(journalClaimName(masterTarget), namespace, site), "journals", stream);
    let total = 0;
    for (const part of ["segments", "objects"]) {
      const names = await readdir(join(root, part)).catch(() => [] as string[]);
      for (const name of names) total += (await stat(join(root, part, name))).size;
    }
    return total;
  };
  /** Waits for a point of every writer taken after `since` (ms). */
  const pointsAfter = (since: number) =>
    waitMachines(`a recovery point after ${new Date(since).toISOString()}`, (found) => {
      const latest = found.status?.recoveryPoints?.latest?.time;
      return latest !== undefined && Date.parse(latest) > since;
    });

  before(async () => {
    client = new KubeClient(cluster.kubeConfig);
    control = await mkdtemp(join(tmpdir(), "ksr-rpp-ctl-"));
    ns = cluster.namespace;
    target = `${ns}-dr`;
    await prepareNamespaces(client, ns, target);
    await client.create(replicationPolicies, fastPolicy(ns));
    for (const name of writers) {
      await client.create(
        statefulSets,
        writerStatefulSet({ name, namespace: ns, mib: 4, control, whileWriting: appendSmall }),
      );
      await client.create(protectedMachines, {
        apiVersion: "dr.ksr.io/v1alpha1",
        kind: "ProtectedMachine",
        metadata: { name, namespace: ns },
        spec: {
          policyRef: { name: "fast" },
          source: { workloadRef: { kind: "StatefulSet", name } },
          target: { site: "recovery", namespace: target, storageClassName: "standard" },
          paused: false,
        },
      });
    }
    await client.create(recoveryPlans, {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "RecoveryPlan",
      metadata: { name: plan, namespace: ns },
      spec: { groups: [{ name: "writers", machines: [...writers] }] },
    });
  });
  after(async () => {
    await client.delete(namespaces, { name: target });
    client.close();
    await rm(control, { recursive: true, force: true });
  });

  // The master targets of the three directions: forward (epoch 0 and 2) in the recovery
  // namespace, reverse (epoch 1) in the original namespace, shared by both machines.
  const forwardTarget = () => masterTargetName("fast", ns, "recovery");
  const reverseTarget = () => masterTargetName("fast", target, "primary");

  it("protects both writers and fails the plan over (planned), then commits", async () => {
    await waitMachines("Protected", (found) => found.status?.phase === "Protected");
    await pointsAfter(0);
    await write(2);
    await volumesEqual([ns, "primary"], [target, "recovery"]);
    await status();
    const run = await runDr("failover", plan, "--planned", "--wait");
    await runningOn(target, "recovery");
    for (const name of writers)
      assert.ok((await journalBytes(forwardTarget(), target, "recovery", streamId(claimOf(name)))) > 0);
    assert.equal((await dr("commit", run, "--wait")).code, 0);
    await waitMachines("FailedOver", (found) => found.status?.phase === "FailedOver");
    await assertCommitReleased(run);
    for (const name of writers)
      assert.equal(await journalBytes(forwardTarget(), target, "recovery", streamId(claimOf(name))), 0);
  });

  it("reprotects the plan: both reverse into one master target on the original site, and epoch 0's points go", async () => {
    await write(2);
    const run = await runDr("reprotect", plan, "--wait");
    const reversed = await waitMachines("Protected in reverse", (found) => found.status?.phase === "Protected");
    for (const found of reversed) {
      const replication = found.status?.replication;
      assert.deepEqual(
        [replication?.direction, replication?.targetNamespace, replication?.targetSite, replication?.epoch],
        ["Reverse", ns, "primary", 1],
      );
    }
    // One master target in the original namespace holds both machines' streams of epoch 1, each
    // on the machine's own original claim.
    const deployment = await client.get(deployments, reverseTarget(), ns);
    const args = deployment?.spec?.template.spec?.containers[0]?.args ?? [];
    for (const name of writers)
      assert.ok(
        args.includes(`${epochStreamId(claimOf(name), 1)}=/var/lib/ksr/replicas/${epochStreamId(claimOf(name), 1)}`),
        args.join(" "),
      );
    const claims = (deployment?.spec?.template.spec?.volumes ?? []).flatMap((volume) =>
      volume.persistentVolumeClaim === undefined ? [] : [volume.persistentVolumeClaim.claimName],
    );
    assert.deepEqual(claims.sort(), [journalClaimName(reverseTarget()), ...writers.map(claimOf)].sort());
    await volumesEqual([target, "recovery"], [ns, "primary"]);

    // The failover's commit released the points of epoch 0 with their journal at the old master target.
    for (const message of await reverseStepMessages(run))
      assert.match(
        message,
        /no recovery point of epoch 0 \(data-\w+-0\) was left .*: the failover's commit released them/,
      );
    for (const name of writers)
      assert.equal(await journalBytes(forwardTarget(), target, "recovery", streamId(claimOf(name))), 0);
    // What the machines list now are points of the new epoch, taken on the original site.
    const since = Date.parse(reversed[0]?.status?.replication?.lastTransitionTime ?? "");
    for (const found of await pointsAfter(since)) {
      const oldest = found.status?.recoveryPoints?.oldest?.time ?? "";
      assert.ok(Date.parse(oldest) >= since - 1000, `${found.metadata.name}: oldest point ${oldest} is of epoch 1`);
    }
    const points = await dr("points", writers[0]);
    assert.equal(points.code, 0, points.stderr);
    await status();
  });

  it("drills a reversed machine from the original site's master target while replication goes on, and cleans up exactly", async () => {
    const [name] = writers;
    // Nothing is written now: a point taken after this holds what the source holds.
    const quiet = Date.now();
    await pointsAfter(quiet + 1000);
    const source = await volumeDir(claimOf(name), target, "recovery");
    const before = (await machine(name))?.status?.volumes?.[0]?.lastAppliedSequence ?? 0;
    const drill = await runDr("test", "--machine", name, "--name", "rdrill", "--wait");
    const run = (await client.get(failoverRuns, drill, ns)) as FailoverRun;
    assert.equal(run.status?.phase, "Succeeded");
    const drillNs = run.status.drillNamespace ?? "";
    assert.equal(drillNs, "ksr-drill-rdrill");
    const used = Date.parse(run.status.recoveryPoints?.[0]?.time ?? "");
    assert.ok(
      used > quiet,
      `the drill used a point after the writes stopped (${run.status.recoveryPoints?.[0]?.time})`,
    );
    // Hydrated on the original site, from the master target there, and equal to the point.
    const hydrators = await client.list(pods, { namespace: drillNs, labelSelector: `job-name=ksr-hydrate-${name}` });
    assert.ok(hydrators.items.length > 0);
    for (const pod of hydrators.items) assert.equal(pod.spec?.nodeName, nodeOf.primary);
    const job = await client.get(jobs, `ksr-hydrate-${name}`, drillNs);
    assert.ok(
      job?.spec?.template.spec?.containers[0]?.args?.includes(`${reverseTarget()}.${ns}.svc:7443`),
      JSON.stringify(job?.spec?.template.spec?.containers[0]?.args),
    );
    const drilledPod = await client.get(pods, `${name}-0`, drillNs);
    assert.equal(drilledPod?.spec?.nodeName, nodeOf.primary);
    const drilled = await volumeDir(claimOf(name), drillNs, "primary");
    assert.equal(await treesDiffer(source, drilled), "", "the drill holds the point's bytes");

    // Replication goes on during the drill.
    await write(2, [name]);
    await eventually("the reversed stream to keep applying during the drill", async () => {
      const seq = (await machine(name))?.status?.volumes?.[0]?.lastAppliedSequence ?? 0;
      return seq > before ? seq : undefined;
    });
    await volumesEqual([target, "recovery"], [ns, "primary"]);

    assert.equal((await dr("cleanup", drill, "--wait")).code, 0);
    assert.equal((await client.get(failoverRuns, drill, ns))?.status?.phase, "CleanedUp");
    await eventually("the drill namespace to be gone", async () =>
      (await client.get(namespaces, drillNs)) === undefined ? true : undefined,
    );
    for (const namespace of [ns, target]) {
      const selector = { namespace, labelSelector: `dr.ksr.io/failover-run=${drill}` };
      assert.deepEqual((await client.list(pods, selector)).items, []);
      assert.deepEqual((await client.list(persistentVolumeClaims, selector)).items, []);
      assert.deepEqual((await client.list(services, selector)).items, []);
      assert.deepEqual((await client.list(jobs, selector)).items, []);
    }
    const after = await machine(name);
    assert.deepEqual([after?.status?.phase, after?.status?.replication?.direction], ["Protected", "Reverse"]);
  });

  it("fails both back, commits and reprotects: Forward again in epoch 2, epoch 1's points released at the original site", async () => {
    for (const name of writers)
      assert.ok((await journalBytes(reverseTarget(), ns, "primary", epochStreamId(claimOf(name), 1))) > 0);
    const failback = await runDr("failover", plan, "--planned", "--wait");
    await runningOn(ns, "primary");
    await volumesEqual([target, "recovery"], [ns, "primary"]);
    assert.equal((await dr("commit", failback, "--wait")).code, 0);
    await waitMachines(
      "FailedOver back",
      (found) => found.status?.activeSite === "primary" && found.status.phase === "FailedOver",
    );
    await assertCommitReleased(failback);
    for (const name of writers)
      assert.equal(await journalBytes(reverseTarget(), ns, "primary", epochStreamId(claimOf(name), 1)), 0);
    await status();
    await write(2);
    // The leader dies while the first machine reverses: the reprotect still reverses each once.
    const killer = await killLeaderAt(client, {
      operatorNamespace: cluster.operatorNamespace,
      namespace: ns,
      name: "forward-again",
      moments: ["Reverse"],
      momentOf: (found, next) => {
        const active = activeStep(found);
        return active?.action === next ? active.name : undefined;
      },
    });
    let run: string;
    try {
      run = await runDr("reprotect", plan, "--name", "forward-again", "--wait");
    } finally {
      killer.stop();
    }
    assert.deepEqual(
      killer.kills.map((kill) => kill.step),
      ["writers/reverse/alpha"],
    );
    const reversed = (await client.get(failoverRuns, run, ns))?.status?.steps ?? [];
    assert.deepEqual(
      reversed.map((step) => [step.name, step.phase, step.attempts]),
      [
        ["validate", "Succeeded", 1],
        ["writers/reverse/alpha", "Succeeded", 1],
        ["writers/reverse/beta", "Succeeded", 1],
      ],
    );
    const forward = await waitMachines("Protected forward", (found) => found.status?.phase === "Protected");
    for (const found of forward)
      assert.deepEqual(
        [
          found.status?.replication?.direction,
          found.status?.replication?.targetNamespace,
          found.status?.replication?.epoch,
        ],
        ["Forward", target, 2],
      );
    for (const message of await reverseStepMessages(run)) {
      assert.match(message, /only differing blocks were sent/);
      assert.match(
        message,
        /no recovery point of epoch 1 \(data-\w+-0\.e1\) was left .*: the failover's commit released them/,
      );
    }
    for (const name of writers)
      assert.equal(await journalBytes(reverseTarget(), ns, "primary", epochStreamId(claimOf(name), 1)), 0);
    await volumesEqual([ns, "primary"], [target, "recovery"]);
    await write(2);
    await volumesEqual([ns, "primary"], [target, "recovery"]);
    await status();
  });
});
