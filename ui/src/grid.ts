// Bench grid geometry. The column count is chosen from the tile count and the
// space the grid has; keyboard navigation never recomputes it: it reads the
// tiles' real rendered positions, so Down always selects the tile below.

/** Ideal tile shape (width / height) and the gap between tiles, px. */
export const TILE_ASPECT = 1.5;
export const GAP = 8;

/** Columns that give the largest tiles of shape TILE_ASPECT for `n` tiles in `width` x `height`. */
export function columnsFor(n: number, width: number, height: number): number {
  if (n <= 1) return 1;
  if (width <= 0 || height <= 0) return Math.min(n, 4);
  let best = 1;
  let bestScale = -1;
  for (let c = 1; c <= n; c++) {
    const rows = Math.ceil(n / c);
    const w = (width - GAP * (c - 1)) / c;
    const h = (height - GAP * (rows - 1)) / rows;
    const scale = Math.min(w / TILE_ASPECT, h);
    // Strictly better only: on a tie the fewer, wider columns win.
    if (scale > bestScale + 0.5) {
      best = c;
      bestScale = scale;
    }
  }
  return best;
}

export type Rect = { left: number; top: number; width: number; height: number };
export type Direction = "up" | "down" | "left" | "right";

/**
 * The tile to select from `from` in `dir`, from the rendered rects (in tile
 * order). Left/Right step through the order; Up/Down go to the nearest row
 * above/below and pick the tile whose centre is closest horizontally.
 * Returns `from` when there is nothing in that direction.
 */
export function neighbour(rects: Rect[], from: number, dir: Direction): number {
  const n = rects.length;
  if (n === 0) return -1;
  if (from < 0 || from >= n) return 0;
  switch (dir) {
    case "left": return Math.max(0, from - 1);
    case "right": return Math.min(n - 1, from + 1);
    case "up":
    case "down": {
      const cur = rects[from];
      const cx = cur.left + cur.width / 2;
      const cy = cur.top + cur.height / 2;
      const sign = dir === "down" ? 1 : -1;
      // Rows are told apart by their centre line; half a tile of slack.
      const candidates = rects
        .map((r, i) => ({ i, dy: (r.top + r.height / 2 - cy) * sign, dx: Math.abs(r.left + r.width / 2 - cx) }))
        .filter((c) => c.dy > cur.height / 2);
      if (!candidates.length) return from;
      const rowDy = Math.min(...candidates.map((c) => c.dy));
      const row = candidates.filter((c) => c.dy - rowDy < cur.height / 2);
      row.sort((a, b) => a.dx - b.dx || a.i - b.i);
      return row[0].i;
    }
  }
}
