// Boot: one store, the real backend, events into the store, <App/> on screen.
import "./style.css";
import { effect } from "@preact/signals";
import { render } from "preact";
import { getCurrentWindow } from "@tauri-apps/api/window";
import { createActions } from "./actions";
import { api, errorText, onBench, onStation, onSync } from "./api";
import { App } from "./App";
import { createStore } from "./store";

const store = createStore();
const actions = createActions(store, api);
const root = document.getElementById("app");

effect(() => {
  const i = store.info.value;
  if (!i) return;
  const demo = i.session.operator?.kind === "demo";
  const title = `Imprint${i.development ? " - DEVELOPMENT CA" : ""}${demo ? " - DEMO ADMIN" : ""} - ${i.station_id}`;
  document.title = title;
  getCurrentWindow().setTitle(title).catch(() => undefined);
});

async function boot() {
  // Tile changes are pushed by the backend (never polled) and go straight into the store.
  await onBench((ev) => store.applyBenchEvent(ev));
  // The station opens in the background and says so with a `station` event.
  await onStation(() => void actions.onStationEvent());
  // The center's state (backlog, reachability) is pushed when it changes.
  await onSync((s) => void actions.onSyncEvent(s));
  await actions.refreshInfo();
  await actions.refreshTiles();
  await actions.refreshSync();
  if (root) render(<App store={store} actions={actions} />, root);
  document.body.dataset.ready = "true";
}

boot().catch((e) => {
  if (root) root.textContent = `Imprint UI failed to start: ${errorText(e)}`;
});
