import { describe, expect, it } from "vitest";
import { GAP, columnsFor, neighbour, type Rect } from "../src/grid";

/** Rects of `n` tiles laid out in `cols` columns (what the browser would render). */
function layout(n: number, cols: number, w = 200, h = 120): Rect[] {
  return Array.from({ length: n }, (_, i) => ({ left: (i % cols) * (w + GAP), top: Math.floor(i / cols) * (h + GAP), width: w, height: h }));
}

describe("columnsFor", () => {
  it("uses the window's shape, not round(sqrt(n))", () => {
    expect(columnsFor(1, 1340, 600)).toBe(1);
    expect(columnsFor(8, 1340, 600)).toBe(4);
    expect(columnsFor(16, 1340, 600)).toBe(4);
    expect(columnsFor(17, 1340, 600)).toBeGreaterThanOrEqual(5);
  });

  it("keeps tiles at least a readable size from 1024x600 to 1920x1080, 1 to 32 ports", () => {
    for (const [w, h] of [[1000, 420], [1900, 900]]) {
      for (let n = 1; n <= 32; n++) {
        const c = columnsFor(n, w, h);
        const rows = Math.ceil(n / c);
        expect(c).toBeGreaterThanOrEqual(1);
        expect(c).toBeLessThanOrEqual(n);
        expect((w - GAP * (c - 1)) / c).toBeGreaterThan(110);
        expect((h - GAP * (rows - 1)) / rows).toBeGreaterThan(70);
      }
    }
  });

  it("has a sane answer before the grid is measured", () => {
    expect(columnsFor(8, 0, 0)).toBe(4);
  });
});

describe("neighbour (arrow keys on the rendered grid)", () => {
  it("with 8 devices in 4 columns, Down from tile 1 selects tile 5 (below it)", () => {
    expect(neighbour(layout(8, 4), 0, "down")).toBe(4);
    expect(neighbour(layout(8, 4), 5, "up")).toBe(1);
  });

  it("follows whatever column count was rendered", () => {
    const r = layout(8, 3);
    expect(neighbour(r, 0, "down")).toBe(3);
    expect(neighbour(r, 3, "down")).toBe(6);
    // Column 3 of row 2 goes down to the nearest tile of the short last row.
    expect(neighbour(r, 5, "down")).toBe(7);
    expect(neighbour(layout(8, 8), 2, "down")).toBe(2);
  });

  it("stays put at the edges; left/right step through the order", () => {
    const r = layout(8, 4);
    expect(neighbour(r, 1, "up")).toBe(1);
    expect(neighbour(r, 6, "down")).toBe(6);
    expect(neighbour(r, 0, "left")).toBe(0);
    expect(neighbour(r, 3, "right")).toBe(4);
    expect(neighbour(r, 7, "right")).toBe(7);
  });
});
