// What `ksr install` applies, checked without a cluster: least-privilege RBAC
// (no wildcards, documented as it is), and a Deployment that keeps a standby
// on the other site and runs unprivileged.
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { clusterRules, namespaceRules, rbacTable } from "../../src/install/rbac.js";
import { podProblem } from "../../src/install/install.js";
import { defaultLeaderElection, leaderElectionTiming } from "../../src/cli/commands/leader-election-flags.js";
import { imageFlag, operatorManifests, type LeaderElectionFlags } from "../../src/install/manifests.js";
import { siteLabel } from "../../src/local/node/layout.js";
import type { Pod } from "../../src/runtime/index.js";
import { packageRoot } from "../../src/util/package-root.js";

interface DeploymentShape {
  spec: {
    replicas: number;
    template: {
      spec: {
        topologySpreadConstraints: { topologyKey: string; maxSkew: number; whenUnsatisfiable: string }[];
        securityContext: { runAsNonRoot: boolean };
        containers: {
          image: string;
          args: string[];
          securityContext: { allowPrivilegeEscalation: boolean; capabilities: { drop: string[] } };
          livenessProbe: { httpGet: { path: string } };
          readinessProbe: { httpGet: { path: string } };
          resources: { requests: Record<string, string> };
        }[];
      };
    };
  };
}

