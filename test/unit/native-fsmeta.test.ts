// The native addon's file metadata calls on real files: xattrs never follow symlinks, mknod makes
// every special kind, mtimes are exact to the nanosecond (Node's own utimes is not: measured here),
// and errors look like Node's fs errors.
import { strict as assert } from "node:assert";
import { lutimes, lstat, mkdtemp, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EntryKind } from "../../src/gen/ksr/replication/v1/replication.js";
import { nativeAddon } from "../../src/native/addon.js";
import {
  applyAttributes,
  deviceNumbers,
  makeSpecial,
  readAttributes,
  specialKind,
} from "../../src/replicator/file-attributes.js";
import { capabilityValue } from "../fixture/fidelity-tree.js";

describe("native addon: file metadata", () => {
  let dir: string;
  const addon = nativeAddon();
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "ksr-native-"));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("sets, lists, reads and removes xattrs, on a symlink itself rather than its target", async () => {
    const file = join(dir, "f");
    const link = join(dir, "l");
    await writeFile(file, "x");
    await symlink("f", link);
    addon.setXattr(file, "user.a", Buffer.from([0, 1, 2]));
    addon.setXattr(file, "user.empty", Buffer.alloc(0));
    addon.setXattr(link, "trusted.on-link", Buffer.from("link"));
    assert.deepEqual(addon.listXattrs(file).sort(), ["user.a", "user.empty"]);
    assert.deepEqual(addon.getXattr(file, "user.a"), Buffer.from([0, 1, 2]));
    assert.deepEqual(addon.getXattr(file, "user.empty"), Buffer.alloc(0));
    assert.equal(addon.getXattr(file, "user.missing"), null);
    assert.deepEqual(addon.listXattrs(link), ["trusted.on-link"]);
    addon.removeXattr(file, "user.a");
    addon.removeXattr(file, "user.a"); // already gone: not an error
    assert.deepEqual(addon.listXattrs(file), ["user.empty"]);
  });

  it("reports failures the way Node's fs does", () => {
    const missing = join(dir, "missing");
    assert.throws(
      () => addon.listXattrs(missing),
      (error: NodeJS.ErrnoException) =>
        error.code === "ENOENT" && error.syscall === "llistxattr" && error.path === missing,
    );
    assert.throws(
      () => {
        addon.setXattr(missing, "user.a", Buffer.from("x"));
      },
      { code: "ENOENT" },
    );
    assert.throws(() => {
      addon.setMtime(dir, 0, 1e9);
    }, RangeError);
    assert.throws(() => {
      addon.mknod(join(dir, "regular"), 0o100644, 0, 0);
    }, /only FIFOs, sockets and device nodes/);
    assert.throws(() => {
      addon.getXattr("a\0b", "user.a");
    }, /must not contain NUL/);
  });

  const specials: [EntryKind, number, number][] = [
    [EntryKind.ENTRY_KIND_FIFO, 0, 0],
    [EntryKind.ENTRY_KIND_SOCKET, 0, 0],
    [EntryKind.ENTRY_KIND_CHAR_DEVICE, 1, 3],
    [EntryKind.ENTRY_KIND_CHAR_DEVICE, 4000, 300_000],
    [EntryKind.ENTRY_KIND_BLOCK_DEVICE, 7, 9],
  ];
  for (const [kind, rdevMajor, rdevMinor] of specials) {
    it(`makes a ${EntryKind[kind]} ${rdevMajor}:${rdevMinor} and reads its numbers back`, async () => {
      const path = join(dir, "node");
      makeSpecial(path, kind, 0o640, { rdevMajor, rdevMinor });
      const stats = await lstat(path, { bigint: true });
      assert.equal(specialKind(stats), kind);
      assert.deepEqual(deviceNumbers(kind, stats.rdev), { rdevMajor, rdevMinor });
    });
  }

  it("sets mtimes exactly to the nanosecond, on symlinks too, where Node's utimes rounds", async () => {
    const file = join(dir, "f");
    const link = join(dir, "l");
    await writeFile(file, "x");
    await symlink("f", link);
    const cases: [number, number][] = [
      [1_600_000_000, 123_456_789],
      [0, 1],
      [-1, 999_999_999],
      [4_102_444_800, 999_999_999],
    ];
    for (const [seconds, nanoseconds] of cases) {
      addon.setMtime(file, seconds, nanoseconds);
      addon.setMtime(link, seconds + 1, nanoseconds);
      const expected = BigInt(seconds) * 1_000_000_000n + BigInt(nanoseconds);
      assert.equal((await lstat(file, { bigint: true })).mtimeNs, expected);
      assert.equal((await lstat(link, { bigint: true })).mtimeNs, expected + 1_000_000_000n);
    }
    // What Node's own utimes/lutimes keep of 1600000000.123456789 (seconds as a double).
    const requested = 1_600_000_000 + 0.123_456_789; // no double holds it exactly, which is the point
    await utimes(file, 0, requested);
    await lutimes(link, 0, requested);
    const lossNs = (mtimeNs: bigint) => Number(mtimeNs - 1_600_000_000_123_456_789n);
    const fileLoss = lossNs((await lstat(file, { bigint: true })).mtimeNs);
    const linkLoss = lossNs((await lstat(link, { bigint: true })).mtimeNs);
    assert.notEqual(fileLoss, 0, "Node's utimes cannot keep this mtime (if it can now, drop the addon's setMtime)");
    console.log(`      Node's utimes/lutimes of 1600000000.123456789 s: off by ${fileLoss} ns / ${linkLoss} ns`);
  });

  it("applies owner, mode, xattrs and mtime in rsync's order: setuid and capabilities survive the chown", async () => {
    const file = join(dir, "f");
    await writeFile(file, "x");
    const wanted = {
      uid: 1000,
      gid: 1000,
      mtimeSec: 1_234_567_890,
      mtimeNsec: 42,
      xattrs: [
        { name: "security.capability", value: capabilityValue() },
        { name: "user.b", value: Buffer.from("b") },
      ],
    };
    addon.setXattr(file, "user.stale", Buffer.from("goes"));
    const notKept: string[] = [];
    assert.equal(await applyAttributes(file, 0o4755, wanted, (path, what) => notKept.push(`${path} ${what}`)), true);
    assert.deepEqual(notKept, []);
    const stats = await lstat(file, { bigint: true });
    assert.equal(Number(stats.mode & 0o7777n).toString(8), "4755");
    assert.deepEqual(readAttributes(file, stats), wanted);
    assert.equal(await applyAttributes(join(dir, "gone"), 0o644, wanted, () => undefined), false);
  });
});
