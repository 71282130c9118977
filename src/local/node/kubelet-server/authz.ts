// Who may use a node's kubelet API, decided as the kubelet decides it: the
// client certificate names the user (CN) and groups (O), and a
// SubjectAccessReview asks the API server whether that user may act on the
// `nodes` resource, with the verb from the HTTP method and the subresource
// from the path (KubeletFineGrainedAuthz: /healthz and /pods are tried as
// their own subresource before `proxy`).
import type { AuthorizationV1Api } from "@kubernetes/client-node";
import type { PeerCertificate } from "node:tls";

export interface NodeRequestAttributes {
  verb: string;
  resource: "nodes";
  /** Tried in order; the first one allowed admits the request. */
  subresources: string[];
  name: string;
}

const verbs: Record<string, string> = {
  POST: "create",
  GET: "get",
  HEAD: "get",
  PUT: "update",
  PATCH: "patch",
  DELETE: "delete",
};

const isSubpath = (path: string, prefix: string) => path === prefix || path.startsWith(`${prefix}/`);

const ownSubresources: [string, string][] = [
  ["/stats", "stats"],
  ["/metrics", "metrics"],
  ["/logs", "log"],
  ["/checkpoint", "checkpoint"],
  ["/statusz", "statusz"],
  ["/flagz", "configz"],
];
const fineGrained: [string, string][] = [
  ["/pods", "pods"],
  ["/healthz", "healthz"],
  ["/configz", "configz"],
  ["/runningpods", "pods"],
];

export function requestAttributes(method: string, path: string, nodeName: string): NodeRequestAttributes {
  const fine = fineGrained.find(([prefix]) => isSubpath(path, prefix))?.[1];
  const own = ownSubresources.find(([prefix]) => isSubpath(path, prefix))?.[1] ?? "proxy";
  return {
    verb: verbs[method.toUpperCase()] ?? "",
    resource: "nodes",
    subresources: fine === undefined ? [own] : [fine, own],
    name: nodeName,
  };
}

export interface ClientIdentity {
  user: string;
  groups: string[];
}

/** The user a verified client certificate names, as the apiserver's x509 authenticator reads it. */
export function identityOf(certificate: PeerCertificate): ClientIdentity | undefined {
  const subject = certificate.subject as unknown as Record<string, string | string[] | undefined> | undefined;
  const cn = subject?.CN;
  const user = Array.isArray(cn) ? cn[0] : cn;
  if (user === undefined || user === "") return undefined;
  const o = subject?.O;
  return { user, groups: [...(o === undefined ? [] : Array.isArray(o) ? o : [o]), "system:authenticated"] };
}

export type Decision = { allowed: true } | { allowed: false; reason: string };

export interface Authorizer {
  authorize(identity: ClientIdentity, attributes: NodeRequestAttributes): Promise<Decision>;
}

/** SubjectAccessReviews through the API server, answers kept for a while as the kubelet's webhook cache does. */
export function subjectAccessReviewer(
  api: AuthorizationV1Api,
  ttl = { allowedMs: 5 * 60_000, deniedMs: 30_000 },
): Authorizer {
  const cache = new Map<string, { decision: Decision; until: number }>();
  const review = async (identity: ClientIdentity, verb: string, subresource: string, name: string) => {
    const key = JSON.stringify([identity.user, identity.groups, verb, subresource, name]);
    const hit = cache.get(key);
    if (hit !== undefined && hit.until > Date.now()) return hit.decision;
    const response = await api.createSubjectAccessReview({
      body: {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SubjectAccessReview",
        spec: {
          user: identity.user,
          groups: identity.groups,
          resourceAttributes: { verb, resource: "nodes", subresource, name, version: "v1" },
        },
      },
    });
    const decision: Decision =
      response.status?.allowed === true ? { allowed: true } : { allowed: false, reason: response.status?.reason ?? "" };
    cache.set(key, { decision, until: Date.now() + (decision.allowed ? ttl.allowedMs : ttl.deniedMs) });
    return decision;
  };
  return {
    async authorize(identity, attributes) {
      let last: Decision = { allowed: false, reason: "" };
      for (const subresource of attributes.subresources) {
        last = await review(identity, attributes.verb, subresource, attributes.name);
        if (last.allowed) return last;
      }
      return last;
    },
  };
}

/** The kubelet's 403 text: who was refused what. */
export function forbiddenMessage(identity: ClientIdentity, attributes: NodeRequestAttributes): string {
  const subresources = attributes.subresources.join(" ");
  return `Forbidden (user=${identity.user}, verb=${attributes.verb}, resource=${attributes.resource}, subresource(s)=[${subresources}])\n`;
}
