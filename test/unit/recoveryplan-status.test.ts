// RecoveryPlan status from observations, and the webhook URL check, without a cluster.
import { deepStrictEqual, match, strictEqual } from "node:assert/strict";
import { planStatus } from "../../src/controllers/recoveryplan/status.js";
import { webhookUrlProblem } from "../../src/controllers/failoverrun/steps/webhook.js";
import { action, machine, newRun, shopPlan } from "../fixture/failoverrun-world.js";

const allProtected = () => new Map(["shop-db", "shop-api", "shop-web"].map((name) => [name, machine(name)]));

describe("RecoveryPlan status", () => {
  it("is Valid when every machine is Protected and every action is valid; counts groups and machines", () => {
    const status = planStatus(shopPlan(), { machines: allProtected(), runs: [], scriptErrors: new Map() });
    strictEqual(status.valid.status, "True");
    deepStrictEqual(status.fields.unreadyMachines, []);
    strictEqual(status.fields.groupCount, 3);
    strictEqual(status.fields.machineCount, 3);
    strictEqual(status.fields.lastRun, undefined);
  });
  it("lists missing and unprotected machines, and reports script Jobs the server refused", () => {
    const machines = allProtected();
    machines.delete("shop-api");
    machines.set("shop-db", machine("shop-db", "InitialReplication"));
    const status = planStatus(shopPlan(), {
      machines,
      runs: [],
      scriptErrors: new Map([["api/smoke-test", "spec.template.spec.containers: Required value"]]),
    });
    strictEqual(status.valid.status, "False");
    strictEqual(status.valid.reason, "MachinesNotReady");
    deepStrictEqual(status.fields.unreadyMachines, [
      { name: "shop-db", reason: "InitialReplication" },
      { name: "shop-api", reason: "NotFound" },
    ]);
    match(
      status.valid.message ?? "",
      /api\/smoke-test: its Job is refused: spec.template.spec.containers: Required value/,
    );
  });
  it("reports traffic switched before its machine is recovered, or to a machine outside the plan", () => {
    const plan = shopPlan();
    const [database, api] = plan.spec.groups;
    database?.preActions?.push(action("early", { traffic: { service: "web", machine: "shop-db" } }));
    api?.postActions?.push(action("too-soon", { traffic: { service: "web", machine: "shop-web" } }));
    api?.postActions?.push(action("nowhere", { traffic: { service: "web", machine: "cache" } }));
    api?.postActions?.push(action("in-time", { traffic: { service: "api", machine: "shop-api" } }));
    const status = planStatus(plan, { machines: allProtected(), runs: [], scriptErrors: new Map() });
    strictEqual(status.valid.reason, "InvalidActions");
    deepStrictEqual(status.valid.message?.split("; "), [
      "database/early switches traffic to shop-db before it is recovered (by group database): make it a postAction of that group",
      "api/too-soon switches traffic to shop-web before it is recovered (by group web): make it a postAction of that group",
      "api/nowhere switches traffic to cache, which is not a machine of the plan",
    ]);
  });
  it("names the newest run as the last run", () => {
    const older = newRun({ type: "Test" }, "older");
    const newer = newRun({ type: "Planned" }, "newer");
    newer.metadata.creationTimestamp = "2026-12-01T11:00:00Z";
    newer.status = { phase: "Succeeded", completionTime: "2026-12-01T11:05:00Z" };
    const status = planStatus(shopPlan(), { machines: allProtected(), runs: [older, newer], scriptErrors: new Map() });
    deepStrictEqual(status.fields.lastRun, {
      name: "newer",
      type: "Planned",
      phase: "Succeeded",
      completionTime: "2026-12-01T11:05:00Z",
    });
  });
});

describe("webhook URLs", () => {
  const cases: readonly [string, RegExp | undefined][] = [
    ["https://hooks.example.com/dr", undefined],
    ["http://10.0.0.7:8080/x", undefined],
    ["ftp://hooks.example.com/x", /ftp: URLs are not called/],
    ["https://ops:secret@hooks.example.com/x", /carries credentials/],
    ["hooks.example.com/x", /is not an absolute URL/],
  ];
  for (const [url, problem] of cases)
    it(`${url}: ${problem === undefined ? "called" : "refused"}`, () => {
      const found = webhookUrlProblem(url);
      if (problem === undefined) strictEqual(found, undefined);
      else match(found ?? "", problem);
    });
});
