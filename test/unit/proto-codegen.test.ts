// The generated gRPC code in src/gen/ must be what `npm run gen:proto` produces
// from proto/: regenerate into a scratch directory and compare byte for byte.
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { packageRoot } from "../../src/util/package-root.js";

const run = promisify(execFile);

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort();
}

describe("generated protobuf code", function () {
  this.timeout(60_000);

  it("matches a fresh `buf generate` of proto/ (run `npm run gen:proto` after editing a .proto)", async () => {
    const scratch = mkdtempSync(join(tmpdir(), "ksr-proto-"));
    try {
      await run(join(packageRoot, "node_modules", ".bin", "buf"), ["generate", "--output", scratch], {
        cwd: packageRoot,
      });
      const committed = join(packageRoot, "src", "gen");
      const fresh = join(scratch, "src", "gen");
      assert.deepEqual(filesUnder(fresh), filesUnder(committed));
      for (const file of filesUnder(committed)) {
        assert.equal(
          readFileSync(join(fresh, file), "utf8"),
          readFileSync(join(committed, file), "utf8"),
          `${file} is stale`,
        );
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });
});
