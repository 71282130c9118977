// Replicator identities in certificate common names, the revocation list the
// process server reads, and a policy turned into replicator flags.
import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ReplicationPolicySpec } from "../../src/api/types.js";
import { policyDurationMs, replicatorFlags } from "../../src/controllers/replicationpolicy/flags.js";
import { machineIdOf } from "../../src/replicator/machine-id.js";
import { commonNameOf, parseCommonName, RevocationList, type PeerIdentity } from "../../src/replicator/tls.js";

describe("replicator identities", () => {
  const identities: [string, PeerIdentity | undefined][] = [
    ["ksr-process-server", { role: "process-server" }],
    ["ksr-master-target", { role: "master-target" }],
    ["ksr-operator", { role: "operator" }],
    ["ksr-coordinator", { role: "coordinator" }],
    ["ksr-agent:shop.db", { role: "agent", machineId: "shop.db" }],
    ["ksr-hydrator:shop.db", { role: "hydrator", machineId: "shop.db" }],
    ["ksr-hydrator", undefined],
    ["ksr-hydrator:", undefined],
    ["ksr-agent:", undefined],
    ["ksr-agent", undefined],
    ["process-server", undefined],
    ["ksr-process-server:x", undefined],
    ["admin", undefined],
  ];
  for (const [commonName, identity] of identities) {
    it(`${JSON.stringify(commonName)} is ${identity === undefined ? "no identity" : JSON.stringify(identity)}`, () => {
      assert.deepEqual(parseCommonName(commonName), identity);
      if (identity !== undefined) assert.equal(commonNameOf(identity), commonName);
    });
  }

  it("refuses an agent without a machine and a server with one", () => {
    assert.throws(() => commonNameOf({ role: "agent" }), /needs a machine id/);
    assert.throws(() => commonNameOf({ role: "hydrator" }), /needs a machine id/);
    assert.throws(() => commonNameOf({ role: "operator", machineId: "x" }), /carries no machine id/);
  });

  it("names a machine by namespace and name, so two namespaces never share an identity", () => {
    assert.equal(machineIdOf({ namespace: "shop", name: "db" }), "shop.db");
    assert.equal(machineIdOf({ namespace: "a", name: "b.c" }), "a.b.c");
    assert.throws(() => machineIdOf({ namespace: "a.b", name: "c" }), /not a DNS-1123 label/);
  });
});

describe("revocation list", () => {
  it("revokes the serials listed, compares them as numbers, and follows the file as it changes", () => {
    const dir = mkdtempSync(join(tmpdir(), "ksr-revoked-"));
    try {
      const path = join(dir, "serials");
      const list = new RevocationList(path);
      assert.equal(list.isRevoked("0ABC"), false, "a missing file revokes nothing");
      writeFileSync(path, "00abc 2030-01-01T00:00:00.000Z shop.db\n");
      assert.equal(list.isRevoked("ABC"), true);
      assert.equal(list.isRevoked("abd"), false);
      assert.equal(list.isRevoked(undefined), false);
      writeFileSync(path, "");
      utimesSync(path, new Date(), new Date(Date.now() + 5000));
      assert.equal(list.isRevoked("ABC"), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("policy durations and replicator flags", () => {
  const durations: [string, number | RegExp][] = [
    ["30s", 30_000],
    ["5m", 300_000],
    ["1h30m", 5_400_000],
    ["1500ms", 1500],
    ["24h", 86_400_000],
    ["1d", /is not a duration/],
    ["", /is not a duration/],
    ["5m3", /is not a duration/],
  ];
  for (const [text, expected] of durations) {
    it(`${JSON.stringify(text)} → ${String(expected)}`, () => {
      if (typeof expected === "number") assert.equal(policyDurationMs(text, "field"), expected);
      else assert.throws(() => policyDurationMs(text, "field"), expected);
    });
  }

  it("refuses a bandwidth limit that is not a size, naming the field", () => {
    const spec = {
      rpoThreshold: "15m",
      recoveryPointRetention: "24h",
      crashConsistentFrequency: "5m",
      capture: "Continuous",
      compression: "none",
      resync: { mode: "Automatic" },
      bandwidthLimit: "fast",
    } satisfies ReplicationPolicySpec;
    assert.throws(() => replicatorFlags(spec), /bandwidthLimit: "fast" is not a size/);
  });
});
