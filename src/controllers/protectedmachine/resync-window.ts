// The policy's resync window (spec.resync.window): start and end as HH:MM in an IANA time zone,
// on some days of the week; a window whose end is before its start spans midnight and belongs to
// the day it opens on. Pure: the caller passes the time.
import type { ResyncWindow } from "../../api/types.js";

const dayNames = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"] as const;

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(":").map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

const formats = new Map<string, Intl.DateTimeFormat>();

/** The weekday and minute of the day at `at` in the time zone (Intl's tz database). */
export function localTime(at: number, timeZone: string): { day: (typeof dayNames)[number]; minute: number } {
  let format = formats.get(timeZone);
  if (format === undefined) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone,
      weekday: "long",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    });
    formats.set(timeZone, format);
  }
  const parts = format.formatToParts(at);
  const part = (type: string) => parts.find((p) => p.type === type)?.value ?? "";
  const day = dayNames.find((name) => name === part("weekday")) ?? "Monday";
  return { day, minute: Number(part("hour")) * 60 + Number(part("minute")) };
}

/** Throws a message naming the field when the time zone is unknown (CEL checks only its shape). */
export function checkTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone });
  } catch {
    throw new RangeError(
      `spec.resync.window.timeZone "${timeZone}" is not a time zone this operator knows; use an IANA name such as UTC or Europe/Berlin`,
    );
  }
}

export function inWindow(window: ResyncWindow, at: number): boolean {
  const { day, minute } = localTime(at, window.timeZone);
  const start = minutesOf(window.start);
  const end = minutesOf(window.end);
  const opensOn = (name: (typeof dayNames)[number]) => window.days === undefined || window.days.includes(name);
  if (start < end) return opensOn(day) && minute >= start && minute < end;
  if (minute >= start) return opensOn(day);
  // Past midnight: the window opened the day before.
  const yesterday = dayNames[(dayNames.indexOf(day) + 6) % 7] ?? day;
  return minute < end && opensOn(yesterday);
}

/** The first minute at or after `from` inside the window (within 8 days; a window always opens weekly). */
export function nextOpening(window: ResyncWindow, from: number): number | undefined {
  const minuteMs = 60_000;
  const first = Math.ceil(from / minuteMs) * minuteMs;
  if (inWindow(window, from)) return from;
  for (let at = first; at < from + 8 * 24 * 60 * minuteMs; at += minuteMs) if (inWindow(window, at)) return at;
  return undefined;
}

export function describeWindow(window: ResyncWindow): string {
  const days = window.days === undefined ? "every day" : window.days.join(", ");
  return `${window.start}-${window.end} ${window.timeZone}, ${days}`;
}
