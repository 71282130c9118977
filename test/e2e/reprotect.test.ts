// The ASR round trip end to end on `ksr local`, as a user drives it: `kubectl apply` of a policy,
// a StatefulSet writing files and its ProtectedMachine, then `kubectl dr` for failover → commit →
// reprotect → failback → commit → reprotect, with the volumes compared byte for byte at every
// stage. Reprotect compares block hashes, so it overwrites what the old source wrote after the
// last replicated change; when the original volumes are gone, it copies in full and says so.
import { strict as assert } from "node:assert";
import { randomBytes, randomInt } from "node:crypto";
import { open, writeFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { failoverRuns, protectedMachines, type ProtectedMachine } from "../../src/api/types.js";
import { KubeClient, namespaces, persistentVolumeClaims, pods, statefulSets } from "../../src/runtime/index.js";
import { eventually } from "../fixture/eventually.js";
import { kubectlDr } from "../fixture/kubectl-dr.js";
import { events } from "../fixture/machine-suite.js";
import { protectedMachine, useRecoverySuite } from "../fixture/recovery-suite.js";
import { treesDiffer } from "../fixture/tree-compare.js";
import { appendSmall, fastPolicy, writerStatefulSet } from "../fixture/writer.js";
import { blockSize } from "../../src/replicator/block-hash.js";

const nodeOf = { primary: "ksr-primary", recovery: "ksr-recovery" } as const;
type Site = keyof typeof nodeOf;
const mib = 1024 * 1024;

describe("reprotect and failback end to end (e2e)", function () {
  this.timeout(10 * 60_000);
  const cluster = useRecoverySuite("rp");
  let client: KubeClient;
  let control: string;

  const apply = (object: object) => cluster.apply(object);
  const dr = (namespace: string, ...args: string[]) => kubectlDr(cluster.state.kubeconfig, ["-n", namespace, ...args]);
  /** Runs `kubectl dr ...` that creates a run, and returns the run's name. */
  const startRun = async (namespace: string, ...args: string[]): Promise<string> => {
    const result = await dr(namespace, ...args);
    assert.equal(result.code, 0, `kubectl dr ${args.join(" ")}:\n${result.stdout}\n${result.stderr}`);
    const name = /failoverrun\.dr\.ksr\.io\/(\S+) created/.exec(result.stdout)?.[1];
    assert.ok(name !== undefined, result.stdout);
    return name;
  };

  /** One protected writer StatefulSet in a namespace of its own, recovered into another. */
  class World {
    readonly target: string;
    constructor(
      readonly ns: string,
      readonly name: string,
    ) {
      this.target = `${ns}-dr`;
    }

    /** MiB of the writer's static files. */
    mib = 0;

    async create(mib: number): Promise<void> {
      this.mib = mib;
      await cluster.openNamespaces(this.ns, this.target);
      await apply(fastPolicy(this.ns));
      await apply(writerStatefulSet({ name: this.name, namespace: this.ns, mib, control, whileWriting: appendSmall }));
      await apply(protectedMachine({ name: this.name, namespace: this.ns, target: this.target }));
    }

    async remove(): Promise<void> {
      await client.delete(namespaces, { name: this.target });
      if (this.ns !== cluster.namespace) await client.delete(namespaces, { name: this.ns });
    }

    get claim(): string {
      return `data-${this.name}-0`;
    }

    machine(): Promise<ProtectedMachine | undefined> {
      return client.get(protectedMachines, this.name, this.ns);
    }

    async waitMachine(what: string, ready: (machine: ProtectedMachine) => boolean): Promise<ProtectedMachine> {
      return cluster.untilMachine(
        this.ns,
        this.name,
        what,
        (found) => (found.status?.observedGeneration === found.metadata.generation && ready(found) ? found : undefined),
        4 * 60_000,
      );
    }

    volumeDir(namespace: string, site: Site): Promise<string> {
      return cluster.volumeDir(namespace, this.claim, nodeOf[site]);
    }

    /** The two volumes hold the same tree, byte for byte (eventually: replication is asynchronous). */
    async volumesEqual(from: [string, Site], to: [string, Site]): Promise<void> {
      const source = await this.volumeDir(...from);
      const replica = await this.volumeDir(...to);
      await eventually(
        `${from.join("@")} and ${to.join("@")} to hold the same bytes`,
        async () => ((await treesDiffer(source, replica)) === "" ? true : undefined),
        3 * 60_000,
        { describe: () => treesDiffer(source, replica), intervalMs: 2000 },
      );
    }

    /** What the agent beside the workload in `namespace` compared and sent in its last comparison (its log says). */
    async comparisonSent(namespace: string): Promise<{ compared: number; sent: number }> {
      const agents = await client.list(pods, {
        namespace,
        labelSelector: `dr.ksr.io/machine=${this.name},app.kubernetes.io/component=agent`,
      });
      const agent = agents.items[0]?.metadata.name ?? "";
      const logs = await cluster.kubectl(["-n", namespace, "logs", agent, "-c", "agent-0"]);
      assert.equal(logs.code, 0, `kubectl logs ${namespace}/${agent}: ${logs.stderr}`);
      const { stdout } = logs;
      const done = [...stdout.matchAll(/resync done: (\d+) bytes compared, (\d+) bytes sent/g)].at(-1);
      assert.ok(done !== undefined, `agent ${namespace}/${agent} reported no comparison:\n${stdout.slice(-2000)}`);
      return { compared: Number(done[1]), sent: Number(done[2]) };
    }

    async runningOn(namespace: string, site: Site): Promise<void> {
      await eventually(
        `pod ${namespace}/${this.name}-0 running on ${nodeOf[site]}`,
        async () => {
          const pod = await client.get(pods, `${this.name}-0`, namespace);
          return pod?.status?.phase === "Running" && pod.spec?.nodeName === nodeOf[site] ? pod : undefined;
        },
        2 * 60_000,
      );
    }

    async scaledToZero(namespace: string): Promise<void> {
      const set = await client.get(statefulSets, this.name, namespace);
      assert.equal(set?.spec?.replicas, 0, `StatefulSet ${namespace}/${this.name} is scaled to 0`);
    }

    /** The writer appends for a while (on whichever site it runs) and stops. */
    async write(seconds: number): Promise<void> {
      const flag = join(control, this.name, "write");
      await writeFile(flag, "");
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      await unlink(flag);
      await new Promise((resolve) => setTimeout(resolve, 500)); // the round in progress ends
    }

    async stepMessage(run: string, action: string): Promise<string> {
      const found = await client.get(failoverRuns, run, this.ns);
      return found?.status?.steps?.find((step) => step.action === action)?.message ?? "";
    }
  }

  /** The writer of "the original volumes are gone", created first: its initial replication overlaps the round trip. */
  let lost: { world: World; created: Promise<void> };
  before(() => {
    ({ client, control } = cluster);
    const world = new World(`${cluster.namespace}-gone`, "lost");
    lost = { world, created: world.create(4) };
    // Awaited in its describe's before(); a failure here must not go unhandled meanwhile.
    lost.created.catch(() => undefined);
  });

  describe("the round trip: failover → commit → reprotect → failback → commit → reprotect", () => {
    let world: World;
    before(async () => {
      world = new World(cluster.namespace, "app");
      await world.create(8);
    });
    after(() => world.remove());

    it("protects the writer and refuses a Reprotect before any failover", async () => {
      await world.waitMachine("Protected", (m) => m.status?.phase === "Protected");
      const refused = await dr(world.ns, "reprotect", "--machine", world.name, "--wait");
      assert.equal(refused.code, 1, refused.stdout);
      const [run] = (await client.list(failoverRuns, { namespace: world.ns })).items;
      assert.equal(run?.status?.phase, "Failed");
      assert.match(run.status.steps?.[0]?.message ?? "", /Reprotect needs a failover of it that was committed/);
      await world.write(2);
      await world.volumesEqual([world.ns, "primary"], [world.target, "recovery"]);
    });

    it("fails over (planned) and commits: the workload runs on the replica, the machine is FailedOver", async () => {
      const run = await startRun(world.ns, "failover", "--machine", world.name, "--planned", "--wait");
      await world.runningOn(world.target, "recovery");
      await world.scaledToZero(world.ns);
      await world.volumesEqual([world.ns, "primary"], [world.target, "recovery"]);
      const commit = await dr(world.ns, "commit", run, "--wait");
      assert.equal(commit.code, 0, commit.stderr);
      const machine = await world.waitMachine("FailedOver", (m) => m.status?.phase === "FailedOver");
      assert.equal(machine.status?.replication?.failedOverBy, run);
      assert.equal(machine.status.replication.direction, "Forward");
      assert.equal(machine.status.activeSite, "recovery");
    });

    it("reprotects: replication reverses into the original volumes, and what the old source wrote late is overwritten", async () => {
      // The recovered workload writes; the old source's volume gets a write replication never saw.
      await world.write(2);
      const original = await world.volumeDir(world.ns, "primary");
      const late = await open(join(original, "static", "f0"), "r+");
      await late.write(Buffer.alloc(8192, 0x5a), 0, 8192, 100_000);
      await late.close();
      await writeFile(join(original, "written-after-failover"), "the old source wrote this late\n");

      const run = await startRun(world.ns, "reprotect", "--machine", world.name, "--wait");
      const machine = await world.waitMachine("Protected in reverse", (m) => m.status?.phase === "Protected");
      assert.deepEqual(
        [
          machine.status?.replication?.direction,
          machine.status?.replication?.sourceNamespace,
          machine.status?.replication?.sourceSite,
          machine.status?.replication?.targetNamespace,
          machine.status?.replication?.targetSite,
          machine.status?.replication?.epoch,
          machine.status?.replication?.failedOverBy,
        ],
        ["Reverse", world.target, "recovery", world.ns, "primary", 1, undefined],
      );
      assert.equal(machine.status?.activeSite, "recovery");
      const fullCopy = machine.status.conditions?.find((c) => c.type === "FullCopy");
      assert.equal(fullCopy?.status, "False", JSON.stringify(fullCopy));
      assert.match(await world.stepMessage(run, "Reverse"), /only differing blocks were sent/);
      const agents = await client.list(pods, {
        namespace: world.target,
        labelSelector: `dr.ksr.io/machine=${world.name},app.kubernetes.io/component=agent`,
      });
      assert.equal(agents.items[0]?.spec?.nodeName, nodeOf.recovery);
      await world.volumesEqual([world.target, "recovery"], [world.ns, "primary"]);
      // Changes keep flowing back, and recovery points are now taken on the original site.
      await world.write(2);
      await world.volumesEqual([world.target, "recovery"], [world.ns, "primary"]);
      const since = Date.parse(machine.status.replication?.lastTransitionTime ?? "");
      await world.waitMachine("a recovery point taken in the reverse direction", (m) => {
        const latest = m.status?.recoveryPoints?.latest?.time;
        return latest !== undefined && Date.parse(latest) >= since;
      });
    });

    it("fails back (planned) and commits: the workload runs on the original volumes again", async () => {
      const run = await startRun(world.ns, "failover", "--machine", world.name, "--planned", "--wait");
      await world.runningOn(world.ns, "primary");
      await world.scaledToZero(world.target);
      await world.volumesEqual([world.target, "recovery"], [world.ns, "primary"]);
      const commit = await dr(world.ns, "commit", run, "--wait");
      assert.equal(commit.code, 0, commit.stderr);
      const machine = await world.waitMachine("FailedOver back", (m) => m.status?.phase === "FailedOver");
      assert.equal(machine.status?.activeSite, "primary");
      assert.equal(machine.status.replication?.failedOverBy, run);
    });

    it("reprotects again: the original direction, compared, not copied: 1% of the blocks changed and the writer's appends travel, not the volume", async () => {
      await world.write(2);
      // 1% of the volume's 64 KiB blocks (at least one) changed where the workload runs now, as
      // in the reprotect benchmark: the comparison must send those and little else.
      const original = await world.volumeDir(world.ns, "primary");
      const volumeBytes = world.mib * mib;
      const changed = new Set<string>();
      while (changed.size < Math.max(1, Math.ceil((volumeBytes / blockSize) * 0.01)))
        changed.add(`${randomInt(world.mib)}:${randomInt(mib / blockSize)}`);
      for (const entry of changed) {
        const [file, block] = entry.split(":").map(Number) as [number, number];
        const handle = await open(join(original, "static", `f${file}`), "r+");
        await handle.write(randomBytes(blockSize), 0, blockSize, block * blockSize);
        await handle.close();
      }
      const changedBytes = changed.size * blockSize;
      const run = await startRun(world.ns, "reprotect", "--machine", world.name, "--wait");
      const machine = await world.waitMachine("Protected forward", (m) => m.status?.phase === "Protected");
      const replication = machine.status?.replication;
      assert.deepEqual(
        [replication?.direction, replication?.sourceNamespace, replication?.targetNamespace, replication?.epoch],
        ["Forward", world.ns, world.target, 2],
      );
      assert.equal(machine.status?.activeSite, "primary");
      assert.match(await world.stepMessage(run, "Reverse"), /only differing blocks were sent/);
      await world.volumesEqual([world.ns, "primary"], [world.target, "recovery"]);
      const { compared, sent } = await world.comparisonSent(world.ns);
      console.log(
        `      reprotect of ${volumeBytes} bytes with ${changedBytes} changed: ${sent} bytes sent ` +
          `(${(sent / changedBytes).toFixed(3)} of the changed bytes, ${((100 * sent) / volumeBytes).toFixed(1)}% of the volume), ${compared} compared`,
      );
      assert.ok(compared >= volumeBytes, `the comparison read the whole volume (${compared} of ${volumeBytes} bytes)`);
      assert.ok(sent >= changedBytes, `the changed blocks travelled (${sent} bytes sent for ${changedBytes} changed)`);
      // The changed blocks, the writer's last appends and the stream's framing: far from a copy.
      assert.ok(
        sent < volumeBytes / 4,
        `only differences travelled (${sent} bytes sent of a ${volumeBytes}-byte volume)`,
      );
      await world.write(2);
      await world.volumesEqual([world.ns, "primary"], [world.target, "recovery"]);
    });
  });

  describe("the original volumes are gone", () => {
    let world: World;
    before(async () => {
      world = lost.world;
      await lost.created;
    });
    after(() => world.remove());

    it("reprotect copies in full and says so (status, condition, event, run step)", async () => {
      await world.waitMachine("Protected", (m) => m.status?.phase === "Protected");
      const failover = await startRun(world.ns, "failover", "--machine", world.name, "--planned", "--wait");
      const commit = await dr(world.ns, "commit", failover, "--wait");
      assert.equal(commit.code, 0, commit.stderr);
      await world.waitMachine("FailedOver", (m) => m.status?.phase === "FailedOver");
      await client.delete(persistentVolumeClaims, { name: world.claim, namespace: world.ns });
      await eventually("the original claim to be gone", async () =>
        (await client.get(persistentVolumeClaims, world.claim, world.ns)) === undefined ? true : undefined,
      );

      const run = await startRun(world.ns, "reprotect", "--machine", world.name, "--wait");
      const machine = await world.waitMachine("Protected in reverse", (m) => m.status?.phase === "Protected");
      assert.deepEqual(machine.status?.replication?.fullCopyVolumes, ["data-0"]);
      const fullCopy = machine.status.conditions?.find((c) => c.type === "FullCopy");
      assert.equal(fullCopy?.status, "True");
      assert.equal(fullCopy.reason, "OriginalVolumesGone");
      assert.match(await world.stepMessage(run, "Reverse"), /data-0 were gone: they were copied in full/);
      const said = await client.list(events, { namespace: world.ns });
      assert.ok(
        said.items.some((e) => e.regarding?.name === world.name && e.reason === "OriginalVolumesGone"),
        said.items.map((e) => e.reason).join(", "),
      );
      await world.volumesEqual([world.target, "recovery"], [world.ns, "primary"]);
    });
  });
});
