// One kubelet API server per local node, each on its own port of the nodes'
// address, with a serving certificate the cluster CA issued (the apiserver
// checks it with --kubelet-certificate-authority). The ports are published in
// Node.status.daemonEndpoints.kubeletEndpoint by the registration.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AuthorizationV1Api } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { loadCertificateAuthority } from "../../../pki/certificates.js";
import { nodeAddress } from "../addresses.js";
import { localNodes, type NodeLayout } from "../layout.js";
import { findHostTools } from "../runtime.js";
import { subjectAccessReviewer } from "./authz.js";
import type { ExecTools } from "./exec.js";
import { startKubeletServer, type PodHandle, type RunningKubeletServer } from "./server.js";

export interface KubeletServers {
  /** Node name → port of its kubelet API. */
  ports: Record<string, number>;
  stop(): Promise<void>;
}

const searchPath = ["/usr/bin", "/bin", "/usr/local/bin"];

export function execTools(): ExecTools {
  const python3 = searchPath.map((dir) => join(dir, "python3")).find((path) => existsSync(path));
  return { ...findHostTools(), ...(python3 === undefined ? {} : { python3 }) };
}

/** Issues (again at every start, like the apiserver's) the kubelets' serving certificate from the cluster CA. */
async function servingCertificate(pkiDir: string): Promise<{ cert: string; key: string; ca: string }> {
  const ca = { cert: readFileSync(join(pkiDir, "ca.crt"), "utf8"), key: readFileSync(join(pkiDir, "ca.key"), "utf8") };
  const pair = await loadCertificateAuthority(ca).issue({
    commonName: "ksr-local-kubelet",
    usage: "server",
    dnsNames: ["localhost", ...localNodes.map((node) => node.name)],
    ipAddresses: [nodeAddress],
  });
  writeFileSync(join(pkiDir, "kubelet.crt"), pair.cert);
  writeFileSync(join(pkiDir, "kubelet.key"), pair.key, { mode: 0o600 });
  return { ...pair, ca: ca.cert };
}

export async function startKubeletServers(options: {
  clusterDir: string;
  layout: NodeLayout;
  authorization: AuthorizationV1Api;
  findPod(nodeName: string, namespace: string, name: string): PodHandle | undefined;
  log: Logger;
}): Promise<KubeletServers> {
  const tls = await servingCertificate(join(options.clusterDir, "pki"));
  const authorizer = subjectAccessReviewer(options.authorization);
  const tools = execTools();
  const servers: RunningKubeletServer[] = [];
  const ports: Record<string, number> = {};
  try {
    for (const { name } of localNodes) {
      const server = await startKubeletServer({
        nodeName: name,
        tls,
        authorizer,
        findPod: (namespace, pod) => options.findPod(name, namespace, pod),
        layout: options.layout,
        tools,
        nodeBinary: process.execPath,
        log: options.log,
        host: nodeAddress,
      });
      servers.push(server);
      ports[name] = server.port;
    }
  } catch (error) {
    await Promise.all(servers.map((server) => server.close()));
    throw error;
  }
  options.log.info({ ports }, "kubelet API serving");
  return {
    ports,
    async stop() {
      await Promise.all(servers.map((server) => server.close()));
    },
  };
}
