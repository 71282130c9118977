// wait: the step succeeds once its duration has passed since it started.
import { apiDurationMs, formatDuration } from "../../../util/duration.js";
import type { StepContext, StepExecutor } from "./types.js";

export const waitStep: StepExecutor = {
  execute({ work, clock }: StepContext) {
    const duration = apiDurationMs(work.action?.wait?.duration ?? "") ?? 0;
    const left = Date.parse(work.step.startTime ?? "") + duration - clock.now();
    return Promise.resolve(
      left <= 0
        ? { state: "Succeeded" as const, message: `waited ${formatDuration(duration)}` }
        : { state: "InProgress" as const, message: `waiting ${formatDuration(left)} more`, recheckAfterMs: left },
    );
  },
};

/** manual: the machine itself waits for the approval; executing it only says so. */
export const manualStep: StepExecutor = {
  execute({ work }: StepContext) {
    return Promise.resolve({ state: "InProgress" as const, message: work.action?.manual?.instructions ?? "" });
  },
};
