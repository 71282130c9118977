// The local node's pty relay (python3 -c ptyRelay WAIT COMMAND...), run for real: an exec's
// command starts at the size the client sends as the streams open, even when that size comes a
// moment after the relay started; the command's exit status is the relay's.
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import type { Writable } from "node:stream";
import { ptyRelay } from "../../../src/local/node/runtime.js";

interface Relayed {
  code: number | null;
  out: string;
}

/** Runs `sh -c script` through the relay; `size` ("cols rows") goes to fd 3 after `sizeAfterMs`. */
function relay(wait: string, script: string, size: string, sizeAfterMs: number): Promise<Relayed> {
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-c", ptyRelay, wait, "sh", "-c", script], {
      stdio: ["pipe", "pipe", "inherit", "pipe"],
    });
    const resizes = child.stdio[3] as Writable;
    resizes.on("error", () => undefined);
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      resolve({ code, out });
    });
    const timer = setTimeout(() => resizes.write(`${size}\n`), sizeAfterMs);
    child.on("exit", () => {
      clearTimeout(timer);
      resizes.destroy();
    });
    child.stdin?.end();
  });
}

describe("the local node's pty relay", () => {
  it("starts an exec's command at the client's size when the size comes after the relay started", async () => {
    const relayed = await relay("2", "stty size; exit 4", "123 45", 300);
    assert.match(relayed.out, /^45 123\r\n/);
    assert.equal(relayed.code, 4);
  });

  it("gives the command a terminal of its own, and starts at once when it waits for no size", async () => {
    // The size would come long after the command ended: a relay that waited would print it.
    const relayed = await relay("0", "tty; stty size", "123 45", 5000);
    assert.match(relayed.out, /^\/dev\/pts\/\d+\r\n/);
    assert.doesNotMatch(relayed.out, /45 123/);
  });
});
