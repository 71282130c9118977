import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkSource } from "../../src/replicator/agent/agent.js";

describe("agent source check", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ksr-source-"));
    writeFileSync(join(dir, "disk.img"), Buffer.alloc(4096));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const cases: [string, "tree" | "block", RegExp | undefined][] = [
    ["", "tree", undefined],
    ["disk.img", "block", undefined],
    ["missing", "tree", /cannot be read \(ENOENT\); give an existing directory/],
    ["missing", "block", /cannot be read \(ENOENT\); give an existing image file or block device/],
    ["disk.img", "tree", /is not a directory; tree capture replicates a directory/],
    ["", "block", /is not an image file or block device/],
  ];
  for (const [name, mode, error] of cases) {
    it(`${mode} capture of ${name === "" ? "a directory" : name}: ${error === undefined ? "accepted" : "refused"}`, async () => {
      const source = join(dir, name);
      if (error === undefined) await checkSource(source, mode);
      else await assert.rejects(checkSource(source, mode), error);
    });
  }
});
