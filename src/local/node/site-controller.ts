// The node agent's side of `ksr local site down|up`: polls each site's
// requested state (src/local/node/sites.ts) and applies changes in order,
// recording each one it applied so the CLI can return.
import type { Logger } from "pino";
import type { PodNetworkPlan } from "./addresses.js";
import { describeError } from "./kube.js";
import { localNodes, type LocalNodeIdentity } from "./layout.js";
import {
  appliedSiteState,
  desiredSiteState,
  isolateSite,
  reconnectSite,
  recordAppliedSiteState,
  type SiteState,
} from "./sites.js";

export interface SiteActions {
  /** The node stops watching the API (and heartbeating, and writing status). */
  cutOff(identity: LocalNodeIdentity): Promise<void>;
  /** Every process of the node's pods dies at once. */
  powerOff(identity: LocalNodeIdentity): Promise<void>;
  /** The node watches the API again: still-bound pods start afresh after a power loss, or carry on. */
  reconnect(identity: LocalNodeIdentity): void;
}

const pollMs = 300;

export function siteController(
  clusterDir: string,
  plan: PodNetworkPlan | undefined,
  routed: boolean,
  log: Logger,
  actions: SiteActions,
): { apply(): Promise<void>; stop(): void } {
  /** What is in force per site; undefined means up, as at first start. */
  const current = new Map<string, SiteState | undefined>(
    localNodes.map((identity) => [identity.site, appliedSiteState(clusterDir, identity.site)]),
  );
  const started = new Set<string>();
  let applying = false;

  async function bringUp(identity: LocalNodeIdentity, was: SiteState | undefined): Promise<void> {
    if (was?.up === false && was.mode === "network") await reconnectSite(clusterDir, identity.site);
    actions.reconnect(identity);
  }

  async function takeDown(identity: LocalNodeIdentity, wanted: SiteState): Promise<void> {
    await actions.cutOff(identity);
    if (wanted.mode === "power") {
      await actions.powerOff(identity);
      return;
    }
    if (plan === undefined || !routed) {
      log.warn(
        { site: identity.site },
        "no routed pod network: site down --mode network only cuts the node off the API",
      );
      return;
    }
    await isolateSite(clusterDir, plan, identity.site);
  }

  async function applyOne(identity: LocalNodeIdentity): Promise<void> {
    const wanted = desiredSiteState(clusterDir, identity.site);
    const was = current.get(identity.site);
    const first = !started.has(identity.site);
    if (!first && (wanted === undefined || wanted.generation <= (was?.generation ?? 0))) return;
    started.add(identity.site);
    const target: SiteState = wanted ?? { up: true, generation: 0, since: new Date().toISOString() };
    // A site that was down comes back first (at the agent's start nothing runs yet), so no mode lingers.
    if (!first && was?.up === false) await bringUp(identity, was);
    if (target.up) actions.reconnect(identity);
    else await takeDown(identity, target);
    current.set(identity.site, target);
    if (wanted !== undefined) recordAppliedSiteState(clusterDir, identity.site, target);
    log.info({ site: identity.site, up: target.up, mode: target.mode }, "site state applied");
  }

  async function apply(): Promise<void> {
    if (applying) return;
    applying = true;
    try {
      for (const identity of localNodes) await applyOne(identity);
    } catch (error) {
      log.error({ error: describeError(error) }, "applying a site change failed; retrying");
    } finally {
      applying = false;
    }
  }

  const timer = setInterval(() => void apply(), pollMs);
  return {
    apply,
    stop() {
      clearInterval(timer);
    },
  };
}
