// `kubectl dr ... --wait` follows a run through the phases it passes, reading it as the API server
// returns it (our KubeClient interface, faked with a fixed sequence of reads): which phases end the
// wait, and that a failed drill's cleanup is waited for rather than reported as a failure.
import { strict as assert } from "node:assert";
import type { FailoverRun, FailoverRunPhase, FailoverRunType, StepStatus } from "../../src/api/types.js";
import { followRun } from "../../src/cli/dr/follow.js";
import type { KubeClient } from "../../src/runtime/index.js";
import { newRun } from "../fixture/failoverrun-world.js";

function read(type: FailoverRunType, cleanup: boolean, phase: FailoverRunPhase, steps: StepStatus[] = []): FailoverRun {
  return { ...newRun({ type, cleanup }), status: { phase, steps } };
}

const cleanupStep = (phase: StepStatus["phase"]): StepStatus => ({ name: "cleanup", action: "Cleanup", phase });

async function follow(reads: FailoverRun[], until: FailoverRunPhase[]): Promise<string> {
  let next = 0;
  const client = {
    get: () => Promise.resolve(reads[Math.min(next++, reads.length - 1)]),
  } as unknown as KubeClient;
  const lines: string[] = [];
  const out = { isTTY: false, write: (text: string) => lines.push(text) } as unknown as NodeJS.WriteStream;
  try {
    const run = await followRun({ client, namespace: "shop", name: "run", until, out, pollMs: 1 });
    return run.status?.phase ?? "none";
  } catch (error) {
    return `threw: ${(error as Error).message}`;
  }
}

describe("kubectl dr --wait: which phases end the wait", () => {
  const cases: { name: string; reads: FailoverRun[]; until: FailoverRunPhase[]; want: string }[] = [
    {
      name: "a drill reaching Succeeded",
      reads: [read("Test", false, "Running"), read("Test", false, "Succeeded")],
      until: ["Succeeded"],
      want: "Succeeded",
    },
    {
      name: "a failed failover",
      reads: [read("Planned", false, "Running"), read("Planned", false, "Failed")],
      until: ["Succeeded"],
      want: "threw: failoverrun run failed",
    },
    {
      name: "a failed drill being cleaned up: Failed is where the cleanup starts from",
      reads: [
        read("Test", true, "Failed"),
        read("Test", true, "Failed", [cleanupStep("Running")]),
        read("Test", true, "CleanedUp", [cleanupStep("Succeeded")]),
      ],
      until: ["CleanedUp"],
      want: "CleanedUp",
    },
    {
      name: "a failed drill whose cleanup failed too",
      reads: [read("Test", true, "Failed"), read("Test", true, "Failed", [cleanupStep("Failed")])],
      until: ["CleanedUp"],
      want: "threw: failoverrun run failed",
    },
    {
      name: "a failed drill without a cleanup asked for",
      reads: [read("Test", false, "Failed")],
      until: ["Succeeded"],
      want: "threw: failoverrun run failed",
    },
  ];
  for (const { name, reads, until, want } of cases)
    it(name, async () => {
      assert.equal(await follow(reads, until), want);
    });
});
