// The capture strategies an agent reports (CaptureInfo.strategy, DESIGN.md §5) and the volume
// mode each implies: the strategy is the one source of truth, the mode follows from it.
export const captureModeOfStrategy = {
  "tree-scan": "tree",
  "write-ranges": "tree",
  "block-scan": "block",
} as const;

export type ReportedCaptureStrategy = keyof typeof captureModeOfStrategy;
export type CaptureMode = (typeof captureModeOfStrategy)[ReportedCaptureStrategy];

export const reportedCaptureStrategies = Object.keys(captureModeOfStrategy) as ReportedCaptureStrategy[];

export function isReportedCaptureStrategy(strategy: string): strategy is ReportedCaptureStrategy {
  return Object.hasOwn(captureModeOfStrategy, strategy);
}

/** The volume mode a reported strategy implies; undefined for none or one this version does not know. */
export function captureModeOf(strategy: string | undefined): CaptureMode | undefined {
  return strategy !== undefined && isReportedCaptureStrategy(strategy) ? captureModeOfStrategy[strategy] : undefined;
}
