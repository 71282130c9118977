// ksr_failover_runs_total exports every type and result from the start, so the dashboard's
// increase() over its range counts a kind's first run; a run's end adds one to its own series and
// sets the latest RTO of its type.
import { strictEqual } from "node:assert/strict";
import { Registry } from "prom-client";
import { FailoverMetrics, RUN_RESULTS, RUN_TYPES } from "../../src/controllers/failoverrun/metrics.js";

async function runsTotal(registry: Registry): Promise<Map<string, number>> {
  const text = await registry.getSingleMetricAsString("ksr_failover_runs_total");
  const samples = [...text.matchAll(/^ksr_failover_runs_total\{type="(\w+)",result="(\w+)"\} (\d+)$/gm)];
  return new Map(samples.map(([, type, result, value]) => [`${type ?? ""}/${result ?? ""}`, Number(value)]));
}

describe("FailoverRun metrics", () => {
  it("exports ksr_failover_runs_total at 0 for every type and result before any run ends", async () => {
    const registry = new Registry();
    new FailoverMetrics(registry);
    const totals = await runsTotal(registry);
    strictEqual(totals.size, RUN_TYPES.length * RUN_RESULTS.length);
    for (const type of RUN_TYPES) for (const result of RUN_RESULTS) strictEqual(totals.get(`${type}/${result}`), 0);
  });

  it("counts a run's end in its own type and result only, and keeps the latest RTO of each type", async () => {
    const registry = new Registry();
    const metrics = new FailoverMetrics(registry);
    metrics.observe("Test", { runEnded: { result: "CleanedUp" }, rtoSeconds: 42 });
    const totals = await runsTotal(registry);
    strictEqual(totals.get("Test/CleanedUp"), 1);
    strictEqual(
      [...totals.values()].reduce((a, b) => a + b, 0),
      1,
    );
    metrics.observe("Test", { runEnded: { result: "CleanedUp" }, rtoSeconds: 30 });
    strictEqual((await runsTotal(registry)).get("Test/CleanedUp"), 2);
    const rto = await registry.getSingleMetricAsString("ksr_failover_rto_seconds");
    strictEqual(/^ksr_failover_rto_seconds_sum\{type="Test"\} 72$/m.test(rto), true, rto);
    const last = await registry.getSingleMetricAsString("ksr_failover_last_rto_seconds");
    strictEqual(/^ksr_failover_last_rto_seconds\{type="Test"\} 30$/m.test(last), true, last);
  });
});
