// Settings edit a draft in the store: toasts, bench events and visits to other
// views leave unsaved edits alone. Save sends the draft; Discard reloads it.
import type { ComponentChildren } from "preact";
import type { SettingsDto } from "../api";
import { useApp } from "../context";
import type { KeyAlg, Mode } from "../wire";
import { NO_CENTRAL } from "../actions";
import { KEY_ALG_WORDS, MODE_WORDS, SSL_MODES, SSL_MODE_WORDS, isKeyAlg, isMode, isSslMode } from "../words";

const MODES = Object.keys(MODE_WORDS) as Mode[];
const KEY_ALGS = Object.keys(KEY_ALG_WORDS) as KeyAlg[];

function Row({ label, note, children }: { label: string; note?: string; children: ComponentChildren }) {
  return (
    <label class="row">
      <span>{label}</span>
      {children}
      {note && <small>{note}</small>}
    </label>
  );
}

export function Settings() {
  const { store, actions } = useApp();
  const s = store.settingsDraft.value;
  if (!s) return <section data-testid="view-settings">loading…</section>;
  const edit = (patch: Partial<SettingsDto>) => actions.editSettings(patch);
  const text = (id: string, value: string, onValue: (v: string) => void, type = "text") => (
    <input id={id} data-testid={id} type={type} value={value} onInput={(e) => onValue(e.currentTarget.value)} />
  );
  const dirty = store.settingsDirty.value;
  const c = s.central ?? NO_CENTRAL;
  const central = (patch: Parameters<typeof actions.editCentral>[0]) => actions.editCentral(patch);
  return (
    <section class="settings" data-testid="view-settings">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void actions.saveSettings();
        }}
      >
        <h3>Signer</h3>
        <Row label="Signer URI" note="pkcs11:… (RFC 7512) or empty for the development CA. PINs are never stored: you are asked for them.">
          {text("s-signer", s.signer, (v) => edit({ signer: v }))}
        </Row>
        <h3>Ports</h3>
        <Row label="Baud rate">{text("s-baud", String(s.baud), (v) => edit({ baud: Number(v) }), "number")}</Row>
        <Row label="Port globs" note="e.g. /dev/serial/by-id/*">
          {text("s-globs", s.port_globs.join(", "), (v) => edit({ port_globs: v.split(",").map((g) => g.trim()).filter(Boolean) }))}
        </Row>
        <Row label="System serial ports">
          <input id="s-system" data-testid="s-system" type="checkbox" checked={s.system_ports} onChange={(e) => edit({ system_ports: e.currentTarget.checked })} />
        </Row>
        <h3>Station</h3>
        <Row label="Mode">
          <select id="s-mode" data-testid="s-mode" value={s.mode} onChange={(e) => { const v = e.currentTarget.value; if (isMode(v)) edit({ mode: v }); }}>
            {MODES.map((m) => <option key={m} value={m}>{MODE_WORDS[m]}</option>)}
          </select>
        </Row>
        <Row label="Station id">{text("s-station", s.station_id, (v) => edit({ station_id: v }))}</Row>
        <h3>Certificate profile</h3>
        <Row label="Validity (days)">{text("s-validity", String(s.validity_days), (v) => edit({ validity_days: Number(v) }), "number")}</Row>
        <Row label="Organization">{text("s-org", s.organization ?? "", (v) => edit({ organization: v || null }))}</Row>
        <Row label="Device key">
          <select id="s-key" data-testid="s-key" value={s.device_key} onChange={(e) => { const v = e.currentTarget.value; if (isKeyAlg(v)) edit({ device_key: v }); }}>
            {KEY_ALGS.map((k) => <option key={k} value={k}>{KEY_ALG_WORDS[k]}</option>)}
          </select>
        </Row>
        <Row label="Lock device after pass">
          <input id="s-lock" data-testid="s-lock" type="checkbox" checked={s.lock_device} onChange={(e) => edit({ lock_device: e.currentTarget.checked })} />
        </Row>
        <h3>Central database</h3>
        <Row label="URL" note="postgres://role@host:5432/database, without a password. Empty: no central database (records stay on this station).">
          {text("s-central-url", c.url, (v) => central({ url: v }))}
        </Row>
        <Row label="TLS mode" note="Empty: the URL's own sslmode, else verify-full.">
          <select id="s-central-sslmode" data-testid="s-central-sslmode" value={c.sslmode ?? ""} onChange={(e) => { const v = e.currentTarget.value; central({ sslmode: isSslMode(v) ? v : null }); }}>
            <option value="">(default)</option>
            {SSL_MODES.map((m) => <option key={m} value={m}>{SSL_MODE_WORDS[m]}</option>)}
          </select>
        </Row>
        <Row label="CA certificate file" note="PEM file with the CA that signed the database server's certificate.">
          {text("s-central-ca", c.sslrootcert ?? "", (v) => central({ sslrootcert: v || null }))}
        </Row>
        <Row label="Password file" note="The path of a file holding the password, never the password itself (the file should be readable by this station only).">
          {text("s-central-password-file", c.password_file ?? "", (v) => central({ password_file: v || null }))}
        </Row>
        <div class="actions">
          <button type="submit" data-testid="s-save" disabled={!dirty}>Save</button>
          <button type="button" data-testid="s-discard" disabled={!dirty} onClick={() => actions.discardSettings()}>Discard changes</button>
          {dirty && <span class="unsaved" data-testid="s-unsaved">Unsaved changes</span>}
          <button type="button" data-testid="open-logs" onClick={() => void actions.openLogFolder()}>Open log folder</button>
        </div>
        <p class="note">Config file: {s.config_path}</p>
      </form>
    </section>
  );
}
