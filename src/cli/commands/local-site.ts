// `ksr local site down|up SITE`: lose a site as in a real outage, and get it back.
import { Command, Option } from "commander";
import { defaultClusterDir, readClusterState } from "../../local/cluster.js";
import { nodeAgentName } from "../../local/node/component.js";
import { changeSite, describeSite, siteModes, type SiteMode, type SiteState } from "../../local/node/sites.js";
import { isRunning } from "../../local/processes.js";

const dirOption = () =>
  new Option("--dir <dir>", "directory holding the cluster's data, PKI, logs and kubeconfig").default(
    defaultClusterDir,
  );

function agentRunning(dir: string): () => boolean {
  return () => {
    const agent = readClusterState(dir)?.components.find((c) => c.name === nodeAgentName);
    return agent !== undefined && isRunning(agent);
  };
}

function report(site: string, dir: string, change: { state: SiteState; pending: boolean }): void {
  const what = describeSite(change.state);
  process.stderr.write(
    change.pending
      ? `ksr local: the cluster in ${dir} is stopped; site ${site} will be ${what} when it starts (ksr local up --dir ${dir})\n`
      : `ksr local: site ${site} is ${what}\n`,
  );
}

export function siteCommand(): Command {
  const site = new Command("site").description("take a site of the local cluster down, or bring it back");
  site
    .command("down")
    .description(
      "power: the site's node stops heartbeating and its pods' processes are killed at once (volumes stay); " +
        "network: its pods keep running but reach nothing outside the site, and the API cannot reach them",
    )
    .argument("<site>", "primary or recovery")
    .addOption(new Option("--mode <mode>", "how the site is lost").choices([...siteModes]).default("power"))
    .addOption(dirOption())
    .action(async (name: string, options: { dir: string; mode: SiteMode }) => {
      report(
        name,
        options.dir,
        await changeSite(options.dir, name, { up: false, mode: options.mode }, agentRunning(options.dir)),
      );
    });
  site
    .command("up")
    .description("bring a site back: a cold start after power, reconnection (stale pods still running) after network")
    .argument("<site>", "primary or recovery")
    .addOption(dirOption())
    .action(async (name: string, options: { dir: string }) => {
      report(name, options.dir, await changeSite(options.dir, name, { up: true }, agentRunning(options.dir)));
    });
  return site;
}
