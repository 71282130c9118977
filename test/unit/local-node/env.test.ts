import { strict as assert } from "node:assert";
import type { V1ConfigMap, V1Container, V1Pod, V1Secret } from "@kubernetes/client-node";
import {
  ContainerConfigError,
  containerEnvironment,
  expandReferences,
  fieldPathValue,
  type ObjectLookup,
} from "../../../src/local/node/env.js";

const pod: V1Pod = {
  metadata: { name: "db-0", namespace: "shop", uid: "u-1", labels: { app: "db" }, annotations: { a: "1" } },
  spec: { nodeName: "ksr-primary", serviceAccountName: "db", containers: [] },
};
const facts = { pod, podIP: "127.9.0.1", hostIP: "127.0.0.1" };
const b64 = (text: string) => Buffer.from(text).toString("base64");
const lookup: ObjectLookup = {
  configMap: (_ns, name) =>
    Promise.resolve(name === "settings" ? ({ data: { MODE: "fast", LEVEL: "3" } } satisfies V1ConfigMap) : undefined),
  secret: (_ns, name) =>
    Promise.resolve(name === "creds" ? ({ data: { password: b64("s3cret") } } satisfies V1Secret) : undefined),
};

describe("local node environment", () => {
  const expansions: [string, string][] = [
    ["$(A)", "alpha"],
    ["x-$(A)-$(B)", "x-alpha-beta"],
    ["$$(A)", "$(A)"],
    ["$(MISSING)", "$(MISSING)"],
    ["cost $5", "cost $5"],
    ["$$", "$"],
  ];
  const vars = new Map([
    ["A", "alpha"],
    ["B", "beta"],
  ]);
  for (const [input, expected] of expansions) {
    it(`expands ${input} to ${expected}`, () => {
      assert.equal(expandReferences(input, vars), expected);
    });
  }

  const fields: [string, string][] = [
    ["metadata.name", "db-0"],
    ["metadata.namespace", "shop"],
    ["metadata.uid", "u-1"],
    ["metadata.labels['app']", "db"],
    ["metadata.annotations['a']", "1"],
    ["spec.nodeName", "ksr-primary"],
    ["spec.serviceAccountName", "db"],
    ["status.podIP", "127.9.0.1"],
    ["status.hostIP", "127.0.0.1"],
  ];
  for (const [path, expected] of fields) {
    it(`resolves fieldRef ${path}`, () => {
      assert.equal(fieldPathValue(facts, path), expected);
    });
  }
  it("refuses an unknown fieldRef", () => {
    assert.throws(() => fieldPathValue(facts, "spec.bogus"), ContainerConfigError);
  });

  it("applies envFrom, then env in order, expanding earlier variables and reading secrets and config maps", async () => {
    const container: V1Container = {
      name: "c",
      envFrom: [{ configMapRef: { name: "settings" }, prefix: "CFG_" }],
      env: [
        { name: "IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
        { name: "URL", value: "http://$(IP):$(PORT)/$(CFG_MODE)" },
        { name: "PASSWORD", valueFrom: { secretKeyRef: { name: "creds", key: "password" } } },
        { name: "LEVEL", valueFrom: { configMapKeyRef: { name: "settings", key: "LEVEL" } } },
        { name: "OPTIONAL", valueFrom: { secretKeyRef: { name: "absent", key: "k", optional: true } } },
      ],
    };
    const env = await containerEnvironment(container, new Map([["PORT", "80"]]), facts, lookup);
    assert.deepEqual(Object.fromEntries(env), {
      PORT: "80",
      CFG_MODE: "fast",
      CFG_LEVEL: "3",
      IP: "127.9.0.1",
      URL: "http://127.9.0.1:80/fast",
      PASSWORD: "s3cret",
      LEVEL: "3",
    });
  });

  const failures: [string, V1Container, RegExp][] = [
    [
      "a missing secret",
      { name: "c", env: [{ name: "X", valueFrom: { secretKeyRef: { name: "nope", key: "k" } } }] },
      /secret "nope" not found/,
    ],
    [
      "a missing key",
      { name: "c", env: [{ name: "X", valueFrom: { configMapKeyRef: { name: "settings", key: "k" } } }] },
      /couldn't find key k in ConfigMap shop\/settings/,
    ],
    ["a missing envFrom source", { name: "c", envFrom: [{ secretRef: { name: "nope" } }] }, /secret "nope" not found/],
  ];
  for (const [what, container, message] of failures) {
    it(`reports ${what} as a container config error`, async () => {
      await assert.rejects(
        containerEnvironment(container, new Map(), facts, lookup),
        (error: unknown) => error instanceof ContainerConfigError && message.test(error.message),
      );
    });
  }
});
