// The operator's group points of a machine replicating in Reverse (after a reprotect): the hooks
// and the cut reach its pods and agents where they run (the recovery namespace, the machine's
// reversed view), while its group is found and its Events are recorded where the machine lives. The replicators
// and the event recorder are our own interfaces, faked; the barrier answers as an agent would.
import { strict as assert } from "node:assert";
import type { ProtectedMachine, ReplicationPolicy } from "../../src/api/types.js";
import { cutDuePoints, OperatorPoints } from "../../src/controllers/protectedmachine/operator-points.js";
import { barrierBasePort } from "../../src/controllers/protectedmachine/names.js";
import type { Plan } from "../../src/controllers/protectedmachine/plan.js";
import type { ProtectDeps } from "../../src/controllers/protectedmachine/protect.js";
import { Consistency } from "../../src/gen/ksr/replication/v1/replication.js";
import type { BarrierClient } from "../../src/gen/ksr/replication/v1/replication.js";
import { silentLogger } from "../../src/runtime/logging.js";
import { shopReversed } from "../fixture/failoverrun-world.js";
import type { EventRecord, KubeObject, Pod, ReconcileContext } from "../../src/runtime/index.js";

const reversed = (name: string, uid: string): ProtectedMachine => ({
  apiVersion: "dr.ksr.io/v1alpha1",
  kind: "ProtectedMachine",
  metadata: { name, namespace: "shop", uid },
  spec: {
    policyRef: { name: "shop" },
    source: {
      workloadRef: { kind: "StatefulSet", name },
      quiesce: {
        pre: { exec: { container: "db", command: ["fsfreeze-ish", "pre"] } },
        post: { exec: { container: "db", command: ["fsfreeze-ish", "post"] } },
        timeout: "10s",
        onFailure: "TakeCrashConsistent",
      },
    },
    target: { site: "recovery", namespace: "shop-recovery" },
    consistencyGroup: "shop",
    paused: false,
  },
  status: {
    phase: "Protected",
    replication: shopReversed,
  },
});

const policy: ReplicationPolicy = {
  apiVersion: "dr.ksr.io/v1alpha1",
  kind: "ReplicationPolicy",
  metadata: { name: "shop", namespace: "shop" },
  spec: { crashConsistentFrequency: "30s", appConsistentFrequency: "1h" },
} as ReplicationPolicy;

const agentOf = (name: string) => `ksr-agent-${name}-0`;
const streamOf = (name: string) => `data-${name}-0.e1`;

function planOf(name: string): Plan {
  return {
    policy,
    volumes: [],
    processServer: "ps",
    masterTarget: { name: "mt", namespace: "shop" },
    agents: [{ name: agentOf(name), podName: `${name}-0`, volumes: [{ machineId: streamOf(name) }] }],
  } as unknown as Plan;
}

/** An agent's Barrier service that holds, marks at seq 10 and releases. */
function agentBarrier(machineId: string, calls: string[]): BarrierClient {
  type Callback = (error: Error | null, reply: unknown) => void;
  const answer =
    (what: string, reply: unknown) => (_request: unknown, _md: unknown, _options: unknown, done: Callback) => {
      calls.push(`${what} ${machineId}`);
      done(null, reply);
    };
  return {
    hold: answer("hold", { machineId, hooks: [] }),
    mark: answer("mark", { seq: 10, consistency: Consistency.CONSISTENCY_CRASH }),
    release: answer("release", { hooks: [] }),
  } as unknown as BarrierClient;
}

describe("operator points of a reversed machine", () => {
  it("quiesced and cut in the recovery namespace, recorded as an Event on the machine in its own namespace", async () => {
    const db = reversed("db", "uid-db");
    const recorded: { namespace: string | undefined; name: string; reason: string }[] = [];
    const barrierAt: string[] = [];
    const calls: string[] = [];
    const execs: string[] = [];
    const agentPod: Pod = {
      metadata: { name: agentOf("db"), namespace: "shop-recovery" },
      status: { phase: "Running", podIP: "198.18.9.10" },
    };
    const deps = {
      caches: {
        // The group is looked up where the machine lives, not in its view's namespace.
        machines: { list: (namespace?: string) => (namespace === "shop" ? [db] : []) },
        pods: {
          get: (name: string, namespace?: string) =>
            namespace === "shop-recovery" && name === agentOf("db") ? agentPod : undefined,
        },
      },
      points: new OperatorPoints(),
      replicators: {
        barrier: (address: string) => {
          barrierAt.push(address);
          return Promise.resolve(agentBarrier(streamOf("db"), calls));
        },
      },
      events: {
        record: (regarding: KubeObject, event: EventRecord) => {
          recorded.push({
            namespace: regarding.metadata.namespace,
            name: regarding.metadata.name,
            reason: event.reason,
          });
          return Promise.resolve();
        },
      },
      client: {
        exec: (target: { namespace: string; pod: string }, command: string[]) => {
          execs.push(`${target.namespace}/${target.pod} ${command.join(" ")}`);
          return Promise.resolve({ exitCode: 0, stdout: "", stderr: "" });
        },
      },
    } as unknown as ProtectDeps;
    const context = {
      clock: { now: () => Date.parse("2026-12-01T10:00:00Z") },
      signal: new AbortController().signal,
      log: silentLogger,
    } as unknown as ReconcileContext;

    await cutDuePoints(deps, db, planOf("db"), [], context);

    assert.deepEqual(barrierAt, [`198.18.9.10:${barrierBasePort}`], "the agent in the recovery namespace was asked");
    assert.deepEqual(calls, [`hold ${streamOf("db")}`, `mark ${streamOf("db")}`, `release ${streamOf("db")}`]);
    // The hooks run in the recovered pods, where the reversed machine's workload runs.
    assert.deepEqual(execs, ["shop-recovery/db-0 fsfreeze-ish pre", "shop-recovery/db-0 fsfreeze-ish post"]);
    assert.deepEqual(recorded, [{ namespace: "shop", name: "db", reason: "GroupPointTaken" }]);
  });
});
