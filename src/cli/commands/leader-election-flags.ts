// The operator's leader-election timing as flags: `ksr operator` takes them, and `ksr install`
// takes the same ones and passes them to the Deployment it applies (the chart's
// operator.leaderElection values do the same).
import type { Command } from "commander";
import type { LeaderElectionFlags } from "../../install/manifests.js";
import { validateLeaderElectionTiming, type LeaderElectionTiming } from "../../runtime/index.js";
import { durationMs } from "../../util/duration.js";

/** client-go's defaults, as the chart's values.yaml has them. */
export const defaultLeaderElection: LeaderElectionFlags = {
  leaseDuration: "15s",
  renewDeadline: "10s",
  retryPeriod: "2s",
};

export function withLeaderElection(command: Command): Command {
  return command
    .option(
      "--lease-duration <duration>",
      "how long a standby waits after the leader's last renewal",
      defaultLeaderElection.leaseDuration,
    )
    .option(
      "--renew-deadline <duration>",
      "a leader that cannot renew for this long steps down",
      defaultLeaderElection.renewDeadline,
    )
    .option("--retry-period <duration>", "pause between lease attempts", defaultLeaderElection.retryPeriod);
}

/** The flags in milliseconds, refused (naming the flags) unless a leader steps down before anyone takes over. */
export function leaderElectionTiming(flags: LeaderElectionFlags): LeaderElectionTiming {
  const duration = (value: string, flag: string): number => {
    const ms = durationMs(value);
    if (ms === undefined || ms <= 0) throw new Error(`${flag} must be a duration such as 15s or 2m, got "${value}"`);
    return ms;
  };
  const timing = {
    leaseDurationMs: duration(flags.leaseDuration, "--lease-duration"),
    renewDeadlineMs: duration(flags.renewDeadline, "--renew-deadline"),
    retryPeriodMs: duration(flags.retryPeriod, "--retry-period"),
  };
  try {
    validateLeaderElectionTiming(timing);
  } catch (error) {
    throw new Error(`--lease-duration, --renew-deadline, --retry-period: ${(error as Error).message}`);
  }
  return timing;
}
