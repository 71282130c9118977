// Where the local node keeps its files inside the cluster directory, and the
// names of the two nodes (one per DR site). Everything the node agent creates
// lives under DIR/node so `ksr local down --purge` removes it with the rest.
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";

export const siteLabel = "topology.dr.ksr.io/site";
export const hostnameLabel = "kubernetes.io/hostname";

export interface LocalNodeIdentity {
  name: string;
  site: "primary" | "recovery";
}

export const localNodes: readonly LocalNodeIdentity[] = [
  { name: "ksr-primary", site: "primary" },
  { name: "ksr-recovery", site: "recovery" },
];

export interface NodeLayout {
  clusterDir: string;
  /** Per-pod runtime files: materialised volumes, mount points, launch scripts. */
  pods: string;
  /** Provisioned PersistentVolume data, one folder per node. */
  volumes: string;
  /** Container output, DIR/node/logs/NAMESPACE_POD_UID/CONTAINER/RESTART.log. */
  logs: string;
  /** Records of container processes, so `ksr local down` finds them even if the agent died. */
  processes: string;
  /** Scripts the node writes once (image entrypoints). */
  scripts: string;
}

export function nodeLayout(clusterDir: string): NodeLayout {
  const root = join(resolve(clusterDir), "node");
  return {
    clusterDir: resolve(clusterDir),
    pods: join(root, "pods"),
    volumes: join(root, "volumes"),
    logs: join(root, "logs"),
    processes: join(root, "processes"),
    scripts: join(root, "scripts"),
  };
}

/** A short stable tag for one cluster directory, used to keep clusters on one machine apart. */
export function clusterTag(clusterDir: string): string {
  return createHash("sha256").update(resolve(clusterDir)).digest("hex").slice(0, 10);
}

export function podLogDir(layout: NodeLayout, namespace: string, name: string, uid: string): string {
  return join(layout.logs, `${namespace}_${name}_${uid}`);
}
