// Dynamic provisioning for the default StorageClass "standard" (as kind ships
// it, WaitForFirstConsumer): each claim gets a node-local PersistentVolume on
// the node the scheduler picked, its data under DIR/node/volumes/NODE/. Block
// claims get a sparse image file of the requested size. Reclaim policy Delete
// removes the data once the claim is gone.
import { closeSync, existsSync, mkdirSync, openSync, ftruncateSync, rmSync } from "node:fs";
import { join, resolve, sep } from "node:path";
import type {
  CoreV1Api,
  KubeConfig,
  StorageV1Api,
  V1PersistentVolume,
  V1PersistentVolumeClaim,
  V1StorageClass,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import { describeError, isAlreadyExists, isNotFound, startInformer } from "./kube.js";
import { hostnameLabel, type NodeLayout } from "./layout.js";

export const storageClassName = "standard";
export const provisionerName = "local.ksr.io/node-path";
const selectedNodeAnnotation = "volume.kubernetes.io/selected-node";
const provisionedByAnnotation = "pv.kubernetes.io/provisioned-by";
const supportedAccessModes = new Set(["ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany"]);

export function defaultStorageClass(): V1StorageClass {
  return {
    apiVersion: "storage.k8s.io/v1",
    kind: "StorageClass",
    metadata: { name: storageClassName, annotations: { "storageclass.kubernetes.io/is-default-class": "true" } },
    provisioner: provisionerName,
    reclaimPolicy: "Delete",
    volumeBindingMode: "WaitForFirstConsumer",
    allowVolumeExpansion: false,
  };
}

/** Bytes in a resource quantity such as 1Gi, 500M or 1e9. */
export function quantityBytes(quantity: string): number {
  const match = /^(\d+(?:\.\d+)?(?:[eE]\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|m)?$/.exec(quantity.trim());
  if (match === null) throw new Error(`"${quantity}" is not a valid storage quantity`);
  const factors: Record<string, number> = {
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    Pi: 2 ** 50,
    Ei: 2 ** 60,
    k: 1e3,
    K: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
    P: 1e15,
    E: 1e18,
    m: 1e-3,
  };
  return Math.ceil(Number(match[1]) * (factors[match[2] ?? ""] ?? 1));
}

export type ProvisionDecision =
  | { action: "skip" }
  | { action: "reject"; message: string }
  | { action: "provision"; node: string; pv: V1PersistentVolume; dataPath: string; block?: number };

/** The PersistentVolume provisioned for a claim is named after the claim's uid. */
const provisionedVolumeName = (claimUid: string) => `pvc-${claimUid}`;

/**
 * Where the data of a claim provisioned on NODE lives on the host: a directory (a Block claim: an
 * image file). Tests and the demo read a volume there, as the site's disk, also while its node is down.
 */
export function claimDataPath(layout: NodeLayout, node: string, claimUid: string, block = false): string {
  const name = provisionedVolumeName(claimUid);
  return join(layout.volumes, node, block ? `${name}.img` : name);
}

/** What to do with a claim; pure, so the rules are table-tested. */
export function decideProvisioning(
  claim: V1PersistentVolumeClaim,
  classes: ReadonlyMap<string, V1StorageClass>,
  nodes: ReadonlySet<string>,
  layout: NodeLayout,
): ProvisionDecision {
  const className = claim.spec?.storageClassName ?? "";
  const storageClass = classes.get(className);
  if (storageClass?.provisioner !== provisionerName) return { action: "skip" };
  if ((claim.spec?.volumeName ?? "") !== "" || claim.status?.phase === "Bound") return { action: "skip" };
  const node = claim.metadata?.annotations?.[selectedNodeAnnotation];
  if (node === undefined || !nodes.has(node)) return { action: "skip" };
  const modes = claim.spec?.accessModes ?? [];
  const unsupported = modes.filter((mode) => !supportedAccessModes.has(mode));
  if (unsupported.length > 0 || modes.length === 0) {
    return {
      action: "reject",
      message: `node-local volumes support ${[...supportedAccessModes].join(", ")}; the claim asks for ${modes.join(", ") || "no access mode"}`,
    };
  }
  const request = claim.spec?.resources?.requests?.storage;
  if (request === undefined) return { action: "reject", message: "the claim has no resources.requests.storage" };
  let bytes: number;
  try {
    bytes = quantityBytes(request);
  } catch (error) {
    return { action: "reject", message: (error as Error).message };
  }
  const block = claim.spec?.volumeMode === "Block";
  const name = provisionedVolumeName(claim.metadata?.uid ?? "");
  const dataPath = claimDataPath(layout, node, claim.metadata?.uid ?? "", block);
  const pv: V1PersistentVolume = {
    apiVersion: "v1",
    kind: "PersistentVolume",
    metadata: { name, annotations: { [provisionedByAnnotation]: provisionerName } },
    spec: {
      capacity: { storage: request },
      accessModes: modes,
      volumeMode: block ? "Block" : "Filesystem",
      persistentVolumeReclaimPolicy: storageClass.reclaimPolicy ?? "Delete",
      storageClassName: className,
      claimRef: {
        apiVersion: "v1",
        kind: "PersistentVolumeClaim",
        namespace: claim.metadata?.namespace,
        name: claim.metadata?.name,
        uid: claim.metadata?.uid,
      },
      local: { path: dataPath },
      nodeAffinity: {
        required: {
          nodeSelectorTerms: [{ matchExpressions: [{ key: hostnameLabel, operator: "In", values: [node] }] }],
        },
      },
    },
  };
  return { action: "provision", node, pv, dataPath, ...(block ? { block: bytes } : {}) };
}

/** Data paths must sit inside DIR/node/volumes: a PV edited to point elsewhere is never deleted. */
export function isOwnedDataPath(path: string, layout: NodeLayout): boolean {
  const root = resolve(layout.volumes) + sep;
  const target = resolve(path);
  return target.startsWith(root) && target.length > root.length;
}

function createData(dataPath: string, blockBytes: number | undefined): void {
  if (blockBytes === undefined) {
    mkdirSync(dataPath, { recursive: true, mode: 0o777 });
    return;
  }
  mkdirSync(join(dataPath, ".."), { recursive: true });
  const fd = openSync(dataPath, "a");
  try {
    ftruncateSync(fd, blockBytes);
  } finally {
    closeSync(fd);
  }
}

export interface Provisioner {
  stop(): Promise<void>;
}

export async function startProvisioner(
  kubeConfig: KubeConfig,
  core: CoreV1Api,
  storage: StorageV1Api,
  nodes: ReadonlySet<string>,
  layout: NodeLayout,
  log: Logger,
): Promise<Provisioner> {
  await storage.createStorageClass({ body: defaultStorageClass() }).catch((error: unknown) => {
    if (!isAlreadyExists(error)) throw error;
  });
  const classes = new Map<string, V1StorageClass>();
  const claims = new Map<string, V1PersistentVolumeClaim>();
  const inFlight = new Set<string>();

  const provision = async (claim: V1PersistentVolumeClaim) => {
    const decision = decideProvisioning(claim, classes, nodes, layout);
    const key = claim.metadata?.uid ?? "";
    if (decision.action === "skip" || inFlight.has(key)) return;
    inFlight.add(key);
    try {
      if (decision.action === "reject") {
        log.warn({ claim: `${claim.metadata?.namespace}/${claim.metadata?.name}` }, decision.message);
        return;
      }
      createData(decision.dataPath, decision.block);
      await core.createPersistentVolume({ body: decision.pv }).catch((error: unknown) => {
        if (!isAlreadyExists(error)) throw error;
      });
      log.info(
        {
          claim: `${claim.metadata?.namespace}/${claim.metadata?.name}`,
          pv: decision.pv.metadata?.name,
          node: decision.node,
        },
        "provisioned",
      );
    } catch (error) {
      log.error({ claim: claim.metadata?.name, error: describeError(error) }, "provisioning failed");
    } finally {
      inFlight.delete(key);
    }
  };

  const reclaim = async (pv: V1PersistentVolume) => {
    if (pv.metadata?.annotations?.[provisionedByAnnotation] !== provisionerName) return;
    if (pv.status?.phase !== "Released" || pv.spec?.persistentVolumeReclaimPolicy !== "Delete") return;
    const path = pv.spec.local?.path;
    if (path !== undefined && isOwnedDataPath(path, layout) && existsSync(path))
      rmSync(path, { recursive: true, force: true });
    await core.deletePersistentVolume({ name: pv.metadata.name ?? "" }).catch((error: unknown) => {
      if (!isNotFound(error)) throw error;
    });
    log.info({ pv: pv.metadata.name }, "reclaimed (deleted data)");
  };

  const classInformer = startInformer<V1StorageClass>(
    kubeConfig,
    "/apis/storage.k8s.io/v1/storageclasses",
    () => storage.listStorageClass(),
    {
      upsert: (sc) => classes.set(sc.metadata?.name ?? "", sc),
      remove: (sc) => classes.delete(sc.metadata?.name ?? ""),
    },
    log,
  );
  const claimInformer = startInformer<V1PersistentVolumeClaim>(
    kubeConfig,
    "/api/v1/persistentvolumeclaims",
    () => core.listPersistentVolumeClaimForAllNamespaces(),
    {
      upsert: (claim) => {
        claims.set(claim.metadata?.uid ?? "", claim);
        void provision(claim);
      },
      remove: (claim) => claims.delete(claim.metadata?.uid ?? ""),
    },
    log,
  );
  const volumeInformer = startInformer<V1PersistentVolume>(
    kubeConfig,
    "/api/v1/persistentvolumes",
    () => core.listPersistentVolume(),
    {
      upsert: (pv) =>
        void reclaim(pv).catch((error: unknown) => {
          log.error({ pv: pv.metadata?.name, error: describeError(error) }, "reclaim failed");
        }),
      remove: () => undefined,
    },
    log,
  );
  // Claims seen before their StorageClass, or whose provisioning failed, are retried.
  const resync = setInterval(() => {
    for (const claim of claims.values()) void provision(claim);
  }, 5000);
  return {
    async stop() {
      clearInterval(resync);
      await Promise.all([classInformer.stop(), claimInformer.stop(), volumeInformer.stop()]);
    },
  };
}
