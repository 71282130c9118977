// What every controller of the operator is given: the manager's one client,
// informer cache, logger, event recorder and clock, plus the operator's
// metrics and certificate issuer.
import type { Clock, EventRecorder, InformerCache, KubeClient, Logger, Manager } from "../runtime/index.js";
import type { CertificateIssuer } from "./certificates/issuer.js";
import type { MachineMetrics } from "./metrics.js";

export interface OperatorDeps {
  /** Fenced: refuses requests once the manager stops or loses the lease. */
  client: KubeClient;
  cache: InformerCache;
  log: Logger;
  events: EventRecorder;
  clock: Clock;
  metrics: MachineMetrics;
  certificates: CertificateIssuer;
  /** Where the operator runs: its CA Secret and its Lease live there. */
  namespace: string;
  /** The project's image, which every replicator pod and drill hydrator runs (normally the operator's own). */
  replicatorImage: string;
  /** Reconcile only this namespace (tests, or an operator confined to one namespace); default all. */
  watchNamespace?: string;
}

export function operatorDeps(
  manager: Manager,
  extra: Pick<OperatorDeps, "metrics" | "certificates" | "namespace" | "replicatorImage" | "watchNamespace">,
): OperatorDeps {
  const { client, cache, log, events, clock } = manager;
  return { client, cache, log, events, clock, ...extra };
}
