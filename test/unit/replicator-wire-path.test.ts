import { strict as assert } from "node:assert";
import { wirePathComponents } from "../../src/replicator/wire-path.js";

describe("replicator wire paths", () => {
  const accepted: [string, string[]][] = [
    ["a", ["a"]],
    ["a/b/c.txt", ["a", "b", "c.txt"]],
    ["..a/b..", ["..a", "b.."]],
    ["dir with space/ü", ["dir with space", "ü"]],
  ];
  for (const [path, components] of accepted) {
    it(`accepts ${JSON.stringify(path)}`, () => {
      assert.deepEqual(wirePathComponents(path), components);
    });
  }

  const rejected: [string, RegExp][] = [
    ["", /empty path/],
    ["/etc/passwd", /absolute/],
    ["../x", /'\.\.' components/],
    ["a/../../x", /'\.\.' components/],
    ["a/./b", /'\.' components/],
    ["a//b", /empty component/],
    ["a/", /empty component/],
    ["a\0b", /NUL/],
    ["x".repeat(256), /longer than 255/],
    [`${"a/".repeat(2100)}a`, /longer than 4096/],
  ];
  for (const [path, reason] of rejected) {
    it(`rejects ${JSON.stringify(path.slice(0, 30))}`, () => {
      assert.throws(() => wirePathComponents(path), reason);
    });
  }
});
