// The FailoverRun state machine without a cluster: every run type, the plan's
// order, actions and their failure modes, approvals, timeouts, commit, cleanup,
// recovery point changes, runs that must wait for each other, and restarts at
// every point of a run.
import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import type { FailoverRunSpec, StepStatus } from "../../src/api/types.js";
import {
  nextStep,
  plannedSteps,
  validationProblems,
  type OtherRun,
  type StepOutcome,
} from "../../src/controllers/failoverrun/machine.js";
import {
  action,
  machine,
  newRun,
  shopPlan,
  succeedAll,
  t0,
  World,
  type Executor,
} from "../fixture/failoverrun-world.js";

const names = (steps: readonly StepStatus[]) => steps.map((step) => `${step.name}:${step.action}:${step.phase}`);

const approve = (world: World, step: string) => {
  world.patchSpec({ approvals: [...(world.run.spec.approvals ?? []), { step, approvedBy: "alice" }] });
};

type RunSpec = Partial<FailoverRunSpec> & Pick<FailoverRunSpec, "type">;

/** A run whose plan's manual step (database/confirm) was approved when it was created. */
const preApproved = (spec: RunSpec, approvedBy = "bob", comment?: string) =>
  newRun({
    ...spec,
    approvals: [{ step: "database/confirm", approvedBy, ...(comment === undefined ? {} : { comment }) }],
  });

/** The named steps end with `outcome` (others succeed as succeedAll does). */
const outcomeAt =
  (steps: readonly string[], outcome: StepOutcome): Executor =>
  (work, world) =>
    steps.includes(work.step.name) ? outcome : succeedAll(work, world);
const failing = (...steps: string[]) => outcomeAt(steps, { state: "Failed", message: "exit code 3" });
/** The step stays in progress (by default without asking for a recheck). */
const stuckAt = (step: string, outcome: StepOutcome = { state: "InProgress" }) => outcomeAt([step], outcome);

/** Another run on the same plan: a Planned one created an hour before t0, not started, unless said. */
const otherRun = (fields: Partial<OtherRun> & Pick<OtherRun, "name">): OtherRun => ({
  type: "Planned",
  started: false,
  creationTimestamp: "2026-12-01T09:00:00Z",
  commit: false,
  cleanup: false,
  ...fields,
});

/** The shop plan's steps after stopping the sources: its groups in order, the manual step `confirm`. */
const groupSteps = (confirm: "Pending" | "Skipped") => [
  `database/pre/confirm:Manual:${confirm}`,
  "database/recover/shop-db:Recover:Pending",
  "api/recover/shop-api:Recover:Pending",
  "api/post/smoke-test:Script:Pending",
  "web/recover/shop-web:Recover:Pending",
  "web/post/warm-up:Wait:Pending",
  "web/post/switch-traffic:Traffic:Pending",
  "web/post/notify:Webhook:Pending",
];
const shutdownSteps = ["shop-web", "shop-api", "shop-db"].map((m) => `shutdown/${m}:ShutDownSource:Pending`);
const finalSyncSteps = ["shop-db", "shop-api", "shop-web"].map((m) => `final-sync/${m}:FinalSync:Pending`);

