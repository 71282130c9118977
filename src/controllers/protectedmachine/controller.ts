// Wiring of the ProtectedMachine controller: what it reconciles, owns and watches.
import { protectedMachines, replicationPolicies, type ProtectedMachine } from "../../api/types.js";
import {
  deployments,
  namespaces,
  nodes,
  persistentVolumeClaims,
  pods,
  predicates,
  services,
  statefulSets,
  storageClasses,
  type KubeObject,
  type Manager,
  type ObjectRef,
} from "../../runtime/index.js";
import type { OperatorDeps } from "../deps.js";
import { machineLabel, machineNamespaceLabel, resyncRequestAnnotation } from "./names.js";
import { ThroughputTracker } from "./observe.js";
import { OperatorPoints } from "./operator-points.js";
import type { MachineCaches } from "./protect.js";
import { newProtectedMachineReconciler } from "./reconcile.js";
import { ReplicatorClients } from "./replicator-clients.js";
import { OperatorIdentity } from "../certificates/operator-identity.js";
import { serviceHost } from "./replicators.js";

const sharedClients = new WeakMap<OperatorDeps, ReplicatorClients>();

/** The operator's one set of replicator channels, under its own renewing identity (ksr-operator). */
export function operatorReplicatorClients(manager: Manager, deps: OperatorDeps): ReplicatorClients {
  let replicators = sharedClients.get(deps);
  if (replicators === undefined) {
    const identity = new OperatorIdentity(deps);
    const created = new ReplicatorClients(
      (verify) => identity.credentials(verify),
      () => identity.refresh(),
    );
    void manager.done.then(() => {
      created.close();
    });
    sharedClients.set(deps, created);
    replicators = created;
  }
  return replicators;
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
  };
  const replicators = operatorReplicatorClients(manager, deps);

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
        predicates.any(
          predicates.generationChanged,
          (event) => event.object.metadata.deletionTimestamp !== undefined,
          // `kubectl dr resync` is an annotation: act on it at once, not at the next refresh.
          (event) =>
            event.old?.metadata.annotations?.[resyncRequestAnnotation] !==
            event.object.metadata.annotations?.[resyncRequestAnnotation],
        ),
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
        image: deps.replicatorImage,
        certificates: deps.certificates,
        events: deps.events,
        metrics: deps.metrics,
        caches,
        replicators,
        throughput: new ThroughputTracker(),
        points: new OperatorPoints(),
        machinesIn,
        forgetPeers: (name, namespace) => {
          replicators.forgetServer(serviceHost(name, namespace));
        },
      }),
    );
}
