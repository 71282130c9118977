// Durations on the command line: "30s", "5m", "24h", "15d".
const durationUnits: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds of a duration flag, or undefined when the text is not a positive duration. */
export function durationMs(value: string): number | undefined {
  const match = /^(\d+)([smhd])$/.exec(value);
  const amount = Number(match?.[1]);
  const unit = durationUnits[match?.[2] ?? ""];
  return unit === undefined || !(amount > 0) ? undefined : amount * unit;
}

const apiDurationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds of an API duration ("1h30m", "500ms"; the units the CRDs allow), or undefined when malformed. */
export function apiDurationMs(value: string): number | undefined {
  if (!/^([0-9]+(ms|s|m|h))+$/.test(value)) return undefined;
  let total = 0;
  for (const [, amount, unit] of value.matchAll(/([0-9]+)(ms|s|m|h)/g))
    total += Number(amount) * (apiDurationUnits[unit ?? ""] ?? 0);
  return total;
}

/** A measured duration the way status reports it: 0s, 850ms, 42s, 1m12s, 2h3m. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return ms <= 0 ? "0s" : `${Math.round(ms)}ms`;
  const seconds = Math.round(ms / 1000);
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  if (hours > 0) return `${hours}h${minutes > 0 ? `${minutes}m` : ""}`;
  if (minutes > 0) return `${minutes}m${rest > 0 ? `${rest}s` : ""}`;
  return `${rest}s`;
}
