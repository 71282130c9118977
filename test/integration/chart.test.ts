// The Helm chart, checked with the real helm (built from its Go module): lint, rendering against
// values.schema.json, the monitoring objects' gates, and the RBAC and Deployment compared with
// what `ksr install` applies.
import { strict as assert } from "node:assert";
import {
  configHashAnnotation,
  operatorManifests,
  defaultNamespace,
  projectImage,
} from "../../src/install/manifests.js";
import { defaultLeaderElection } from "../../src/cli/commands/leader-election-flags.js";
import { parseOperatorConfig } from "../../src/notifications/config.js";
import { chartDir, helm, helmBinary, renderChart, type RenderedObject } from "../fixture/tools.js";

const monitoringApi = ["--api-versions", "monitoring.coreos.com/v1"];
const allMonitoring = [
  "--set",
  "metrics.serviceMonitor.enabled=true",
  "--set",
  "prometheusRule.enabled=true",
  "--set",
  "grafanaDashboard.enabled=true",
];

const kindsOf = (objects: RenderedObject[]) => objects.map((o) => o.kind).sort();
const one = (objects: RenderedObject[], kind: string): RenderedObject => {
  const found = objects.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `expected one ${kind}, got ${found.length}`);
  return found[0] as RenderedObject;
};

describe("Helm chart", function () {
  this.timeout(20 * 60_000); // the first test may build helm

  before(async () => {
    await helmBinary();
  });

  it("passes helm lint --strict", async () => {
    const result = await helm(["lint", "--strict", chartDir]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it("renders the operator, its RBAC and its metrics Service by default, and no monitoring objects", async () => {
    const objects = await renderChart(monitoringApi);
    assert.deepEqual(kindsOf(objects), [
      "ClusterRole",
      "ClusterRoleBinding",
      "Deployment",
      "Role",
      "RoleBinding",
      "Service",
      "ServiceAccount",
    ]);
  });

  describe("monitoring objects are gated on their own value and on monitoring.coreos.com/v1", () => {
    const cases: { value: string; kind: string }[] = [
      { value: "metrics.serviceMonitor.enabled", kind: "ServiceMonitor" },
      { value: "prometheusRule.enabled", kind: "PrometheusRule" },
      { value: "grafanaDashboard.enabled", kind: "ConfigMap" },
    ];
    for (const { value, kind } of cases) {
      it(`${value} alone renders only the ${kind}, and only when the API is served`, async () => {
        const withApi = await renderChart([...monitoringApi, "--set", `${value}=true`]);
        const monitoringKinds = kindsOf(withApi).filter((k) =>
          ["ServiceMonitor", "PrometheusRule", "ConfigMap"].includes(k),
        );
        assert.deepEqual(monitoringKinds, [kind]);
        const withoutApi = await renderChart(["--set", `${value}=true`]);
        assert.equal(withoutApi.filter((o) => o.kind === kind).length, 0, `${kind} rendered without the API`);
      });
    }

    it("the dashboard ConfigMap holds the dashboard JSON under Grafana's sidecar label", async () => {
      const configMap = one(await renderChart([...monitoringApi, ...allMonitoring]), "ConfigMap");
      assert.equal(configMap.metadata.labels?.grafana_dashboard, "1");
      const data = configMap.data as Record<string, string>;
      const dashboard = JSON.parse(data["kube-site-recovery.json"] ?? "") as { uid: string; panels: unknown[] };
      assert.equal(dashboard.uid, "kube-site-recovery");
      assert.ok(dashboard.panels.length >= 6);
    });

    it("the ServiceMonitor keeps the machines' own namespace label (honorLabels)", async () => {
      const monitor = one(await renderChart([...monitoringApi, ...allMonitoring]), "ServiceMonitor");
      const endpoints = (monitor.spec as { endpoints: { port: string; honorLabels: boolean }[] }).endpoints;
      assert.deepEqual(
        endpoints.map((e) => [e.port, e.honorLabels]),
        [["metrics", true]],
      );
    });
  });

  describe("values are checked against values.schema.json", () => {
    const good: string[][] = [
      ["--set", "operator.replicas=3"],
      ["--set", "operator.spreadAcrossSites=false"],
      ["--set", "image.tag=v0.1.0-rc.1", "--set", "image.pullPolicy=Never"],
      ["--set", "operator.leaderElection.leaseDuration=1m30s"],
      ["--set", "prometheusRule.runbookBaseUrl=https://docs.example.com/runbooks.md"],
      ["--set-string", "operator.nodeSelector.topology\\.dr\\.ksr\\.io/site=primary"],
    ];
    for (const args of good) {
      it(`accepts ${args.filter((a) => !a.startsWith("--")).join(" ")}`, async () => {
        const deployment = one(await renderChart(args), "Deployment");
        assert.equal(deployment.metadata.name, "ksr-operator");
      });
    }

    const bad: { args: string[]; message: RegExp }[] = [
      { args: ["--set", "operator.replicas=0"], message: /\/operator\/replicas.*minimum: got 0, want 1/ },
      { args: ["--set", "operator.replicas=two"], message: /\/operator\/replicas.*got string, want integer/ },
      { args: ["--set", "image.pullPolicy=Sometimes"], message: /\/image\/pullPolicy/ },
      { args: ["--set", "image.repository="], message: /\/image\/repository/ },
      {
        args: ["--set", "operator.leaderElection.leaseDuration=15"],
        message: /\/operator\/leaderElection\/leaseDuration/,
      },
      { args: ["--set", "operator.healthPort=80"], message: /\/operator\/healthPort.*minimum/ },
      { args: ["--set", "operator.resources.requests.cpu=lots"], message: /\/operator\/resources\/requests\/cpu/ },
      { args: ["--set", "prometheusRule.runbookBaseUrl=ftp://x"], message: /\/prometheusRule\/runbookBaseUrl/ },
      { args: ["--set", "metrics.serviceMonitor.interval=often"], message: /\/metrics\/serviceMonitor\/interval/ },
      { args: ["--set", "operater.replicas=2"], message: /additional properties 'operater' not allowed/ },
      {
        args: ["--set", "notifications.receivers[0].name=x", "--set", "notifications.receivers[0].webhook.url=ftp://x"],
        message: /\/notifications\/receivers\/0\/webhook\/url/,
      },
      {
        args: [
          "--set",
          "notifications.receivers[0].name=x",
          "--set",
          "notifications.receivers[0].email.smtp.host=smtp.example.com",
          "--set",
          "notifications.receivers[0].email.smtp.password=hunter2",
          "--set",
          "notifications.receivers[0].email.from=dr@example.com",
          "--set",
          "notifications.receivers[0].email.to[0]=oncall@example.com",
        ],
        message: /additional properties 'password' not allowed/,
      },
      {
        args: ["--set", "serviceAccount.create=false"],
        message: /serviceAccount\.name is required when serviceAccount\.create is false/,
      },
      {
        args: [
          ...monitoringApi,
          "--set",
          "metrics.serviceMonitor.enabled=true",
          "--set",
          "metrics.service.enabled=false",
        ],
        message: /metrics\.serviceMonitor\.enabled needs metrics\.service\.enabled/,
      },
    ];
    for (const { args, message } of bad) {
      it(`refuses ${args.filter((a) => !a.startsWith("--")).join(" ")} naming what to fix`, async () => {
        await assert.rejects(renderChart(args), message);
      });
    }
  });

  it("notifications render the ConfigMap the operator reads, and roll the operator when they change", async () => {
    const receivers = [
      "--set",
      "notifications.receivers[0].name=chat",
      "--set",
      "notifications.receivers[0].webhook.urlSecretRef.name=slack",
      "--set",
      "notifications.receivers[0].webhook.urlSecretRef.key=url",
    ];
    const objects = await renderChart(receivers);
    const configMap = one(objects, "ConfigMap");
    assert.equal(configMap.metadata.name, "ksr-operator-config");
    const config = parseOperatorConfig((configMap.data as Record<string, string>)["config.yaml"] ?? "", "chart");
    assert.deepEqual(config.notifications.receivers, [
      {
        name: "chat",
        categories: ["MachineHealth", "RpoThreshold", "RunResult"],
        webhook: { urlSecretRef: { name: "slack", key: "url" } },
      },
    ]);
    const hashOf = (deployment: RenderedObject) =>
      (deployment.spec as { template: { metadata: { annotations?: Record<string, string> } } }).template.metadata
        .annotations?.[configHashAnnotation];
    const first = hashOf(one(objects, "Deployment"));
    assert.match(first ?? "", /^[0-9a-f]{64}$/);
    const changed = await renderChart([...receivers, "--set", "notifications.receivers[0].categories[0]=RunResult"]);
    assert.notEqual(hashOf(one(changed, "Deployment")), first);
    assert.equal(hashOf(one(await renderChart(), "Deployment")), undefined);
  });

  describe("matches what `ksr install` applies", () => {
    const installed = operatorManifests({ namespace: defaultNamespace, image: projectImage, replicas: 2 });
    const installedOf = (kind: string) => {
      const found = installed.find((m) => m.type.kind === kind);
      assert.ok(found, `ksr install applies no ${kind}`);
      return found.object as Record<string, unknown>;
    };

    it("the ClusterRole and the leader-election Role have exactly the rules of src/install/rbac.ts", async () => {
      const chart = await renderChart();
      assert.deepEqual(one(chart, "ClusterRole").rules, installedOf("ClusterRole").rules);
      assert.deepEqual(one(chart, "Role").rules, installedOf("Role").rules);
      assert.equal(one(chart, "Role").metadata.namespace, "ksr-system");
    });

    it("no rule has a wildcard", async () => {
      for (const object of await renderChart()) {
        if (!object.kind.endsWith("Role")) continue;
        for (const rule of object.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[])
          for (const word of [...rule.apiGroups, ...rule.resources, ...rule.verbs])
            assert.ok(!word.includes("*"), `${object.kind} has ${word}`);
      }
    });

    it("the Deployment runs the operator as ksr install does: replicas, spread, probes, security", async () => {
      type PodTemplate = {
        spec: {
          topologySpreadConstraints: unknown;
          affinity: unknown;
          securityContext: unknown;
          containers: Record<string, unknown>[];
        };
      };
      const pick = (deployment: Record<string, unknown>) => {
        const spec = deployment.spec as { replicas: number; template: PodTemplate };
        const pod = spec.template.spec;
        const container = pod.containers[0] as Record<string, unknown>;
        const withoutInstance = (value: unknown) =>
          JSON.parse(JSON.stringify(value).replaceAll(',"app.kubernetes.io/instance":"ksr"', "")) as unknown;
        return {
          replicas: spec.replicas,
          spread: withoutInstance(pod.topologySpreadConstraints),
          affinity: withoutInstance(pod.affinity),
          podSecurity: pod.securityContext,
          containerSecurity: container.securityContext,
          ports: container.ports,
          liveness: container.livenessProbe,
          readiness: container.readinessProbe,
          resources: container.resources,
          env: container.env,
        };
      };
      const chartDeployment = one(await renderChart(), "Deployment");
      assert.deepEqual(pick(chartDeployment), pick(installedOf("Deployment")));
      const args = (
        (chartDeployment.spec as { template: PodTemplate }).template.spec.containers[0] as { args: string[] }
      ).args;
      assert.deepEqual(args.slice(0, 3), ["operator", "--namespace=$(POD_NAMESPACE)", "--health-port=8080"]);
      const image = (chartDeployment.spec as { template: PodTemplate }).template.spec.containers[0]?.image;
      assert.ok(args.includes(`--replicator-image=${String(image)}`), `the replicators do not run ${String(image)}`);
      // The chart's leader-election values default to what `ksr install` passes by default.
      const { leaseDuration, renewDeadline, retryPeriod } = defaultLeaderElection;
      for (const arg of [
        `--lease-duration=${leaseDuration}`,
        `--renew-deadline=${renewDeadline}`,
        `--retry-period=${retryPeriod}`,
      ])
        assert.ok(args.includes(arg), `${arg} in ${args.join(" ")}`);
    });
  });
});
