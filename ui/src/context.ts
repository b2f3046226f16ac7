import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Actions } from "./actions";
import type { Store } from "./store";

export type AppCtx = { store: Store; actions: Actions };
export const Ctx = createContext<AppCtx | null>(null);

export function useApp(): AppCtx {
  const c = useContext(Ctx);
  // Invariant: every view is rendered inside <Ctx.Provider> by <App>.
  if (!c) throw new Error("view rendered outside <App>");
  return c;
}

/** An element the operator types into (focus stays there; the scan field does not take it). */
export function isEditable(el: Element | null): boolean {
  if (!el) return false;
  if (el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement) return true;
  if (el instanceof HTMLInputElement) return !["button", "submit", "checkbox", "radio", "reset"].includes(el.type);
  return (el as HTMLElement).isContentEditable === true;
}
