// QA: pick an attached device (arrow keys or click), Verify (Enter): the
// station reads the device back, writing nothing to it, and records a verdict
// with every check. The sampling plan says how many verifications each work
// order still needs; recent verdicts can be opened again.
import { useSignalEffect } from "@preact/signals";
import type { QaVerdictView } from "../api";
import { useApp } from "../context";
import { QA_RESULT_WORDS, bigWord, canVerify, dueWords, qaCheckWords, verdictLine, verdictWord } from "../words";

/** Every check of a verdict: pass/fail, its name and what it found, in
 *  words; the failed ones (and a center that could not be reached) first,
 *  the rest in the order they ran. */
export function VerdictChecks({ v }: { v: QaVerdictView }) {
  const blocks = (c: QaVerdictView["checks"][number]) => Number(c.result === "fail" || c.result === "unreachable");
  const checks = [...v.checks].sort((a, b) => blocks(b) - blocks(a));
  return (
    <table class="qa-checks" data-testid="qa-checks">
      <tbody>
        {checks.map((c, i) => (
          <tr key={i} class={`qa-check ${c.result}`} data-testid="qa-check" data-check={c.check} data-result={c.result}>
            <td class="qa-check-result" data-testid="qa-check-result">{QA_RESULT_WORDS[c.result]}</td>
            <td>
              <div class="qa-check-name">{qaCheckWords(c)}</div>
              <div class="qa-check-detail" data-testid="qa-check-detail">{c.detail}</div>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Ports() {
  const { store, actions } = useApp();
  const ports = store.qaPorts();
  const picked = store.qaPort.value;
  const verifying = store.qaVerifying.value;
  if (!ports.length) return <div class="empty" data-testid="qa-no-ports">No device attached. Plug in the device to verify.</div>;
  return (
    <table class="records qa-ports" data-testid="qa-ports">
      <thead>
        <tr>{["slot", "device", "on the bench", "port"].map((c) => <th key={c}>{c}</th>)}</tr>
      </thead>
      <tbody>
        {ports.map((t) => (
          <tr
            key={t.port}
            class={`${t.port === picked ? "current" : ""}${canVerify(t) ? "" : " busy"}`}
            data-testid="qa-port"
            data-port={t.port}
            data-serial={t.device_serial ?? ""}
            data-picked={String(t.port === picked)}
            onClick={() => actions.selectQaPort(t.port)}
          >
            <td>{t.slot}</td>
            <td>{t.device_serial ?? "not identified yet"}</td>
            <td>{verifying === t.port ? "VERIFYING" : bigWord(t)}</td>
            <td>{t.port.split("/").pop() ?? t.port}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Plan() {
  const { store } = useApp();
  const err = store.qaDueError.value;
  if (err) return <p class="note" data-testid="qa-due-error">No sampling plan: {err}</p>;
  const due = store.qaDue.value;
  if (!due.length) return <p class="muted" data-testid="qa-due-none">No device provisioned yet: nothing is due.</p>;
  return (
    <table class="records qa-due" data-testid="qa-due">
      <thead>
        <tr>{["work order", "plan", "provisioned", "verified", "due"].map((c) => <th key={c}>{c}</th>)}</tr>
      </thead>
      <tbody>
        {due.map((d) => (
          <tr key={d.batch ?? ""} class={d.due ? "due" : "done"} data-testid="qa-due-row" data-batch={d.batch ?? ""} data-due={d.due}>
            <td>{d.batch ?? "no work order"}</td>
            <td>{d.plan}</td>
            <td>{d.provisioned}</td>
            <td>{d.verified}</td>
            <td data-testid="qa-due-count">{dueWords(d)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Recent() {
  const { store, actions } = useApp();
  const shown = store.qaVerdict.value?.id;
  const list = store.qaRecent.value;
  if (!list.length) return <p class="muted" data-testid="qa-recent-none">No verdict recorded yet.</p>;
  return (
    <table class="records qa-recent" data-testid="qa-recent">
      <thead>
        <tr>{["time", "device", "verdict", "by"].map((c) => <th key={c}>{c}</th>)}</tr>
      </thead>
      <tbody>
        {list.map((v) => (
          <tr
            key={v.id}
            class={`${v.passed ? "passed" : "failed"}${v.id === shown ? " current" : ""}`}
            data-testid="qa-recent-row"
            data-serial={v.device_serial}
            data-passed={String(v.passed)}
            onClick={() => actions.showVerdict(v)}
          >
            <td>{v.at.replace("T", " ").slice(0, 19)}</td>
            <td>{v.device_serial}</td>
            <td class="status" title={verdictLine(v)}>{v.passed ? "pass" : `FAIL: ${verdictLine(v).replace(/^failed: /, "")}`}</td>
            <td>{v.operator ?? ""}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Verdict() {
  const { store } = useApp();
  const verifying = store.qaVerifying.value;
  const err = store.qaError.value;
  const v = store.qaVerdict.value;
  if (verifying) {
    const t = store.tile(verifying);
    return (
      <div class="detail" data-testid="qa-verifying">
        <h2>Verifying {t?.device_serial ?? verifying}…</h2>
        <p class="muted">Reading the certificate back and asking the device to prove its key. Nothing is written to the device.</p>
      </div>
    );
  }
  if (err) {
    return (
      <div class="detail qa-error" data-testid="qa-error">
        <h2>No verdict</h2>
        <p class="reason">{err}</p>
        <p class="hint">Check the device's cable and power, then verify it again (Enter).</p>
      </div>
    );
  }
  if (!v) return <div class="detail empty" data-testid="qa-verdict-empty">Pick a device, then press Enter to verify it. The verdict and every check show here.</div>;
  return (
    <div class={`detail qa-verdict ${v.passed ? "passed" : "failed"}`} data-testid="qa-verdict" data-passed={String(v.passed)} data-serial={v.device_serial}>
      <h2>
        <span class={`pill big-pill ${v.passed ? "passed" : "failed"}`} data-testid="qa-verdict-word">{verdictWord(v)}</span> {v.device_serial}
      </h2>
      <p data-testid="qa-verdict-line">{verdictLine(v)}</p>
      <dl>
        <dt>certificate</dt>
        <dd>{v.cert_serial ?? "none read"}</dd>
        <dt>work order</dt>
        <dd>{v.batch ?? "none"}</dd>
        <dt>verified</dt>
        <dd>{`${v.at.replace("T", " ").slice(0, 19)} by ${v.operator ?? "-"} on ${v.port}`}</dd>
      </dl>
      <h3>Checks</h3>
      <VerdictChecks v={v} />
    </div>
  );
}

export function Qa() {
  const { store, actions } = useApp();
  // The picked port follows the devices: one that went away gives way to the first attached.
  useSignalEffect(() => {
    const ports = store.qaPorts();
    const cur = store.qaPort.value;
    if (!ports.some((t) => t.port === cur)) store.qaPort.value = ports[0]?.port ?? null;
  });
  const picked = store.qaPort.value ? store.tile(store.qaPort.value) : undefined;
  const busy = store.qaVerifying.value !== null;
  const due = store.qaDue.value.reduce((n, d) => n + d.due, 0);
  return (
    <section class="qa" data-testid="view-qa">
      <div class="toolbar">
        <button data-testid="qa-verify" disabled={busy || !picked || !canVerify(picked)} onClick={() => void actions.verifySelected()}>
          Verify {picked?.device_serial ?? ""} <kbd>Enter</kbd>
        </button>
        <span class="muted">Pick a device with ↑ ↓ (or click), then Enter. Verification writes nothing to the device.</span>
        {!store.qaDueError.value && (
          <span class="qa-due-total" data-testid="qa-due-total" data-due={due}>
            {due === 0 ? "Sampling plan: nothing due" : `Sampling plan: ${due} verification${due === 1 ? "" : "s"} due`}
          </span>
        )}
      </div>
      <div class="split">
        <div class="qa-lists">
          <h3>Devices attached</h3>
          <Ports />
          <h3>Sampling plan per work order</h3>
          <Plan />
          <h3>Recent verdicts</h3>
          <Recent />
        </div>
        <Verdict />
      </div>
    </section>
  );
}
