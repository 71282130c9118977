// What controllers ask of the operator's certificate authority: a replicator's
// mutual-TLS identity as a Secret, and the revocation of an agent's identity.
import type { KubeObject } from "../../runtime/index.js";

export const replicatorRoles = ["agent", "process-server", "master-target", "coordinator", "operator"] as const;
export type ReplicatorRole = (typeof replicatorRoles)[number];

export interface ReplicatorCertificateRequest {
  /** The replicator's namespace: the Secret is created there. */
  namespace: string;
  role: ReplicatorRole;
  /** Agents only (and required for them): the ProtectedMachine whose changes the agent may push. */
  machine?: string;
  /** Names the replicator is reached under, for servers (e.g. its Service's DNS names). */
  dnsNames?: string[];
  /** The Secret is owned by it (garbage collected with it). */
  owner?: KubeObject;
}

export interface CertificateIssuer {
  /**
   * Creates the identity's Secret (type kubernetes.io/tls: tls.crt, tls.key,
   * ca.crt) or renews it when it nears expiry; returns the Secret's name.
   */
  ensureReplicatorCertificate(request: ReplicatorCertificateRequest): Promise<string>;
  /** Deletes the agent's Secret and denies its certificates until they would have expired. */
  revokeAgent(ref: { namespace: string; machine: string }): Promise<void>;
}
