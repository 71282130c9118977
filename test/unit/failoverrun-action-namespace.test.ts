// Where a group's script actions run: the namespace its machines are recovered to, which after a
// reprotect is the target of the reversed direction (a failback's smoke test runs where the shop
// comes back, not in the namespace it leaves), or a Test run's drill namespace.
import { strict as assert } from "node:assert";
import type { FailoverRun, ProtectedMachine, RecoveryPlan } from "../../src/api/types.js";
import { actionNamespace } from "../../src/controllers/failoverrun/steps/script.js";
import { machine, newRun, shopReversed } from "../fixture/failoverrun-world.js";

const plan: RecoveryPlan = {
  apiVersion: "dr.ksr.io/v1alpha1",
  kind: "RecoveryPlan",
  metadata: { name: "shop", namespace: "shop" },
  spec: { groups: [{ name: "database", machines: ["db"] }, { name: "checks" }] },
};

const reversed: ProtectedMachine = machine("db", "Protected", {
  replication: shopReversed,
});

describe("actionNamespace: where a plan's scripts run", () => {
  const cases: {
    name: string;
    run: FailoverRun | undefined;
    group: string;
    machines: ProtectedMachine[];
    want: string;
  }[] = [
    {
      name: "a failover: the machines' spec.target",
      run: newRun({ type: "Planned" }),
      group: "database",
      machines: [machine("db")],
      want: "shop-recovery",
    },
    {
      name: "a failback after reprotect: the reversed direction's target",
      run: newRun({ type: "Planned" }),
      group: "database",
      machines: [reversed],
      want: "shop",
    },
    {
      name: "a group without machines: the plan's first machine's",
      run: newRun({ type: "Planned" }),
      group: "checks",
      machines: [reversed],
      want: "shop",
    },
    {
      name: "validating the plan (no run) follows the direction too",
      run: undefined,
      group: "database",
      machines: [reversed],
      want: "shop",
    },
    {
      name: "a drill: its own namespace",
      run: newRun({ type: "Test", drill: { namespace: "shop-drill", isolation: "Isolated" } }),
      group: "database",
      machines: [reversed],
      want: "shop-drill",
    },
    {
      name: "no machine known: the plan's namespace",
      run: newRun({ type: "Planned" }),
      group: "database",
      machines: [],
      want: "shop",
    },
  ];
  for (const { name, run, group, machines, want } of cases)
    it(name, () => {
      const byName = new Map(machines.map((m) => [m.metadata.name, m]));
      assert.equal(actionNamespace(run, plan, group, byName), want);
    });
});
