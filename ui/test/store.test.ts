import { describe, expect, it } from "vitest";
import { createStore } from "../src/store";
import { SETTINGS, tile } from "./helpers";

describe("store", () => {
  it("a tile event updates its tile in place; the order changes only when tiles come, go or move", () => {
    const s = createStore();
    s.setTiles([tile(2), tile(1)]);
    expect(s.order.value).toEqual(["/dev/pts/101", "/dev/pts/102"]);
    const sig = s.tiles.get("/dev/pts/101");
    const order = s.order.value;
    s.applyBenchEvent({ kind: "tile", tile: tile(1, { state: "running", stage: "keygen", percent: 20 }) });
    expect(s.tiles.get("/dev/pts/101")).toBe(sig);
    expect(sig?.value.stage).toBe("keygen");
    expect(s.order.value).toBe(order);
    s.applyBenchEvent({ kind: "tile", tile: tile(3) });
    expect(s.order.value).toEqual(["/dev/pts/101", "/dev/pts/102", "/dev/pts/103"]);
  });

  it("a removed tile goes, and so does its selection", () => {
    const s = createStore();
    s.setTiles([tile(1), tile(2)]);
    s.selected.value = "/dev/pts/102";
    s.applyBenchEvent({ kind: "removed", port: "/dev/pts/102" });
    expect(s.order.value).toEqual(["/dev/pts/101"]);
    expect(s.selected.value).toBeNull();
  });

  it("setTiles replaces the set (a reopened station) and keeps surviving tiles' signals", () => {
    const s = createStore();
    s.setTiles([tile(1), tile(2)]);
    const keep = s.tiles.get("/dev/pts/101");
    s.setTiles([tile(1, { state: "passed" })]);
    expect(s.tiles.get("/dev/pts/101")).toBe(keep);
    expect(s.tileList().map((t) => t.state)).toEqual(["passed"]);
  });

  it("settings are dirty only when the draft differs from what was loaded", () => {
    const s = createStore();
    expect(s.settingsDirty.value).toBe(false);
    const loaded = { ...SETTINGS };
    s.settings.value = loaded;
    s.settingsDraft.value = loaded;
    expect(s.settingsDirty.value).toBe(false);
    s.settingsDraft.value = { ...loaded, baud: 9600 };
    expect(s.settingsDirty.value).toBe(true);
  });
});
