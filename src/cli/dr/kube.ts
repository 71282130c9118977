// kubectl's connection flags for the plugin: -n/--namespace, --context and
// --kubeconfig, read the way kubectl reads them (KUBECONFIG, then ~/.kube/config;
// the context's namespace, then "default").
import { KubeConfig } from "@kubernetes/client-node";
import { Option, type Command } from "commander";
import { KubeClient, resourceType, type KubeObject } from "../../runtime/index.js";

export interface KubeFlags {
  namespace?: string;
  context?: string;
  kubeconfig?: string;
  output?: string;
}

export const outputFormats = ["wide", "json", "yaml"] as const;
export type OutputFormat = (typeof outputFormats)[number];

/** Adds kubectl's flags, so they work before and after the subcommand (`kubectl dr -n shop status`, `... status -n shop`). */
export function withKubeFlags(command: Command, output = false): Command {
  command
    .option("-n, --namespace <namespace>", "namespace of the objects (default: the context's, else default)")
    .option("--context <context>", "kubeconfig context to use")
    .option("--kubeconfig <file>", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)");
  if (output) command.addOption(new Option("-o, --output <format>", "output format").choices(outputFormats));
  return command;
}

export interface Connection {
  readonly client: KubeClient;
  readonly namespace: string;
  /** The kubeconfig user, for approvals when the API server cannot say who we are. */
  readonly userName: string | undefined;
}

const dnsLabel = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function connect(flags: KubeFlags): Connection {
  const kubeConfig = new KubeConfig();
  if (flags.kubeconfig !== undefined) kubeConfig.loadFromFile(flags.kubeconfig);
  else kubeConfig.loadFromDefault();
  if (flags.context !== undefined) {
    if (kubeConfig.getContextObject(flags.context) === null)
      throw new Error(
        `context "${flags.context}" is not in the kubeconfig; known: ${
          kubeConfig
            .getContexts()
            .map((context) => context.name)
            .join(", ") || "none"
        }`,
      );
    kubeConfig.setCurrentContext(flags.context);
  }
  const context = kubeConfig.getContextObject(kubeConfig.getCurrentContext());
  const namespace = flags.namespace ?? context?.namespace ?? "default";
  if (!dnsLabel.test(namespace)) throw new Error(`--namespace ${JSON.stringify(namespace)} is not a namespace name`);
  return { client: new KubeClient(kubeConfig), namespace, userName: kubeConfig.getCurrentUser()?.name };
}

interface SelfSubjectReview extends KubeObject {
  status?: { userInfo?: { username?: string } };
}

const selfSubjectReviews = resourceType<SelfSubjectReview>({
  group: "authentication.k8s.io",
  version: "v1",
  kind: "SelfSubjectReview",
  plural: "selfsubjectreviews",
  namespaced: false,
});

/** Who the API server says we are (for approvals); the kubeconfig user when it cannot tell. */
export async function whoAmI(connection: Connection): Promise<string> {
  const review = await connection.client
    .create(selfSubjectReviews, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "SelfSubjectReview",
      metadata: { name: "" },
    })
    .catch(() => undefined);
  return review?.status?.userInfo?.username ?? connection.userName ?? "unknown";
}
