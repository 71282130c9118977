import { strict as assert } from "node:assert";
import type { V1PersistentVolumeClaim, V1StorageClass } from "@kubernetes/client-node";
import { nodeLayout } from "../../../src/local/node/layout.js";
import {
  decideProvisioning,
  defaultStorageClass,
  isOwnedDataPath,
  provisionerName,
  quantityBytes,
} from "../../../src/local/node/provisioner.js";

const layout = nodeLayout("/c");
const classes = new Map<string, V1StorageClass>([
  ["standard", defaultStorageClass()],
  ["other", { provisioner: "example.com/csi", metadata: { name: "other" } }],
]);
const nodes = new Set(["ksr-primary", "ksr-recovery"]);

function claim(
  spec: Partial<NonNullable<V1PersistentVolumeClaim["spec"]>> = {},
  node: string | null = "ksr-recovery",
): V1PersistentVolumeClaim {
  return {
    metadata: {
      name: "data",
      namespace: "shop",
      uid: "u1",
      annotations: node === null ? {} : { "volume.kubernetes.io/selected-node": node },
    },
    spec: {
      storageClassName: "standard",
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: "1Gi" } },
      ...spec,
    },
  };
}

describe("local node provisioner", () => {
  const quantities: [string, number][] = [
    ["1Gi", 2 ** 30],
    ["64Mi", 64 * 2 ** 20],
    ["500M", 500e6],
    ["1.5Ki", 1536],
    ["1e3", 1000],
    ["42", 42],
  ];
  for (const [quantity, bytes] of quantities) {
    it(`reads ${quantity} as ${bytes} bytes`, () => {
      assert.equal(quantityBytes(quantity), bytes);
    });
  }
  it("rejects a malformed quantity", () => {
    assert.throws(() => quantityBytes("1 gig"), /not a valid storage quantity/);
  });

  it("provisions a node-local PV bound to the claim, pinned to the selected node", () => {
    const decision = decideProvisioning(claim(), classes, nodes, layout);
    if (decision.action !== "provision") throw new Error(JSON.stringify(decision));
    assert.equal(decision.dataPath, "/c/node/volumes/ksr-recovery/pvc-u1");
    const spec = decision.pv.spec;
    assert.deepEqual(
      {
        name: decision.pv.metadata?.name,
        by: decision.pv.metadata?.annotations?.["pv.kubernetes.io/provisioned-by"],
        capacity: spec?.capacity,
        modes: spec?.accessModes,
        reclaim: spec?.persistentVolumeReclaimPolicy,
        claim: spec?.claimRef?.uid,
        path: spec?.local?.path,
        node: spec?.nodeAffinity?.required?.nodeSelectorTerms[0]?.matchExpressions?.[0]?.values,
        mode: spec?.volumeMode,
      },
      {
        name: "pvc-u1",
        by: provisionerName,
        capacity: { storage: "1Gi" },
        modes: ["ReadWriteOnce"],
        reclaim: "Delete",
        claim: "u1",
        path: "/c/node/volumes/ksr-recovery/pvc-u1",
        node: ["ksr-recovery"],
        mode: "Filesystem",
      },
    );
  });

  it("sizes a Block claim's image file to the request", () => {
    const decision = decideProvisioning(claim({ volumeMode: "Block" }), classes, nodes, layout);
    assert.ok(
      decision.action === "provision" && decision.block === 2 ** 30 && decision.dataPath.endsWith("pvc-u1.img"),
    );
  });

  const skipped: [string, V1PersistentVolumeClaim][] = [
    ["another provisioner's class", claim({ storageClassName: "other" })],
    ["a claim the scheduler has not placed yet", claim({}, null)],
    ["a claim placed on a node that is not ours", claim({}, "kind-worker")],
    ["a claim that already names its volume", claim({ volumeName: "pv-x" })],
  ];
  for (const [what, pvc] of skipped) {
    it(`leaves alone ${what}`, () => {
      assert.deepEqual(decideProvisioning(pvc, classes, nodes, layout), { action: "skip" });
    });
  }

  const rejected: [string, V1PersistentVolumeClaim, RegExp][] = [
    [
      "ReadWriteMany",
      claim({ accessModes: ["ReadWriteMany"] }),
      /support ReadWriteOnce, ReadWriteOncePod, ReadOnlyMany/,
    ],
    ["no size", claim({ resources: {} }), /no resources.requests.storage/],
    ["a malformed size", claim({ resources: { requests: { storage: "lots" } } }), /not a valid storage quantity/],
  ];
  for (const [what, pvc, message] of rejected) {
    it(`rejects a claim with ${what}`, () => {
      const decision = decideProvisioning(pvc, classes, nodes, layout);
      assert.ok(decision.action === "reject" && message.test(decision.message), JSON.stringify(decision));
    });
  }

  const owned: [string, boolean][] = [
    ["/c/node/volumes/ksr-primary/pvc-1", true],
    ["/c/node/volumes", false],
    ["/c/node/volumes/../../etc", false],
    ["/etc", false],
    ["/c/node/volumes-other/x", false],
  ];
  for (const [path, expected] of owned) {
    it(`treats ${path} as ${expected ? "" : "not "}its own data`, () => {
      assert.equal(isOwnedDataPath(path, layout), expected);
    });
  }
});
