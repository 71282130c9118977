// `ksr operator`: the operator's process. One manager (leader election on a
// Lease in its namespace, /metrics, /healthz, /readyz), every controller of
// src/controllers, JSON logs; SIGTERM drains reconciles, hands the lease back
// and exits.
import { KubeConfig } from "@kubernetes/client-node";
import { Command } from "commander";
import { SecretIssuer } from "../../controllers/certificates/secret-issuer.js";
import { operatorDeps } from "../../controllers/deps.js";
import { addControllers } from "../../controllers/index.js";
import { MachineMetrics } from "../../controllers/metrics.js";
import {
  defaultNamespace,
  leaseName,
  operatorHealthPort,
  operatorName,
  imageFlag,
  projectImage,
  type LeaderElectionFlags,
} from "../../install/manifests.js";
import { parsePort } from "../../local/ports.js";
import { operatorConfigMapName, readOperatorConfig } from "../../notifications/config.js";
import { Notifier } from "../../notifications/notifier.js";
import { createLogger, Manager } from "../../runtime/index.js";
import { leaderElectionTiming, withLeaderElection } from "./leader-election-flags.js";

export function operatorCommand(): Command {
  return withLeaderElection(
    new Command("operator").description(
      "run the operator: reconcile the dr.ksr.io kinds (normally as the ksr-operator Deployment)",
    ),
  )
    .option("--kubeconfig <file>", "kubeconfig to use (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
    .option(
      "--namespace <ns>",
      "namespace of the operator's Lease and CA Secret",
      process.env.POD_NAMESPACE ?? defaultNamespace,
    )
    .option("--health-port <port>", "port of /metrics, /healthz and /readyz", String(operatorHealthPort))
    .option(
      "--replicator-image <image>",
      "image of the replicator pods and drill hydrators it places (ksr install and the chart pass the operator's own)",
      projectImage,
    )
    .option(
      "--config-map <name>",
      "ConfigMap in --namespace whose config.yaml holds the operator's configuration (notifications); none is fine",
      operatorConfigMapName,
    )
    .action(
      async (
        options: LeaderElectionFlags & {
          kubeconfig?: string;
          namespace: string;
          healthPort: string;
          replicatorImage: string;
          configMap: string;
        },
      ) => {
        const replicatorImage = imageFlag(options.replicatorImage, "--replicator-image");
        const kubeConfig = new KubeConfig();
        if (options.kubeconfig === undefined) kubeConfig.loadFromDefault();
        else kubeConfig.loadFromFile(options.kubeconfig);
        const logger = createLogger({ name: operatorName });
        const manager = new Manager({
          name: operatorName,
          kubeConfig,
          logger,
          leaderElection: {
            leaseName,
            leaseNamespace: options.namespace,
            ...(process.env.POD_NAME === undefined ? {} : { identity: `${process.env.POD_NAME}_${process.pid}` }),
            ...leaderElectionTiming(options),
          },
          health: { port: parsePort(options.healthPort, "--health-port") },
        });
        const metrics = new MachineMetrics(manager.metrics.registry);
        const certificates = new SecretIssuer({
          client: manager.client,
          caNamespace: options.namespace,
          clock: manager.clock,
        });
        // A bad configuration stops the operator here, with every problem named, before it acts.
        const config = await readOperatorConfig(manager.client, options.namespace, options.configMap);
        const notifier = new Notifier({
          client: manager.client,
          namespace: options.namespace,
          config: config.notifications,
          log: logger,
          registry: manager.metrics.registry,
        });
        manager.events.addListener(notifier.onEvent);
        addControllers(
          manager,
          operatorDeps(manager, {
            metrics,
            certificates,
            namespace: options.namespace,
            replicatorImage,
          }),
        );
        const stop = (signal: string) => {
          logger.info({ signal }, "shutting down");
          void manager.stop();
        };
        process.once("SIGTERM", () => {
          stop("SIGTERM");
        });
        process.once("SIGINT", () => {
          stop("SIGINT");
        });
        await manager.start();
        logger.info(
          {
            namespace: options.namespace,
            healthPort: manager.healthPort,
            identity: manager.identity,
            notificationReceivers: notifier.receivers,
          },
          "operator started",
        );
        const end = await manager.done;
        await notifier.stop();
        // Lost leadership: exit non-zero and let the Deployment restart us as a fresh standby.
        process.exitCode = end === "lost-leadership" ? 1 : 0;
      },
    );
}