describe("ksr install manifests", () => {
  const manifests = operatorManifests({ namespace: "ksr-system", image: "kube-site-recovery", replicas: 2 });

  it("grants no wildcard verb, resource or API group", () => {
    for (const rule of [...clusterRules, ...namespaceRules]) {
      for (const value of [...rule.verbs, ...rule.resources, ...rule.apiGroups])
        assert.ok(!value.includes("*"), `${JSON.stringify(rule)} holds a wildcard`);
      assert.ok(rule.verbs.length > 0 && rule.resources.length > 0 && rule.reason !== "");
    }
  });

  it("keeps leases namespaced and out of the ClusterRole", () => {
    assert.ok(!clusterRules.some((rule) => rule.resources.includes("leases")));
    const role = manifests.find((m) => m.type.kind === "Role")?.object as unknown as {
      rules: { resources: string[] }[];
    };
    assert.deepEqual(
      role.rules.flatMap((rule) => rule.resources),
      ["leases"],
    );
  });

  it("documents exactly the rules it applies (docs/operator.md)", () => {
    const doc = readFileSync(join(packageRoot, "docs", "operator.md"), "utf8");
    assert.ok(doc.includes(rbacTable()), "docs/operator.md's permission table differs from src/install/rbac.ts");
  });

  it("runs two unprivileged replicas spread across the sites, probed on /healthz and /readyz", () => {
    const deployment = manifests.find((m) => m.type.kind === "Deployment")?.object as unknown as DeploymentShape;
    assert.equal(deployment.spec.replicas, 2);
    const pod = deployment.spec.template.spec;
    const spread = pod.topologySpreadConstraints[0];
    assert.deepEqual(
      [spread?.topologyKey, spread?.maxSkew, spread?.whenUnsatisfiable],
      [siteLabel, 1, "DoNotSchedule"],
    );
    assert.equal(pod.securityContext.runAsNonRoot, true);
    const [container] = pod.containers;
    assert.equal(container?.image, "kube-site-recovery");
    assert.equal(container.args[0], "operator");
    // The replicators it places run the same image, so `--image` names the whole release.
    assert.equal(container.args[container.args.indexOf("--replicator-image") + 1], "kube-site-recovery");
    assert.equal(container.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(container.securityContext.capabilities.drop, ["ALL"]);
    assert.equal(container.livenessProbe.httpGet.path, "/healthz");
    assert.equal(container.readinessProbe.httpGet.path, "/readyz");
    assert.ok(container.resources.requests.memory !== undefined);
  });

  it("puts every namespaced object in the install namespace", () => {
    for (const { type, object } of manifests) {
      if (type.namespaced)
        assert.equal(object.metadata.namespace, "ksr-system", `${type.kind} ${object.metadata.name}`);
    }
  });
});

describe("ksr install --wait: why an operator pod is not ready", () => {
  type ContainerState = NonNullable<NonNullable<NonNullable<Pod["status"]>["containerStatuses"]>[number]["state"]>;
  /** The operator pod on `node` with its one container in `state`. */
  const operatorPod = (node: string, state: ContainerState, restartCount = 0): Pod => ({
    metadata: { name: "ksr-operator-x" },
    spec: { nodeName: node, containers: [{ name: "operator" }] },
    status: {
      containerStatuses: [
        { name: "operator", image: "kube-site-recovery", imageID: "", ready: false, restartCount, state },
      ],
    },
  });
  const cases: [string, Pod, RegExp][] = [
    [
      "unscheduled",
      {
        metadata: { name: "ksr-operator-x" },
        status: {
          conditions: [
            { type: "PodScheduled", status: "False", message: "0/2 nodes are available: 2 Insufficient cpu." },
          ],
        },
      },
      /pod ksr-operator-x is not scheduled: 0\/2 nodes are available: 2 Insufficient cpu\./,
    ],
    [
      "image not in the node's table",
      operatorPod("ksr-recovery", { waiting: { reason: "ErrImageNeverPull", message: "image x is not in the table" } }),
      /on ksr-recovery: container operator waiting \(ErrImageNeverPull: image x is not in the table\)/,
    ],
    [
      "crashing",
      operatorPod("ksr-primary", { terminated: { exitCode: 1, reason: "Error" } }, 3),
      /container operator exited 1 \(Error\), restarts 3/,
    ],
    ["running, not ready", operatorPod("ksr-primary", { running: {} }), /running, not ready \(\/readyz failing\)/],
  ];
  for (const [name, example, expected] of cases) {
    it(name, () => {
      assert.match(podProblem(example), expected);
    });
  }
});

describe("--image and --replicator-image", () => {
  for (const good of ["kube-site-recovery", "kube-site-recovery:0.1.0", "registry.example:5000/dr/ksr@sha256:abc"])
    it(`accepts ${good}`, () => {
      assert.equal(imageFlag(` ${good} `, "--image"), good);
    });
  for (const bad of ["", "kube site recovery", "kube-site-recovery:", "registry.example/"])
    it(`refuses "${bad}", naming the flag`, () => {
      assert.throws(() => imageFlag(bad, "--replicator-image"), /^Error: --replicator-image: image .* is not a valid/);
    });
});

describe("--lease-duration, --renew-deadline and --retry-period (ksr install and ksr operator)", () => {
  it("passes ksr install's timing to the operator's arguments, and none without it", () => {
    const args = (leaderElection?: LeaderElectionFlags) =>
      (
        operatorManifests({
          namespace: "ksr-system",
          image: "kube-site-recovery",
          replicas: 2,
          ...(leaderElection === undefined ? {} : { leaderElection }),
        }).find((m) => m.type.kind === "Deployment")?.object as unknown as DeploymentShape
      ).spec.template.spec.containers[0]?.args ?? [];
    const given = args({ leaseDuration: "8s", renewDeadline: "6s", retryPeriod: "1s" });
    for (const [flag, value] of [
      ["--lease-duration", "8s"],
      ["--renew-deadline", "6s"],
      ["--retry-period", "1s"],
    ] as const)
      assert.equal(given[given.indexOf(flag) + 1], value, flag);
    assert.ok(!args().includes("--lease-duration"));
  });

  it("accepts the defaults and a faster takeover", () => {
    assert.deepEqual(leaderElectionTiming(defaultLeaderElection), {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2000,
    });
    assert.equal(
      leaderElectionTiming({ leaseDuration: "8s", renewDeadline: "6s", retryPeriod: "1s" }).leaseDurationMs,
      8000,
    );
  });

  const bad: { flags: Partial<LeaderElectionFlags>; message: RegExp }[] = [
    {
      flags: { leaseDuration: "soon" },
      message: /^Error: --lease-duration must be a duration such as 15s or 2m, got "soon"$/,
    },
    { flags: { retryPeriod: "0s" }, message: /^Error: --retry-period must be a duration/ },
    {
      flags: { leaseDuration: "10s" },
      message:
        /^Error: --lease-duration, --renew-deadline, --retry-period: .*leaseDuration \(10000 ms\) must exceed renewDeadline \(10000 ms\)/,
    },
    { flags: { renewDeadline: "2s" }, message: /renewDeadline \(2000 ms\) must exceed 1\.2 × retryPeriod \(2000 ms\)/ },
  ];
  for (const { flags, message } of bad)
    it(`refuses ${JSON.stringify(flags)}, naming the flags`, () => {
      assert.throws(() => leaderElectionTiming({ ...defaultLeaderElection, ...flags }), message);
    });
});
