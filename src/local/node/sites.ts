// Site disasters for `ksr local site down|up`. The CLI records what a site
// should be in DIR/node/sites/SITE.json; the node agent (which runs both nodes)
// applies it and records what it applied in SITE.applied.json, which the CLI
// waits for. `power`: the node stops heartbeating and watching the API, every
// process of its pods is killed at once (cgroup.kill), volumes and API objects
// stay. `network`: the node's namespace drops whatever its pods exchange with
// anything outside the site (the kubelet's probes excepted), and the node,
// cut off, stops heartbeating and watching the API; its pods keep running.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { addressIn, nodeNamespaceName, reservedOctets, type PodNetworkPlan } from "./addresses.js";
import { localNodes, nodeLayout, type LocalNodeIdentity } from "./layout.js";

const run = promisify(execFile);
export const siteModes = ["power", "network"] as const;
export type SiteMode = (typeof siteModes)[number];

export interface SiteState {
  up: boolean;
  mode?: SiteMode;
  /** Bumped by every request, so the CLI knows when the agent has applied its own. */
  generation: number;
  since: string;
}

const sitesDir = (clusterDir: string) => join(nodeLayout(clusterDir).scripts, "..", "sites");
const desiredFile = (clusterDir: string, site: string) => join(sitesDir(clusterDir), `${site}.json`);
const appliedFile = (clusterDir: string, site: string) => join(sitesDir(clusterDir), `${site}.applied.json`);

export function siteIdentity(site: string): LocalNodeIdentity {
  const identity = localNodes.find((node) => node.site === site);
  if (identity === undefined)
    throw new Error(`no site named "${site}"; the sites are ${localNodes.map((n) => n.site).join(", ")}`);
  return identity;
}

function readState(file: string): SiteState | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as Partial<SiteState>;
    if (typeof parsed.up !== "boolean" || typeof parsed.generation !== "number") return undefined;
    if (parsed.mode !== undefined && !siteModes.includes(parsed.mode)) return undefined;
    return parsed as SiteState;
  } catch {
    return undefined;
  }
}

function writeState(file: string, state: SiteState): void {
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify(state) + "\n");
  renameSync(`${file}.tmp`, file);
}

export const desiredSiteState = (clusterDir: string, site: string) => readState(desiredFile(clusterDir, site));
export const appliedSiteState = (clusterDir: string, site: string) => readState(appliedFile(clusterDir, site));
export function recordAppliedSiteState(clusterDir: string, site: string, state: SiteState): void {
  writeState(appliedFile(clusterDir, site), state);
}

/**
 * Each site as the agent last applied it (up when never touched), or as last asked for when
 * that is newer (a change made while the cluster was stopped, applied when it starts).
 */
export function siteStates(clusterDir: string): { site: string; node: string; state: SiteState | undefined }[] {
  return localNodes.map((identity) => {
    const applied = appliedSiteState(clusterDir, identity.site);
    const desired = desiredSiteState(clusterDir, identity.site);
    const newer = desired !== undefined && desired.generation > (applied?.generation ?? 0);
    return { site: identity.site, node: identity.name, state: newer ? desired : applied };
  });
}

export function describeSite(state: SiteState | undefined): string {
  if (state === undefined || state.up) return "up";
  return `down (${state.mode ?? "power"}) since ${state.since}`;
}

/** The sites that are down, by node name, each with what a user reads about it. */
export function downSites(clusterDir: string): Map<string, string> {
  return new Map(
    siteStates(clusterDir)
      .filter(({ state }) => state !== undefined && !state.up)
      .map(({ site, node, state }) => [
        node,
        `site ${site} is ${describeSite(state)}: node ${node} stays NotReady and runs nothing until: ` +
          `ksr local site up ${site} --dir ${clusterDir}`,
      ]),
  );
}

/**
 * Asks the node agent to take a site down or bring it up, and waits until it has. With the
 * cluster stopped the change is recorded (pending) and applied when it starts.
 */
export async function changeSite(
  clusterDir: string,
  site: string,
  change: { up: true } | { up: false; mode: SiteMode },
  agentRunning: () => boolean,
  timeoutMs = 60_000,
): Promise<{ state: SiteState; pending: boolean }> {
  siteIdentity(site);
  const previous = desiredSiteState(clusterDir, site);
  const state: SiteState = {
    up: change.up,
    ...(change.up ? {} : { mode: change.mode }),
    generation: (previous?.generation ?? 0) + 1,
    since: new Date().toISOString(),
  };
  writeState(desiredFile(clusterDir, site), state);
  // A stopped cluster applies it when it starts, as a site that lost power while the lights were off.
  if (!agentRunning()) return { state, pending: true };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const applied = appliedSiteState(clusterDir, site);
    if (applied !== undefined && applied.generation >= state.generation) return { state: applied, pending: false };
    if (!agentRunning())
      throw new Error(
        `the node agent of ${clusterDir} is not running; start the cluster with: ksr local up --dir ${clusterDir}`,
      );
    if (Date.now() > deadline)
      throw new Error(`the node agent did not apply the change to site ${site} in time; see its log`);
    await sleep(200);
  }
}

const isolationTable = "ksr-site";

/**
 * Cuts the site's node namespace off: forwarded packets to or from the core
 * (the other site, the host and its apiserver) are dropped, except the
 * kubelet's own address. Before kube-proxy, policy and conntrack decide. The
 * site's own CoreDNS pod keeps answering from what it last read, as a DNS
 * replica in a partitioned site does.
 */
export async function isolateSite(clusterDir: string, plan: PodNetworkPlan, site: string): Promise<void> {
  const netns = nodeNamespaceName(clusterDir, site);
  const kubelet = addressIn(plan.subnet, reservedOctets.kubelet);
  await reconnectSite(clusterDir, site);
  const rules = [
    `add table inet ${isolationTable}`,
    `add chain inet ${isolationTable} forward { type filter hook forward priority -300; policy accept; }`,
    `add rule inet ${isolationTable} forward iifname "core" ip saddr != ${kubelet} drop`,
    `add rule inet ${isolationTable} forward oifname "core" ip daddr != ${kubelet} drop`,
  ].join("; ");
  await run("ip", ["netns", "exec", netns, "nft", rules]);
}

export async function reconnectSite(clusterDir: string, site: string): Promise<void> {
  const netns = nodeNamespaceName(clusterDir, site);
  await run("ip", ["netns", "exec", netns, "nft", "delete", "table", "inet", isolationTable]).catch(() => undefined);
}
