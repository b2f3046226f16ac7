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
import { Reports } from "./views/Reports";
import { Operators, SecretDialog } from "./views/Operators";
import { Qa } from "./views/Qa";
import { Settings } from "./views/Settings";
import { WorkOrders } from "./views/WorkOrders";
import { FirstRun, SignIn } from "./views/SignIn";

function Body({ store }: { store: Store }) {
  const info = store.info.value;
  const view = store.view.value;
  // Nobody signed in: the first-run screen (no operator yet) or the sign-in screen, before anything else.
  if (info && !store.operator.value) return info.session.needs_first_admin ? <FirstRun /> : <SignIn />;
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
        <p>{store.can("settings") ? "Fix it in Settings (F4), then save." : "Ask an admin to fix it in Settings."}</p>
      </section>
    );
  }
  switch (view) {
    case "bench": return <Bench />;
    case "qa": return <Qa />;
    case "history": return <History />;
    case "reports": return <Reports />;
    case "work_orders": return <WorkOrders />;
    case "health": return <Health />;
    case "settings": return <Settings />;
    case "operators": return <Operators />;
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
      <SecretDialog />
      {info?.needs_pin && !store.pinDismissed.value && store.operator.value && <PinDialog />}
    </Ctx.Provider>
  );
}
