// The wall's columns: when every tile fits in the window at once and still at least MIN_TILE_PX
// wide, the column count that makes them largest; otherwise (many cameras, a phone) the CSS
// grid's own auto-fit columns, and the page scrolls.

const MIN_TILE_PX = 320;

export function fitColumns({ count, width, height, aspect, gap }) {
  let best = null;
  for (let columns = 1; columns <= count; columns += 1) {
    const rows = Math.ceil(count / columns);
    const byWidth = (width - gap * (columns - 1)) / columns;
    const byHeight = ((height - gap * (rows - 1)) / rows) * aspect;
    const tileWidth = Math.floor(Math.min(byWidth, byHeight));
    if (!best || tileWidth > best.tileWidth) best = { columns, tileWidth };
  }
  return best && best.tileWidth >= MIN_TILE_PX ? best : null;
}

export class WallLayout {
  // The fit is set on `root` (class "fit", --columns, --tile-width) so the heading can follow it.
  constructor(root, grid, bottomMarginPx = 24) {
    this.root = root;
    this.grid = grid;
    this.bottomMarginPx = bottomMarginPx;
    this.applied = "";
    window.addEventListener("resize", () => this.update());
  }

  // aspects: each tile's width / height; the tallest one bounds the rows.
  update(aspects = this.aspects || []) {
    this.aspects = aspects;
    const style = getComputedStyle(this.grid);
    const gap = parseFloat(style.columnGap) || 0;
    const top = this.grid.getBoundingClientRect().top + window.scrollY;
    const fit = aspects.length ? fitColumns({
      count: aspects.length,
      width: this.grid.clientWidth,
      height: document.documentElement.clientHeight - top - this.bottomMarginPx,
      aspect: Math.min(...aspects),
      gap,
    }) : null;
    const key = fit ? `${fit.columns}x${fit.tileWidth}` : "";
    if (key === this.applied) return;
    this.applied = key;
    this.root.classList.toggle("fit", Boolean(fit));
    if (fit) {
      this.root.style.setProperty("--columns", String(fit.columns));
      this.root.style.setProperty("--tile-width", `${fit.tileWidth}px`);
    }
  }
}
