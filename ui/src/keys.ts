// Keyboard first: F1-F4, F8, F11 and F12 switch views (each only for a role that
// may see it), F5 provisions every waiting device, F6 retries the selected
// tile (only a retryable failure), F7 toggles automatic/manual (asking first),
// F9 signs out, arrows move the selection on the grid as it is rendered, Enter
// in an empty scan field provisions the selection. In QA (F11; not F10, which
// GTK gives to the window's menu bar) up/down pick a device and Enter
// verifies it. In Work Orders (F12) up/down pick a work order (its fields
// fill the form) and Enter in the form asks to create or save.
import type { Actions } from "./actions";
import { isEditable } from "./context";
import { neighbour, type Direction, type Rect } from "./grid";
import type { Store, View } from "./store";

const VIEW_KEYS: Record<string, View> = { F1: "bench", F2: "history", F3: "health", F4: "settings", F8: "operators", F11: "qa", F12: "work_orders" };
const ARROWS: Record<string, Direction> = { ArrowUp: "up", ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right" };

/** The tiles as rendered, in slot order, with their on-screen rectangles. */
export function renderedTiles(root: ParentNode = document): { port: string; rect: Rect }[] {
  return [...root.querySelectorAll<HTMLElement>("[data-testid=tile]")].map((el) => {
    const r = el.getBoundingClientRect();
    return { port: el.dataset.port ?? "", rect: { left: r.left, top: r.top, width: r.width, height: r.height } };
  });
}

export function moveOnGrid(store: Store, dir: Direction, root: ParentNode = document) {
  const tiles = renderedTiles(root);
  if (!tiles.length) return;
  const from = tiles.findIndex((t) => t.port === store.selected.value);
  const to = from < 0 ? 0 : neighbour(tiles.map((t) => t.rect), from, dir);
  store.selected.value = tiles[to].port;
}

export function createKeyHandler(store: Store, actions: Actions) {
  return (e: KeyboardEvent) => {
    // A dialog owns the keyboard until it is answered.
    if (store.confirm.value || document.querySelector("[data-modal]")) return;
    // Nobody signed in: the sign-in screen owns the keyboard.
    if (!store.operator.value) return;
    if (e.key === "F9") {
      e.preventDefault();
      // The demo admin cannot sign out (the development CA signs it in again).
      if (store.operator.value.kind !== "demo") void actions.signOut();
      return;
    }
    const view = VIEW_KEYS[e.key];
    if (view) {
      e.preventDefault();
      void actions.go(view);
      return;
    }
    switch (e.key) {
      // Provisioning keys only for a role that may provision (the backend refuses it regardless).
      case "F5":
        e.preventDefault();
        if (store.can("provision")) void actions.provisionAll();
        return;
      case "F6":
        e.preventDefault();
        if (store.can("provision")) void actions.retrySelected();
        return;
      case "F7":
        e.preventDefault();
        if (store.can("provision")) actions.toggleMode();
        return;
    }
    const target = e.target instanceof Element ? e.target : null;
    if (store.view.value === "qa") {
      // A focused button or field handles its own keys (Enter on the Verify button clicks it once).
      if (isEditable(target) || target instanceof HTMLButtonElement) return;
      if (e.key === "Enter") {
        e.preventDefault();
        void actions.verifySelected();
      } else if (e.key === "ArrowUp" || e.key === "ArrowDown") {
        e.preventDefault();
        actions.moveQaPort(e.key === "ArrowDown" ? 1 : -1);
      }
      return;
    }
    if (store.view.value === "work_orders") {
      if (isEditable(target) || target instanceof HTMLButtonElement) return;
      if (e.key === "ArrowUp" || e.key === "ArrowDown") {
        e.preventDefault();
        actions.moveWorkOrder(e.key === "ArrowDown" ? 1 : -1);
      }
      return;
    }
    const dir = ARROWS[e.key];
    if (!dir) return;
    if (store.view.value === "bench") {
      // Arrows belong to a field being typed in; the empty scan field lends them to the grid.
      const scanEmpty = target instanceof HTMLInputElement && target.id === "scan" && target.value === "";
      if (scanEmpty || !isEditable(target)) {
        e.preventDefault();
        moveOnGrid(store, dir);
      }
      return;
    }
    if (store.view.value === "history" && (dir === "up" || dir === "down") && !(target instanceof HTMLSelectElement)) {
      const list = store.history.value;
      if (!list.length) return;
      const i = list.findIndex((a) => a.id === store.detail.value?.attempt.id);
      const next = list[Math.max(0, Math.min(list.length - 1, i + (dir === "down" ? 1 : -1)))];
      e.preventDefault();
      void actions.openRecord(next.id);
    }
  };
}
