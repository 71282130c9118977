// Durations on the command line: "30s", "5m", "24h", "15d".
const durationUnits: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds of a duration flag, or undefined when the text is not a positive duration. */
export function durationMs(value: string): number | undefined {
  const match = /^(\d+)([smhd])$/.exec(value);
  const amount = Number(match?.[1]);
  const unit = durationUnits[match?.[2] ?? ""];
  return unit === undefined || !(amount > 0) ? undefined : amount * unit;
}
