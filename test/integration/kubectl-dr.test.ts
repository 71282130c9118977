// `kubectl dr` against a real API server with the CRDs applied: every command
// creates or patches exactly what it names, bad input changes nothing, and
// --wait follows a run (whose status this test writes, as the controller would).
import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { installCrds } from "../../src/api/install.js";
import {
  failoverRuns,
  protectedMachines,
  recoveryPlans,
  type FailoverRun,
  type FailoverRunStatus,
  type ProtectedMachine,
  type RecoveryPlan,
} from "../../src/api/types.js";
import { KubeClient } from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";
import type { KsrResult } from "../fixture/ksr-cli.js";
import { followDr, kubectlDr } from "../fixture/kubectl-dr.js";

describe("kubectl dr on a real API server", function () {
  this.timeout(60_000);
  const cluster = useCluster("kdr");
  let client: KubeClient;
  let scratch: string;

  const dr = (...args: string[]): Promise<KsrResult> => kubectlDr(cluster.state.kubeconfig, args);
  const inNs = (...args: string[]) => dr(...args, "-n", cluster.namespace);

  const runNames = async () =>
    (await client.list(failoverRuns, { namespace: cluster.namespace })).items.map((r) => r.metadata.name).sort();
  const getRun = async (name: string) => {
    const found = await client.get(failoverRuns, name, cluster.namespace);
    ok(found !== undefined, `failoverrun ${name} exists`);
    return found;
  };
  const createdName = (result: KsrResult): string => {
    strictEqual(result.code, 0, result.stderr);
    const name = /^failoverrun\.dr\.ksr\.io\/(\S+) created$/m.exec(result.stdout)?.[1];
    ok(name !== undefined, result.stdout);
    return name;
  };
  const writeRunStatus = async (name: string, status: FailoverRunStatus) => {
    const current = await getRun(name);
    await client.replaceStatus(failoverRuns, { ...current, status });
  };

  const machine = (name: string): ProtectedMachine => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ProtectedMachine",
    metadata: { name, namespace: cluster.namespace },
    spec: {
      policyRef: { name: "shop" },
      source: { workloadRef: { kind: "Deployment", name } },
      target: { site: "recovery", namespace: "shop-recovery" },
      paused: false,
    },
  });

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "ksr-kdr-"));
    await installCrds(cluster.kubeConfig);
    client = new KubeClient(cluster.kubeConfig);
    const namespace = cluster.namespace;
    for (const name of ["shop-db", "shop-web"]) await client.create(protectedMachines, machine(name));
    const db = await client.get(protectedMachines, "shop-db", namespace);
    ok(db !== undefined);
    await client.replaceStatus(protectedMachines, {
      ...db,
      status: {
        phase: "Protected",
        health: "Healthy",
        rpo: "12s",
        activeSite: "primary",
        recoveryPoints: {
          count: 7,
          latest: { id: "shop-1764583200000-7", time: "2026-12-01T10:00:00Z", consistency: "CrashConsistent" },
          latestAppConsistent: {
            id: "shop-1764582000000-5",
            time: "2026-12-01T09:40:00Z",
            consistency: "AppConsistent",
          },
          oldest: { id: "shop-1764500000000-1", time: "2026-11-30T10:53:20Z", consistency: "CrashConsistent" },
          items: [
            { id: "shop-1764583200000-7", time: "2026-12-01T10:00:00Z", consistency: "CrashConsistent" },
            { id: "shop-1764582600000-6", time: "2026-12-01T09:50:00Z", consistency: "CrashConsistent" },
            { id: "shop-1764582000000-5", time: "2026-12-01T09:40:00Z", consistency: "AppConsistent" },
            { id: "shop-1764581400000-4", time: "2026-12-01T09:30:00Z", consistency: "CrashConsistent" },
          ],
        },
      },
    });
    const plan: RecoveryPlan = {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "RecoveryPlan",
      metadata: { name: "shop", namespace },
      spec: {
        groups: [
          {
            name: "database",
            machines: ["shop-db"],
            preActions: [
              {
                name: "confirm",
                runOn: ["Planned", "Unplanned"],
                onFailure: "Abort",
                manual: { instructions: "Confirm." },
              },
            ],
          },
          { name: "web", machines: ["shop-web"] },
        ],
      },
    };
    await client.create(recoveryPlans, plan);
  });
  after(() => {
    client.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  it("status shows machines (phase, health, RPO, latest point), plans and runs; -o json and wide", async () => {
    const table = await inNs("status");
    strictEqual(table.code, 0, table.stderr);
    match(table.stdout, /MACHINE\s+PHASE\s+HEALTH\s+RPO\s+LATEST POINT/);
    match(table.stdout, /shop-db\s+Protected\s+Healthy\s+12s\s+2026-12-01T10:00:00Z \(crash\)/);
    match(table.stdout, /shop-web\s+<none>\s+<none>\s+<none>\s+<none>/);
    match(table.stdout, /shop\s+2\s+2\s+<none>\s+<none>/);
    const wide = await inNs("status", "-o", "wide");
    match(wide.stdout, /LATEST APP-CONSISTENT/);
    match(wide.stdout, /2026-12-01T09:40:00Z \(app\)/);
    const json = JSON.parse((await dr("-n", cluster.namespace, "status", "-o", "json")).stdout) as {
      machines: unknown[];
      plans: unknown[];
    };
    strictEqual(json.machines.length, 2);
    strictEqual(json.plans.length, 1);
    const yaml = parse((await inNs("status", "-o", "yaml")).stdout) as { namespace: string };
    strictEqual(yaml.namespace, cluster.namespace);
  });

  it("points lists the retained points with their consistency", async () => {
    const listed = await inNs("points", "shop-db");
    strictEqual(listed.code, 0, listed.stderr);
    match(listed.stdout, /latest\s+shop-1764583200000-7\s+2026-12-01T10:00:00Z \(crash\)/);
    match(listed.stdout, /latest app-consistent\s+shop-1764582000000-5\s+2026-12-01T09:40:00Z \(app\)/);
    // Every listed point, newest first, the three named; the oldest after the listed ones.
    deepStrictEqual(
      listed.stdout
        .split("\n")
        .slice(1)
        .filter((line) => line.includes("shop-"))
        .map((line) => /shop-\d+-\d/.exec(line)?.[0]),
      [
        "shop-1764583200000-7",
        "shop-1764582600000-6",
        "shop-1764582000000-5",
        "shop-1764581400000-4",
        "shop-1764500000000-1",
      ],
    );
    match(listed.stdout, /^\s+shop-1764582600000-6\s+2026-12-01T09:50:00Z \(crash\)$/m);
    match(listed.stdout, /^oldest\s+shop-1764500000000-1/m);
    match(listed.stdout, /7 points kept, 5 listed \(the newest, and the oldest\)/);
    match((await inNs("points", "shop-web")).stdout, /has no recovery points yet/);
  });

  describe("typos and bad flags get a clear message and change nothing", () => {
    const cases: readonly { args: string[]; message: RegExp }[] = [
      { args: ["tset", "shop"], message: /unknown command 'tset'[\s\S]*Did you mean test\?/ },
      { args: ["test", "shop", "--isolaton"], message: /unknown option '--isolaton'/ },
      { args: ["failover", "shop"], message: /say which failover: --planned .* or --unplanned/ },
      { args: ["failover", "shop", "--planned", "--unplanned"], message: /cannot be used with option/ },
      {
        args: ["failover", "shop", "--planned", "--time", "2026-12-01T09:00:00Z"],
        message: /takes no recovery point flag/,
      },
      {
        args: ["failover", "shop", "--unplanned", "--time", "yesterday"],
        message: /--time "yesterday" is not an RFC 3339 time/,
      },
      { args: ["failover", "shop", "--unplanned", "--time", "2099-01-01T00:00:00Z"], message: /is in the future/ },
      { args: ["failover", "shop", "--unplanned", "--point", "p1"], message: /for a plan use --time/ },
      { args: ["test", "nosuchplan"], message: /recoveryplan nosuchplan not found in namespace/ },
      { args: ["test", "shop", "--machine", "shop-db"], message: /not both/ },
      { args: ["test", "--machine", "nosuchmachine"], message: /protectedmachine nosuchmachine not found/ },
      { args: ["test", "shop", "--drill-namespace", "Bad_NS"], message: /is not a namespace name/ },
      { args: ["test", "shop", "--wait", "--timeout", "soon"], message: /--timeout soon is not a duration/ },
      { args: ["status", "-o", "xml"], message: /argument 'xml' is invalid. Allowed choices are wide, json, yaml/ },
      { args: ["approve", "nosuchrun", "database/confirm"], message: /failoverrun nosuchrun not found/ },
      { args: ["approve", "x", "confirm"], message: /STEP "confirm" must be GROUP\/ACTION/ },
      { args: ["change-point", "x"], message: /give the point to move to/ },
      { args: ["pause", "nosuchmachine"], message: /protectedmachine nosuchmachine not found/ },
      { args: ["reprotect", "shop", "--machine", "shop-db"], message: /not both/ },
      { args: ["reprotect", "shop", "--latest"], message: /unknown option '--latest'/ },
    ];
    for (const { args, message } of cases)
      it(args.join(" "), async () => {
        const before = await runNames();
        const result = await inNs(...args);
        ok(result.code !== 0, `exit code ${result.code}: ${result.stdout}`);
        match(result.stderr, message);
        deepStrictEqual(await runNames(), before);
      });
    it("an unknown --context names the contexts there are, and changes nothing", async () => {
      const before = await runNames();
      const result = await dr("--context", "nope", "test", "shop");
      ok(result.code !== 0);
      match(result.stderr, /context "nope" is not in the kubeconfig; known: /);
      deepStrictEqual(await runNames(), before);
    });
  });

  it("test PLAN creates one Test run, isolated by default; --machine with --point drills one machine", async () => {
    const before = await runNames();
    const name = createdName(await inNs("test", "shop", "--latest-app", "--drill-namespace", "shop-drill"));
    deepStrictEqual(await runNames(), [...before, name].sort());
    const created = await getRun(name);
    match(name, /^shop-drill-\d{8}-\d{6}$/);
    deepStrictEqual(created.spec.planRef, { name: "shop" });
    deepStrictEqual(created.spec.recoveryPoint, { select: "LatestAppConsistent" });
    deepStrictEqual(created.spec.drill, { namespace: "shop-drill", isolation: "Isolated" });
    const single = await getRun(
      createdName(
        await inNs(
          "test",
          "--machine",
          "shop-db",
          "--point",
          "shop-1764583200000-7",
          "--no-isolation",
          "--name",
          "db-drill",
        ),
      ),
    );
    strictEqual(single.metadata.name, "db-drill");
    deepStrictEqual(single.spec.machineRef, { name: "shop-db" });
    deepStrictEqual(single.spec.recoveryPoint, { select: "ID", id: "shop-1764583200000-7" });
    strictEqual(single.spec.drill?.isolation, "None");
  });

  it("failover --planned and --unplanned create the run they describe", async () => {
    const planned = await getRun(createdName(await inNs("failover", "shop", "--planned")));
    strictEqual(planned.spec.type, "Planned");
    strictEqual(planned.spec.recoveryPoint, undefined);
    const unplanned = await getRun(
      createdName(
        await inNs("failover", "shop", "--unplanned", "--time", "2026-12-01T09:30:00Z", "--no-shutdown-source"),
      ),
    );
    strictEqual(unplanned.spec.type, "Unplanned");
    deepStrictEqual(unplanned.spec.recoveryPoint, { select: "Time", time: "2026-12-01T09:30:00Z" });
    deepStrictEqual(unplanned.spec.unplanned, { shutDownSource: false });
  });

  it("reprotect PLAN and reprotect --machine M create one Reprotect run each", async () => {
    const plan = await getRun(createdName(await inNs("reprotect", "shop")));
    deepStrictEqual(
      [plan.spec.type, plan.spec.planRef, plan.spec.recoveryPoint],
      ["Reprotect", { name: "shop" }, undefined],
    );
    const one = createdName(await inNs("reprotect", "--machine", "shop-db"));
    match(one, /^shop-db-reprotect-\d{8}-\d{6}/);
    deepStrictEqual((await getRun(one)).spec.machineRef, { name: "shop-db" });
  });

  it("approve appends one approval (by the user the API server sees), once; unknown steps are refused", async () => {
    const name = createdName(await inNs("failover", "shop", "--planned", "--name", "approve-me"));
    const approved = await inNs("approve", name, "database/confirm", "--comment", "CHG-7");
    strictEqual(approved.code, 0, approved.stderr);
    const approvals = (await getRun(name)).spec.approvals ?? [];
    strictEqual(approvals.length, 1);
    const [approval] = approvals;
    ok(approval !== undefined);
    strictEqual(approval.step, "database/confirm");
    strictEqual(approval.comment, "CHG-7");
    ok(approval.approvedBy.length > 0);
    const again = await inNs("approve", name, "database/confirm");
    match(again.stdout, /already approved by .*; nothing changed/);
    strictEqual((await getRun(name)).spec.approvals?.length, 1);
    const unknown = await inNs("approve", name, "web/confirm");
    ok(unknown.code !== 0);
    match(
      unknown.stderr,
      /web\/confirm is not a manual action of recoveryplan shop; its manual actions: database\/confirm/,
    );
    strictEqual((await getRun(name)).spec.approvals?.length, 1);
  });

  it("commit, cleanup and change-point patch only runs of the right type", async () => {
    const drill = createdName(await inNs("test", "shop", "--name", "drill-x"));
    const failover = createdName(await inNs("failover", "shop", "--unplanned", "--name", "failover-x"));
    const wrongCommit = await inNs("commit", drill);
    match(wrongCommit.stderr, /is a Test run; only a failover is committed/);
    strictEqual((await getRun(drill)).spec.commit, false);
    const wrongCleanup = await inNs("cleanup", failover);
    match(wrongCleanup.stderr, /is a Unplanned run; only a drill is cleaned up/);
    strictEqual((await inNs("cleanup", drill)).code, 0);
    strictEqual((await getRun(drill)).spec.cleanup, true);

    const changed = await inNs("change-point", failover, "--time", "2026-12-01T09:00:00Z");
    strictEqual(changed.code, 0, changed.stderr);
    match(changed.stdout, /recovery point change 1 requested/);
    deepStrictEqual((await getRun(failover)).spec.recoveryPointChanges, [
      { select: "Time", time: "2026-12-01T09:00:00Z" },
    ]);
    strictEqual((await inNs("commit", failover)).code, 0);
    strictEqual((await getRun(failover)).spec.commit, true);
    const late = await inNs("change-point", failover, "--latest-app");
    match(late.stderr, /is committed: its recovery point can no longer change/);
    strictEqual((await getRun(failover)).spec.recoveryPointChanges?.length, 1);
  });

  it("pause, resume and resync change only the machine's spec.paused and its resync annotation", async () => {
    strictEqual((await inNs("pause", "shop-web")).code, 0);
    strictEqual((await client.get(protectedMachines, "shop-web", cluster.namespace))?.spec.paused, true);
    strictEqual((await inNs("resume", "shop-web")).code, 0);
    const resumed = await client.get(protectedMachines, "shop-web", cluster.namespace);
    strictEqual(resumed?.spec.paused, false);
    strictEqual((await inNs("resync", "shop-web")).code, 0);
    const annotated = await client.get(protectedMachines, "shop-web", cluster.namespace);
    ok(!Number.isNaN(Date.parse(annotated?.metadata.annotations?.["dr.ksr.io/resync-requested-at"] ?? "")));
    strictEqual(annotated?.metadata.generation, resumed.metadata.generation);
  });

  it("--context picks the context's namespace", async () => {
    const config = parse(readFileSync(cluster.state.kubeconfig, "utf8")) as {
      contexts: { name: string; context: Record<string, string> }[];
      "current-context": string;
    };
    const current = config.contexts.find((context) => context.name === config["current-context"]);
    ok(current !== undefined);
    config.contexts.push({ name: "dr-suite", context: { ...current.context, namespace: cluster.namespace } });
    const file = join(scratch, "kubeconfig");
    writeFileSync(file, stringify(config));
    const { code, stdout, stderr } = await kubectlDr(file, ["status", "--context", "dr-suite"]);
    strictEqual(code, 0, stderr);
    match(stdout, new RegExp(`Namespace ${cluster.namespace}`));
    match(stdout, /shop-db\s+Protected/);
  });

  describe("--wait follows the run", () => {
    const follow = (args: string[]) => followDr(cluster.state.kubeconfig, ["-n", cluster.namespace, ...args]);
    const step = (name: string, phase: string, extra: Record<string, string> = {}) => ({
      name,
      action: "Recover" as const,
      phase: phase as "Running",
      ...extra,
    });

    it("prints each step as it starts and ends, and exits non-zero when the run fails", async () => {
      const followed = follow(["test", "shop", "--name", "wait-fail", "--wait"]);
      await eventually(
        "the run to be created",
        async () => (await client.get(failoverRuns, "wait-fail", cluster.namespace)) ?? undefined,
      );
      const startTime = "2026-12-01T10:00:00Z";
      await writeRunStatus("wait-fail", {
        phase: "Running",
        startTime,
        currentStep: "database/recover/shop-db",
        steps: [step("database/recover/shop-db", "Running", { startTime })],
      });
      await eventually("the start line", () =>
        Promise.resolve(followed.output().includes("start database/recover/shop-db") ? true : undefined),
      );
      await writeRunStatus("wait-fail", {
        phase: "Failed",
        startTime,
        steps: [
          step("database/recover/shop-db", "Failed", {
            startTime,
            endTime: "2026-12-01T10:00:12Z",
            message: "no recovery point at or before the time",
          }),
        ],
      });
      strictEqual(await followed.exited, 1);
      match(followed.output(), /FAILED database\/recover\/shop-db \(Recover\) in 12s: no recovery point/);
      match(followed.errors(), /failoverrun wait-fail failed/);
    });

    it("says which approval a waiting run needs, and exits 0 when it succeeds", async () => {
      const followed = follow(["failover", "shop", "--planned", "--name", "wait-ok", "--wait"]);
      await eventually(
        "the run to be created",
        async () => (await client.get(failoverRuns, "wait-ok", cluster.namespace)) ?? undefined,
      );
      const startTime = "2026-12-01T10:00:00Z";
      const waiting: FailoverRun["status"] = {
        phase: "WaitingForApproval",
        startTime,
        steps: [
          { name: "database/pre/confirm", action: "Manual", group: "database", phase: "WaitingForApproval", startTime },
        ],
      };
      await writeRunStatus("wait-ok", waiting);
      await eventually("the approval line", () =>
        Promise.resolve(
          followed.output().includes("needs approval: kubectl dr approve wait-ok database/confirm") ? true : undefined,
        ),
      );
      await writeRunStatus("wait-ok", {
        phase: "Succeeded",
        startTime,
        rto: "1m12s",
        dataLossWindow: "0s",
        steps: [
          {
            name: "database/pre/confirm",
            action: "Manual",
            group: "database",
            phase: "Succeeded",
            startTime,
            endTime: startTime,
            message: "approved by alice",
          },
        ],
      });
      strictEqual(await followed.exited, 0, followed.errors());
      match(followed.output(), /done database\/pre\/confirm \(Manual\) in 0s: approved by alice/);
      match(followed.output(), /RTO 1m12s, data loss 0s/);
    });
  });
});
