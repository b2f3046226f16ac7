import { useEffect } from "preact/hooks";
import type { Actions } from "./actions";
import { Ctx } from "./context";
import { createKeyHandler } from "./keys";
import type { Store } from "./store";
import { Bench } from "./views/Bench";
import { ConfirmDialog, PinDialog, Toast } from "./views/Dialogs";
import { Header } from "./views/Header";
import { Health } from "./views/Health";
import { History } from "./views/History";
import { Settings } from "./views/Settings";

function Body({ store }: { store: Store }) {
  const info = store.info.value;
  const view = store.view.value;
  if (info && !info.ready && !info.needs_pin && !info.startup_error && view !== "settings") {
    // The station opens in the background and says so with a `station` event.
    return (
      <section class="opening" data-testid="station-opening">
        <h2>Opening the station…</h2>
      </section>
    );
  }
  if (info && !info.ready && !info.needs_pin && view !== "settings") {
    return (
      <section class="startup-error" data-testid="startup-error">
        <h2>The station could not start</h2>
        <p>{info.startup_error?.message ?? "unknown error"}</p>
        <p>Fix it in Settings (F4), then save.</p>
      </section>
    );
  }
  switch (view) {
    case "bench": return <Bench />;
    case "history": return <History />;
    case "health": return <Health />;
    case "settings": return <Settings />;
  }
}

export function App({ store, actions }: { store: Store; actions: Actions }) {
  useEffect(() => {
    const onKey = createKeyHandler(store, actions);
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [store, actions]);
  const info = store.info.value;
  return (
    <Ctx.Provider value={{ store, actions }}>
      <Header />
      <Body store={store} />
      <Toast />
      <ConfirmDialog />
      {info?.needs_pin && !store.pinDismissed.value && <PinDialog />}
    </Ctx.Provider>
  );
}
