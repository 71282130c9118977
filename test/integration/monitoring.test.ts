// The chart's alerts and dashboard, checked with Debian's promtool: the rules as the chart renders
// them are valid, each alert fires (and stays quiet) on the series of test/monitoring/alerts.test.yaml,
// and every dashboard query is valid PromQL over the operator's metric names.
import { strict as assert } from "node:assert";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Histogram, Registry } from "prom-client";
import { parse, stringify } from "yaml";
import { FailoverMetrics } from "../../src/controllers/failoverrun/metrics.js";
import { MachineMetrics } from "../../src/controllers/metrics.js";
import { packageRoot } from "../../src/util/package-root.js";
import { chartDir, promtool, renderChart } from "../fixture/tools.js";

/**
 * The series the operator exports, named from its metric classes, not written here: a histogram
 * is its _bucket, _sum and _count series (its bare name is no series Prometheus stores).
 */
function operatorMetricNames(): Set<string> {
  const registry = new Registry();
  new MachineMetrics(registry);
  new FailoverMetrics(registry);
  return new Set(
    registry
      .getMetricsAsArray()
      .flatMap((metric) =>
        metric instanceof Histogram ? ["_bucket", "_sum", "_count"].map((s) => metric.name + s) : [metric.name],
      ),
  );
}
const knownMetrics = operatorMetricNames();
const metricNames = (expr: string) => [...expr.matchAll(/\bksr_[a-z_]+\b/g)].map((m) => m[0]);

interface Dashboard {
  panels: { title: string; targets: { expr: string }[] }[];
  templating: { list: { name: string; type: string; query?: { query: string } | string }[] };
}

describe("monitoring", function () {
  this.timeout(10 * 60_000); // rendering may build helm first
  let dir = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ksr-monitoring-"));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("the PrometheusRule the chart renders passes promtool check rules", async () => {
    const objects = await renderChart([
      "--api-versions",
      "monitoring.coreos.com/v1",
      "--set",
      "prometheusRule.enabled=true",
      "--set",
      "prometheusRule.runbookBaseUrl=https://docs.example.com/runbooks.md",
    ]);
    const rule = objects.find((o) => o.kind === "PrometheusRule");
    assert.ok(rule, "no PrometheusRule rendered");
    const spec = rule.spec as {
      groups: { rules: { alert: string; expr: string; annotations: Record<string, string> }[] }[];
    };
    const file = join(dir, "rendered.yaml");
    writeFileSync(file, stringify(spec));
    const result = await promtool(["check", "rules", file]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /SUCCESS: 7 rules found/);
    const alerts = spec.groups.flatMap((g) => g.rules);
    for (const alert of alerts) {
      assert.equal(alert.annotations.runbook_url, `https://docs.example.com/runbooks.md#${alert.alert.toLowerCase()}`);
      for (const name of metricNames(alert.expr))
        assert.ok(knownMetrics.has(name), `${alert.alert} uses unknown ${name}`);
    }
  });

  it("every alert has a runbook section in docs/runbooks.md", () => {
    const runbooks = readFileSync(join(packageRoot, "docs", "runbooks.md"), "utf8");
    const rules = readFileSync(join(chartDir, "files", "prometheus-rules.yaml"), "utf8");
    const alerts = [...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1] as string);
    assert.equal(alerts.length, 7);
    for (const alert of alerts) assert.match(runbooks, new RegExp(`^## ${alert}$`, "m"), `no runbook for ${alert}`);
  });

  it("the alert tests feed only series the operator exports, and every journal gauge the alerts read is one", () => {
    const tests = parse(readFileSync(join(packageRoot, "test", "monitoring", "alerts.test.yaml"), "utf8")) as {
      tests: { input_series: { series: string }[] }[];
    };
    const fed = new Set(tests.tests.flatMap((t) => t.input_series.map((s) => s.series.replace(/\{.*$/, ""))));
    for (const name of fed)
      assert.ok(knownMetrics.has(name), `alerts.test.yaml feeds ${name}, which the operator does not export`);
    for (const name of [
      "ksr_journal_used_bytes",
      "ksr_journal_capacity_bytes",
      "ksr_journal_oldest_point_age_seconds",
      "ksr_journal_retention_seconds",
    ])
      assert.ok(knownMetrics.has(name) && fed.has(name), name);
  });

  it("each alert fires on the series that should raise it and not on the others (promtool test rules)", async () => {
    const result = await promtool(["test", "rules", join(packageRoot, "test", "monitoring", "alerts.test.yaml")]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /SUCCESS/);
  });

  it("every dashboard query is valid PromQL over the operator's metrics", async () => {
    const dashboard = JSON.parse(readFileSync(join(chartDir, "files", "dashboard.json"), "utf8")) as Dashboard;
    const queries = [
      ...dashboard.panels.flatMap((p) => p.targets.map((t) => ({ what: p.title, expr: t.expr }))),
      ...dashboard.templating.list.flatMap((v) =>
        typeof v.query === "object"
          ? [{ what: `variable ${v.name}`, expr: v.query.query.replace(/^label_values\((.*), \w+\)$/, "$1") }]
          : [],
      ),
    ];
    assert.ok(queries.length >= 10);
    // Grafana's variables replaced by what it substitutes, so promtool parses each query as a recording rule.
    const grafana = (expr: string) =>
      expr
        .replaceAll("$__rate_interval", "2m")
        .replaceAll("$__range", "1h")
        .replaceAll(/\$(namespace|machine)/g, ".*");
    const rules = queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: grafana(q.expr) }));
    for (const q of queries)
      for (const name of metricNames(q.expr)) assert.ok(knownMetrics.has(name), `${q.what} uses unknown ${name}`);
    const file = join(dir, "dashboard-queries.yaml");
    writeFileSync(file, stringify({ groups: [{ name: "dashboard", rules }] }));
    const result = await promtool(["check", "rules", file]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const panels = dashboard.panels.map((p) => p.title);
    for (const wanted of [
      "RPO per machine",
      "Replication throughput",
      "Pending bytes",
      "Recovery points",
      "RTO of failover runs",
    ])
      assert.ok(panels.includes(wanted), `dashboard has no "${wanted}" panel`);
  });
});
