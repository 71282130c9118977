// Which Secrets and ConfigMaps a recovered workload needs: every way a pod template refers to one.
import { strict as assert } from "node:assert";
import type { V1PodSpec } from "@kubernetes/client-node";
import { configReferences, type ConfigReference } from "../../src/controllers/failoverrun/steps/config.js";

const secret = (name: string, optional = false): ConfigReference => ({ kind: "Secret", name, optional });
const configMap = (name: string, optional = false): ConfigReference => ({ kind: "ConfigMap", name, optional });
const container = (changes: Partial<V1PodSpec["containers"][number]>) => ({ name: "c", image: "busybox", ...changes });

const cases: readonly { name: string; spec: V1PodSpec | undefined; want: ConfigReference[] }[] = [
  { name: "no pod spec", spec: undefined, want: [] },
  { name: "nothing referred to", spec: { containers: [container({ env: [{ name: "A", value: "1" }] })] }, want: [] },
  {
    name: "env valueFrom, both kinds",
    spec: {
      containers: [
        container({
          env: [
            { name: "P", valueFrom: { secretKeyRef: { name: "pw", key: "k" } } },
            { name: "M", valueFrom: { configMapKeyRef: { name: "cfg", key: "k" } } },
            { name: "N", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
          ],
        }),
      ],
    },
    want: [configMap("cfg"), secret("pw")],
  },
  {
    name: "envFrom in an init container",
    spec: {
      initContainers: [
        container({ envFrom: [{ secretRef: { name: "init-pw" }, configMapRef: { name: "init-cfg" } }] }),
      ],
      containers: [container({})],
    },
    want: [configMap("init-cfg"), secret("init-pw")],
  },
  {
    name: "secret, configMap and projected volumes",
    spec: {
      containers: [container({})],
      volumes: [
        { name: "a", secret: { secretName: "tls" } },
        { name: "b", configMap: { name: "conf" } },
        {
          name: "c",
          projected: {
            sources: [
              { secret: { name: "p-secret" } },
              { configMap: { name: "p-conf", optional: true } },
              { serviceAccountToken: { path: "token" } },
            ],
          },
        },
        { name: "d", persistentVolumeClaim: { claimName: "data" } },
      ],
    },
    want: [configMap("conf"), configMap("p-conf", true), secret("p-secret"), secret("tls")],
  },
  {
    name: "image pull secrets are never optional",
    spec: { containers: [container({})], imagePullSecrets: [{ name: "registry" }] },
    want: [secret("registry")],
  },
  {
    name: "optional only when every reference is",
    spec: {
      containers: [
        container({
          env: [
            { name: "A", valueFrom: { secretKeyRef: { name: "shared", key: "a", optional: true } } },
            { name: "B", valueFrom: { secretKeyRef: { name: "maybe", key: "b", optional: true } } },
          ],
        }),
      ],
      volumes: [{ name: "s", secret: { secretName: "shared" } }],
    },
    want: [secret("maybe", true), secret("shared")],
  },
  {
    name: "a Secret and a ConfigMap of one name are two references",
    spec: {
      containers: [container({ envFrom: [{ secretRef: { name: "app" } }, { configMapRef: { name: "app" } }] })],
    },
    want: [configMap("app"), secret("app")],
  },
];

describe("the Secrets and ConfigMaps a recovered workload refers to", () => {
  for (const { name, spec, want } of cases)
    it(name, () => {
      assert.deepEqual(configReferences(spec), want);
    });
});
