// Wiring of the ProtectedMachine controller: what it reconciles, owns and watches.
import { credentials as grpcCredentials, type ChannelCredentials } from "@grpc/grpc-js";
import { protectedMachines, replicationPolicies, type ProtectedMachine } from "../../api/types.js";
import {
  deployments,
  endpointSlices,
  namespaces,
  nodes,
  persistentVolumeClaims,
  pods,
  predicates,
  secrets,
  services,
  statefulSets,
  storageClasses,
  type KubeObject,
  type Manager,
  type ObjectRef,
} from "../../runtime/index.js";
import type { OperatorDeps } from "../deps.js";
import { machineLabel, machineNamespaceLabel } from "./names.js";
import { ThroughputTracker } from "./observe.js";
import type { MachineCaches } from "./protect.js";
import { newProtectedMachineReconciler } from "./reconcile.js";
import { ReplicatorClients } from "./replicator-clients.js";
import { serviceHost } from "./replicators.js";

/** The operator's own mutual-TLS identity (common name ksr-operator) for the replicators' control API. */
export function operatorCredentials(deps: OperatorDeps): () => Promise<ChannelCredentials> {
  let loaded: Promise<ChannelCredentials> | undefined;
  return () => {
    loaded ??= (async () => {
      const name = await deps.certificates.ensureReplicatorCertificate({ namespace: deps.namespace, role: "operator" });
      const secret = await deps.client.get(secrets, name, deps.namespace);
      const field = (key: string) => {
        const value = secret?.data?.[key];
        if (value === undefined) throw new Error(`Secret ${deps.namespace}/${name} has no ${key}`);
        return Buffer.from(value, "base64");
      };
      return grpcCredentials.createSsl(field("ca.crt"), field("tls.key"), field("tls.crt"));
    })().catch((error: unknown) => {
      loaded = undefined; // asked again on the next reconcile
      throw error;
    });
    return loaded;
  };
}

export function addProtectedMachineController(manager: Manager, deps: OperatorDeps) {
  const { cache } = deps;
  const caches: MachineCaches = {
    machines: cache.informer(protectedMachines),
    policies: cache.informer(replicationPolicies),
    pods: cache.informer(pods),
    claims: cache.informer(persistentVolumeClaims),
    statefulSets: cache.informer(statefulSets),
    deployments: cache.informer(deployments),
    services: cache.informer(services),
    nodes: cache.informer(nodes),
    storageClasses: cache.informer(storageClasses),
    namespaces: cache.informer(namespaces),
    endpointSlices: cache.informer(endpointSlices),
  };
  const replicators = new ReplicatorClients(operatorCredentials(deps));
  void manager.done.then(() => {
    replicators.close();
  });

  const machinesIn = (namespace: string) =>
    caches.machines.list(namespace).filter((machine) => machine.metadata.deletionTimestamp === undefined);
  const refs = (list: ProtectedMachine[]): ObjectRef[] =>
    list.map((machine) => ({ namespace: machine.metadata.namespace, name: machine.metadata.name }));
  /** Workload objects, their pods and claims: every machine of their namespace looks again. */
  const sameNamespace = (object: KubeObject) => refs(caches.machines.list(object.metadata.namespace));
  /** Replica claims and master targets live in the target namespace: their labels name the machine. */
  const labelledOrSameNamespace = (object: KubeObject) => {
    const name = object.metadata.labels?.[machineLabel];
    const namespace = object.metadata.labels?.[machineNamespaceLabel];
    return name !== undefined && namespace !== undefined ? [{ namespace, name }] : sameNamespace(object);
  };
  const everyMachine = () => refs(caches.machines.list());

  return manager
    .controller("protectedmachine")
    .for(protectedMachines, {
      predicates: [
        predicates.any(predicates.generationChanged, (event) => event.object.metadata.deletionTimestamp !== undefined),
      ],
    })
    .watches(pods, sameNamespace)
    .watches(persistentVolumeClaims, labelledOrSameNamespace)
    .watches(statefulSets, sameNamespace)
    .watches(deployments, labelledOrSameNamespace)
    .watches(replicationPolicies, (policy) =>
      refs(machinesIn(policy.metadata.namespace ?? "").filter((m) => m.spec.policyRef.name === policy.metadata.name)),
    )
    .watches(nodes, everyMachine, { predicates: [predicates.labelsChanged] })
    .watches(storageClasses, everyMachine)
    .watches(namespaces, everyMachine, { predicates: [(event) => event.type !== "update"] })
    .withConcurrency(4)
    .complete(
      newProtectedMachineReconciler({
        client: deps.client,
        certificates: deps.certificates,
        events: deps.events,
        metrics: deps.metrics,
        caches,
        replicators,
        throughput: new ThroughputTracker(),
        machinesIn,
        forgetPeers: (name, namespace) => {
          replicators.forgetServer(serviceHost(name, namespace));
        },
      }),
    );
}