describe("FailoverRun state machine (nextStep)", () => {
  describe("the steps each run type takes, in the plan's order", () => {
    const cases: readonly { type: FailoverRunSpec["type"]; spec?: Partial<FailoverRunSpec>; steps: string[] }[] = [
      { type: "Test", steps: groupSteps("Skipped") },
      { type: "Planned", steps: [...shutdownSteps, ...finalSyncSteps, ...groupSteps("Pending")] },
      { type: "Unplanned", steps: [...shutdownSteps, ...groupSteps("Pending")] },
      { type: "Unplanned", spec: { unplanned: { shutDownSource: false } }, steps: groupSteps("Pending") },
    ];
    for (const { type, spec, steps } of cases)
      it(`${type}${spec === undefined ? "" : ` ${JSON.stringify(spec)}`}`, () => {
        deepStrictEqual(names(plannedSteps(newRun({ type, ...spec }), shopPlan())), steps);
      });

    it("a single-machine run has one unnamed group", () => {
      const run = newRun({ type: "Planned", planRef: undefined, machineRef: { name: "db" } });
      deepStrictEqual(names(plannedSteps(run, undefined)), [
        "shutdown/db:ShutDownSource:Pending",
        "final-sync/db:FinalSync:Pending",
        "recover/db:Recover:Pending",
      ]);
    });
  });

  it("a drill runs every step once, in order, records the points and RTO, and waits for cleanup", () => {
    const world = new World(newRun({ type: "Test", drill: { namespace: "shop-drill", isolation: "Isolated" } }));
    world.settle();
    const status = world.run.status;
    strictEqual(status?.phase, "Succeeded");
    strictEqual(status.drillNamespace, "shop-drill");
    deepStrictEqual(
      world.executions.filter((name, index, all) => all.indexOf(name) === index),
      [
        "database/recover/shop-db",
        "api/recover/shop-api",
        "api/post/smoke-test",
        "web/recover/shop-web",
        "web/post/warm-up",
        "web/post/switch-traffic",
        "web/post/notify",
      ],
    );
    deepStrictEqual(
      status.recoveryPoints?.map((point) => point.id),
      ["shop-db-p3", "shop-api-p3", "shop-web-p3"],
    );
    ok(status.rto !== undefined && status.dataLossWindow === "20s", JSON.stringify(status));
    strictEqual(world.step("database/pre/confirm")?.phase, "Skipped");
    strictEqual(world.step("database/pre/confirm")?.message, "not run in Test runs (runOn: Planned, Unplanned)");
    // A finished drill stays until cleanup; cleanup then runs once and ends the run.
    strictEqual(world.reconcile().last.kind, "Finished");
    world.patchSpec({ cleanup: true });
    world.settle();
    strictEqual(world.run.status?.phase, "CleanedUp");
    strictEqual(world.executions.filter((name) => name === "cleanup").length, 1);
    ok(world.events.some((event) => event.reason === "RunSucceeded"));
  });

  it("the Recover step's point is recorded before the step acts on it", () => {
    const world = new World(newRun({ type: "Unplanned", unplanned: { shutDownSource: false } }));
    approve(world, "database/confirm");
    world.settle();
    const recovers = world.works.filter((work) => work.step.name === "database/recover/shop-db");
    strictEqual(recovers.length, 2);
    strictEqual(recovers[0]?.recordedPoint, undefined);
    strictEqual(recovers[1]?.recordedPoint?.id, "shop-db-p3");
    deepStrictEqual(recovers[0]?.select, { select: "LatestProcessed" });
  });

  it("a planned failover stops the sources, waits for approval, loses nothing and commits", () => {
    const world = new World(newRun({ type: "Planned" }));
    world.settle((w) => w.run.status?.phase === "WaitingForApproval");
    strictEqual(world.run.status?.currentStep, "database/pre/confirm");
    strictEqual(world.step("database/recover/shop-db")?.phase, "Pending");
    ok(world.events.some((event) => event.note.includes("kubectl dr approve run database/confirm")));
    // Waiting does not time out (no timeout on the action) and executes nothing.
    const executed = world.executions.length;
    world.now += 3 * 3_600_000;
    strictEqual(world.reconcile().last.kind, "Wait");
    strictEqual(world.executions.length, executed);
    approve(world, "database/confirm");
    world.settle();
    strictEqual(world.run.status.phase, "Succeeded");
    strictEqual(world.step("database/pre/confirm")?.message, "approved by alice");
    strictEqual(world.run.status.dataLossWindow, "0s");
    world.patchSpec({ commit: true });
    world.settle();
    strictEqual(world.run.status.phase, "Committed");
    ok(world.executions.includes("commit"));
  });

  it("commit asked for at creation runs after the failover", () => {
    const world = new World(preApproved({ type: "Planned", commit: true }));
    world.settle();
    strictEqual(world.run.status?.phase, "Committed");
    strictEqual(world.executions.at(-1), "commit");
  });

  it("an unplanned failover goes on when the source cannot be stopped", () => {
    const world = new World(
      preApproved({ type: "Unplanned" }),
      failing("shutdown/shop-web", "shutdown/shop-api", "shutdown/shop-db"),
    );
    world.settle();
    strictEqual(world.run.status?.phase, "Succeeded");
    strictEqual(world.step("shutdown/shop-db")?.phase, "Failed");
    ok(world.events.some((event) => event.type === "Warning" && event.reason === "StepFailed"));
  });

  describe("Reprotect", () => {
    const failedOver = (name: string) =>
      machine(name, "FailedOver", {
        activeSite: "recovery",
        replication: {
          direction: "Forward",
          sourceNamespace: "shop",
          sourceSite: "primary",
          targetNamespace: "shop-recovery",
          targetSite: "recovery",
          epoch: 0,
          failedOverBy: "shop-planned",
        },
      });

    it("of machines never failed over is refused before anything acts", () => {
      const world = new World(newRun({ type: "Reprotect" }));
      world.settle();
      strictEqual(world.run.status?.phase, "Failed");
      deepStrictEqual(world.executions, []);
      match(
        world.run.status.steps?.[0]?.message ?? "",
        /shop-db is Protected: Reprotect needs a failover of it that was committed/,
      );
      strictEqual(world.run.status.conditions?.[0]?.reason, "Invalid");
    });

    it("reverses every machine in plan order, runs no plan action, and records the reversed sites", () => {
      const world = new World(newRun({ type: "Reprotect" }));
      for (const name of world.machines.keys()) world.machines.set(name, failedOver(name));
      deepStrictEqual(names(plannedSteps(world.run, world.plan)), [
        "database/reverse/shop-db:Reverse:Pending",
        "api/reverse/shop-api:Reverse:Pending",
        "web/reverse/shop-web:Reverse:Pending",
      ]);
      world.settle();
      strictEqual(world.run.status?.phase, "Succeeded");
      deepStrictEqual(world.executions, ["database/reverse/shop-db", "api/reverse/shop-api", "web/reverse/shop-web"]);
      deepStrictEqual([world.run.status.sourceSite, world.run.status.targetSite], ["recovery", "primary"]);
      match(world.events.at(-1)?.note ?? "", /replication runs the other way now/);
    });

    it("a finished Reprotect holds no later run (failback starts at once); a failover not committed holds it", () => {
      const other = otherRun({ name: "back", type: "Reprotect", phase: "Succeeded", started: true });
      const failback = new World(newRun({ type: "Planned", planRef: undefined, machineRef: { name: "shop-db" } }));
      failback.plan = undefined;
      failback.otherRuns = [other];
      failback.settle();
      strictEqual(failback.run.status?.phase, "Succeeded");
      const reprotect = new World(newRun({ type: "Reprotect" }));
      for (const name of reprotect.machines.keys()) reprotect.machines.set(name, failedOver(name));
      reprotect.otherRuns = [{ ...other, name: "move", type: "Planned" }];
      reprotect.reconcile();
      strictEqual(reprotect.run.status?.phase, "Pending");
      strictEqual(reprotect.run.status.conditions?.[0]?.reason, "AnotherRunInProgress");
    });

    it("a failover of a machine that is failed over is refused: reprotect it first", () => {
      const world = new World(newRun({ type: "Planned" }));
      world.machines.set("shop-db", failedOver("shop-db"));
      world.settle();
      strictEqual(world.run.status?.phase, "Failed");
      match(world.run.status.steps?.[0]?.message ?? "", /shop-db is already failed over; reprotect it first/);
    });
  });

  describe("a failing action", () => {
    it("with onFailure Abort fails the run and runs nothing after it", () => {
      const world = new World(newRun({ type: "Test" }), failing("api/post/smoke-test"));
      world.settle();
      strictEqual(world.run.status?.phase, "Failed");
      strictEqual(world.step("api/post/smoke-test")?.message, "exit code 3");
      strictEqual(world.step("web/recover/shop-web")?.phase, "Skipped");
      ok(!world.executions.includes("web/recover/shop-web"));
      ok(world.run.status.completionTime !== undefined);
    });
    it("with onFailure Continue is recorded and the run goes on", () => {
      const world = new World(newRun({ type: "Test" }), failing("web/post/notify"));
      world.settle();
      strictEqual(world.run.status?.phase, "Succeeded");
      strictEqual(world.step("web/post/notify")?.phase, "Failed");
    });
    it("a failed drill can still be cleaned up", () => {
      const world = new World(newRun({ type: "Test" }), failing("database/recover/shop-db"));
      world.settle();
      strictEqual(world.run.status?.phase, "Failed");
      world.patchSpec({ cleanup: true });
      world.settle();
      strictEqual(world.run.status.phase, "CleanedUp");
    });
  });

  describe("timeouts", () => {
    it("a script that runs past its timeout fails", () => {
      const world = new World(
        newRun({ type: "Test" }),
        stuckAt("api/post/smoke-test", { state: "InProgress", message: "Job running" }),
      );
      world.settle((w) => w.run.status?.phase === "Failed", 60_000);
      strictEqual(world.step("api/post/smoke-test")?.message, "timed out after 10m");
      const started = Date.parse(world.step("api/post/smoke-test")?.startTime ?? "");
      ok(Date.parse(world.step("api/post/smoke-test")?.endTime ?? "") - started >= 600_000);
    });
    it("a manual action with a timeout fails when nobody approves in time", () => {
      const world = new World(newRun({ type: "Planned" }));
      const plan = shopPlan();
      const confirm = plan.spec.groups[0]?.preActions?.[0];
      if (confirm !== undefined) confirm.timeout = "5m";
      world.plan = plan;
      world.settle((w) => w.run.status?.phase === "Failed", 60_000);
      strictEqual(world.step("database/pre/confirm")?.message, "not approved within 5m");
      ok(!world.executions.includes("database/recover/shop-db"));
    });
    it("the wait the machine asks for ends at the deadline, not later", () => {
      const world = new World(
        newRun({ type: "Test" }),
        stuckAt("web/post/notify", { state: "InProgress", recheckAfterMs: 3_600_000 }),
      );
      world.settle((w) => w.run.status?.currentStep === "web/post/notify");
      const end = world.reconcile();
      ok(end.last.kind === "Wait" && (end.last.requeueAfterMs ?? 0) <= 31_000, JSON.stringify(end.last));
    });
  });

  it("an approval given before the step is reached lets it pass at once", () => {
    const world = new World(preApproved({ type: "Planned" }, "carol", "CHG-1"));
    world.settle();
    strictEqual(world.run.status?.phase, "Succeeded");
    strictEqual(world.step("database/pre/confirm")?.message, "approved by carol: CHG-1");
  });

  it("changing the recovery point stops every tier, rolls back in order, and comes before the commit", () => {
    const world = new World(preApproved({ type: "Unplanned" }));
    world.settle();
    strictEqual(world.run.status?.dataLossWindow, "20s");
    world.patchSpec({ recoveryPointChanges: [{ select: "Time", time: "2026-12-01T09:30:00Z" }], commit: true });
    world.settle();
    const after = (world.run.status.steps ?? []).slice(-7).map((step) => step.name);
    deepStrictEqual(after, [
      "change-1/stop/shop-web",
      "change-1/stop/shop-api",
      "change-1/stop/shop-db",
      "change-1/recover/shop-db",
      "change-1/recover/shop-api",
      "change-1/recover/shop-web",
      "commit",
    ]);
    const changeWork = world.works.filter((work) => work.step.name === "change-1/recover/shop-db");
    strictEqual(changeWork[0]?.recordedPoint, undefined, "a change chooses its point afresh");
    deepStrictEqual(changeWork[0]?.select, { select: "Time", time: "2026-12-01T09:30:00Z" });
    deepStrictEqual(world.run.status.recoveryPoints?.map((point) => point.id).sort(), [
      "shop-api-c1",
      "shop-db-c1",
      "shop-web-c1",
    ]);
    strictEqual(world.run.status.dataLossWindow, "1m30s");
    strictEqual(world.run.status.phase, "Committed");
  });

  describe("a second run on the same plan waits and does not interleave", () => {
    const cases: readonly { name: string; other: OtherRun; waits: boolean }[] = [
      { name: "a running failover", other: otherRun({ name: "first", started: true, phase: "Running" }), waits: true },
      { name: "an older run not yet started", other: otherRun({ name: "first" }), waits: true },
      {
        name: "a newer run not yet started",
        other: otherRun({ name: "later", creationTimestamp: "2026-12-01T11:00:00Z" }),
        waits: false,
      },
      {
        name: "an uncommitted failover",
        other: otherRun({ name: "first", started: true, phase: "Succeeded" }),
        waits: true,
      },
      {
        name: "a committed failover",
        other: otherRun({ name: "first", started: true, phase: "Committed" }),
        waits: false,
      },
      { name: "a failed run", other: otherRun({ name: "first", started: true, phase: "Failed" }), waits: false },
      {
        name: "a finished drill (for a failover)",
        other: otherRun({ name: "first", type: "Test", started: true, phase: "Succeeded" }),
        waits: false,
      },
    ];
    for (const { name, other: running, waits } of cases)
      it(`${waits ? "waits for" : "does not wait for"} ${name}`, () => {
        const world = new World(newRun({ type: "Planned" }));
        world.otherRuns = [running];
        world.reconcile();
        if (waits) {
          strictEqual(world.run.status?.phase, "Pending");
          strictEqual(world.run.status.steps, undefined);
          strictEqual(world.run.status.conditions?.[0]?.reason, "AnotherRunInProgress");
          match(world.run.status.conditions[0].message, new RegExp(`FailoverRun ${running.name}`));
          deepStrictEqual(world.executions, []);
          // Once the other run is done, this one starts.
          world.otherRuns = [{ ...running, started: true, phase: "Committed" }];
          world.reconcile();
        }
        ok(world.run.status?.startTime !== undefined);
      });
    it("a finished drill holds another drill until it is cleaned up", () => {
      const world = new World(newRun({ type: "Test" }));
      const drill = otherRun({ name: "drill", type: "Test", started: true, phase: "Succeeded" });
      world.otherRuns = [drill];
      world.reconcile();
      strictEqual(world.run.status?.phase, "Pending");
      world.otherRuns = [{ ...drill, cleanup: true }];
      world.reconcile();
      strictEqual(world.run.status.phase, "Running");
    });
  });

  describe("validation", () => {
    const cases: readonly {
      name: string;
      edit: (world: World) => void;
      spec?: Partial<FailoverRunSpec>;
      message: RegExp;
    }[] = [
      {
        name: "a missing machine",
        edit: (w) => w.machines.delete("shop-api"),
        message: /ProtectedMachine shop-api does not exist/,
      },
      { name: "a missing plan", edit: (w) => (w.plan = undefined), message: /RecoveryPlan shop does not exist/ },
      {
        name: "a machine still replicating its first copy (Planned)",
        edit: (w) => w.machines.set("shop-db", machine("shop-db", "InitialReplication")),
        message: /shop-db is InitialReplication, not Protected/,
      },
      {
        name: "a machine without points (Test)",
        spec: { type: "Test" },
        edit: (w) => w.machines.set("shop-db", machine("shop-db", "Protected", { recoveryPoints: { count: 0 } })),
        message: /shop-db has no recovery point yet/,
      },
      {
        name: "a point time in the future",
        spec: { type: "Unplanned", recoveryPoint: { select: "Time", time: "2099-01-01T00:00:00Z" } },
        edit: () => undefined,
        message: /recoveryPoint.time 2099-01-01T00:00:00Z is in the future/,
      },
      {
        name: "a point time before the oldest point",
        spec: { type: "Unplanned", recoveryPoint: { select: "Time", time: "2026-11-01T00:00:00Z" } },
        edit: () => undefined,
        message: /before the oldest point/,
      },
      {
        name: "a drill into the machines' own recovery namespace",
        spec: { type: "Test", drill: { namespace: "shop-recovery", isolation: "Isolated" } },
        edit: () => undefined,
        message: /a drill needs a namespace of its own/,
      },
      {
        name: "traffic switched to a machine outside the plan",
        edit: (w) => {
          const plan = shopPlan();
          const traffic = plan.spec.groups[2]?.postActions?.[1]?.traffic;
          if (traffic !== undefined) traffic.machine = "elsewhere";
          w.plan = plan;
        },
        message: /switches traffic to elsewhere, which is not a machine of the plan/,
      },
      {
        name: "traffic switched by an earlier group, before its machine is recovered",
        edit: (w) => {
          const plan = shopPlan();
          plan.spec.groups[1]?.postActions?.push(
            action("switch-early", { traffic: { service: "web", machine: "shop-web" } }),
          );
          w.plan = plan;
        },
        message: /api\/switch-early switches traffic to shop-web before it is recovered \(by group web\)/,
      },
    ];
    for (const { name, edit, spec, message } of cases)
      it(`fails the run on ${name}, acting on nothing`, () => {
        const world = new World(newRun({ type: "Planned", ...spec }));
        edit(world);
        world.settle();
        strictEqual(world.run.status?.phase, "Failed");
        match(world.run.status.steps?.[0]?.message ?? "", message);
        deepStrictEqual(world.executions, []);
      });
    it("accepts the examples' plan", () => {
      const world = new World(newRun({ type: "Test" }));
      deepStrictEqual(
        validationProblems(world.run, { now: t0, plan: world.plan, machines: world.machines, otherRuns: [] }),
        [],
      );
    });
  });

  it("a plan action removed from the plan during the run fails its step", () => {
    const world = new World(newRun({ type: "Test" }), stuckAt("api/post/smoke-test"));
    world.settle((w) => w.run.status?.currentStep === "api/post/smoke-test");
    const plan = shopPlan();
    const api = plan.spec.groups[1];
    if (api !== undefined) api.postActions = [];
    world.plan = plan;
    world.settle();
    strictEqual(world.run.status?.phase, "Failed");
    match(world.step("api/post/smoke-test")?.message ?? "", /no longer has action/);
  });

  it("cleanup during a drill stops the step in progress and runs only the cleanup", () => {
    const world = new World(newRun({ type: "Test" }), stuckAt("api/post/smoke-test"));
    world.settle((w) => w.run.status?.currentStep === "api/post/smoke-test");
    world.patchSpec({ cleanup: true });
    world.settle();
    strictEqual(world.run.status?.phase, "CleanedUp");
    strictEqual(world.step("api/post/smoke-test")?.phase, "Failed");
    strictEqual(world.step("web/recover/shop-web")?.phase, "Skipped");
    ok(!world.executions.includes("web/recover/shop-web"));
  });

  describe("an operator restarted at any point resumes without repeating a finished step", () => {
    const scenarios: readonly { name: string; spec: RunSpec }[] = [
      { name: "drill and cleanup", spec: { type: "Test", cleanup: true } },
      {
        name: "planned failover, change of point and commit",
        spec: {
          type: "Planned",
          approvals: [{ step: "database/confirm", approvedBy: "a" }],
          recoveryPointChanges: [{ select: "LatestAppConsistent" }],
          commit: true,
        },
      },
      {
        name: "unplanned failover",
        spec: { type: "Unplanned", approvals: [{ step: "database/confirm", approvedBy: "a" }] },
      },
    ];
    for (const { name, spec } of scenarios)
      it(name, () => {
        const reference = new World(newRun(spec));
        reference.settle();
        const expected = reference.phases();
        const totalDecisions = reference.recorded.length + reference.executions.length + 1;
        for (let crashAt = 1; crashAt <= totalDecisions; crashAt++) {
          const world = new World(newRun(spec));
          world.crashAt = crashAt;
          world.settle();
          deepStrictEqual(world.phases(), expected, `crash at decision ${crashAt}`);
          // Each step was executed again only while it was still Running; never after it was recorded finished.
          for (const step of world.run.status?.steps ?? []) {
            ok((step.attempts ?? 0) <= 1, `${step.name} started ${step.attempts} times (crash at ${crashAt})`);
          }
        }
      });
  });

  it("reports step durations, the run's result and RTO for the metrics", () => {
    const world = new World(newRun({ type: "Test" }));
    world.settle();
    const measured = world.recorded.flatMap((decision) => (decision.kind === "Record" ? [decision.measurements] : []));
    ok(measured.some((m) => m.stepEnded?.action === "Recover"));
    ok(measured.some((m) => m.runEnded?.result === "Succeeded" && m.rtoSeconds !== undefined));
    strictEqual(
      nextStep(world.run, { now: world.now, plan: world.plan, machines: world.machines, otherRuns: [] }).kind,
      "Finished",
    );
  });
});
