// History: filters (kept in the store, so a search or a visit elsewhere
// never blanks them), the records, and the selected record in full.
import type { RecordDetail } from "../api";
import { useApp } from "../context";
import type { AttemptStatus } from "../wire";
import { STATUS_WORDS, isAttemptStatus, stageWords, storedKey, storedWords, verdictLine, verdictWord } from "../words";
import { VerdictChecks } from "./Qa";

const STATUSES = Object.keys(STATUS_WORDS) as AttemptStatus[];

export function History() {
  const { store, actions } = useApp();
  const f = store.historyForm.value;
  const onEnter = (e: KeyboardEvent) => {
    if (e.key === "Enter") void actions.searchHistory();
  };
  const text = (id: string, key: "device_serial" | "cert_serial" | "batch", placeholder: string) => (
    <input id={id} data-testid={id} placeholder={placeholder} value={f[key]} onInput={(e) => actions.setHistoryForm({ [key]: e.currentTarget.value })} onKeyDown={onEnter} />
  );
  const d = store.detail.value;
  return (
    <section class="history" data-testid="view-history">
      <div class="toolbar">
        {text("f-serial", "device_serial", "device serial")}
        {text("f-cert", "cert_serial", "certificate serial")}
        {text("f-batch", "batch", "work order")}
        <select
          id="f-status"
          data-testid="f-status"
          value={f.status}
          onChange={(e) => {
            const v = e.currentTarget.value;
            actions.setHistoryForm({ status: isAttemptStatus(v) ? v : "" });
          }}
        >
          <option value="">any status</option>
          {STATUSES.map((s) => (
            <option key={s} value={s}>{STATUS_WORDS[s]}</option>
          ))}
        </select>
        <input id="f-since" data-testid="f-since" type="date" value={f.since} onInput={(e) => actions.setHistoryForm({ since: e.currentTarget.value })} />
        <button data-testid="history-search" onClick={() => void actions.searchHistory()}>Search</button>
        <span class="muted" data-testid="history-count">{store.history.value.length} record(s)</span>
      </div>
      <div class="split">
        <div class="records-wrap">
          <table class="records">
            <thead>
              <tr>{["started", "device", "status", "certificate", "work order", "by", "reason"].map((c) => <th key={c}>{c}</th>)}</tr>
            </thead>
            <tbody>
              {store.history.value.map((a) => (
                <tr
                  key={a.id}
                  class={`rec ${storedKey(a.status)}${d?.attempt.id === a.id ? " current" : ""}`}
                  data-testid="history-row"
                  data-id={a.id}
                  data-serial={a.device_serial ?? ""}
                  data-status={storedKey(a.status)}
                  onClick={() => void actions.openRecord(a.id)}
                >
                  <td>{a.started_at.replace("T", " ").slice(0, 19)}</td>
                  <td>{a.device_serial ?? "-"}</td>
                  <td class="status">{storedWords(a.status, (v) => STATUS_WORDS[v])}</td>
                  <td>{a.cert_serial ?? ""}</td>
                  <td>{a.batch ?? ""}</td>
                  <td data-testid="history-operator">{a.operator ?? ""}</td>
                  <td title={a.reason ?? ""}>{a.reason ?? ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        {d ? <Record d={d} /> : <div class="detail empty">Select a record (click, or arrows)</div>}
      </div>
    </section>
  );
}

function Record({ d }: { d: RecordDetail }) {
  const a = d.attempt;
  const c = d.certificate;
  return (
    <div class="detail" data-testid="record-detail">
      <h2>
        {a.device_serial ?? "unknown device"} <span class={`pill ${storedKey(a.status)}`} data-testid="record-status">{storedWords(a.status, (v) => STATUS_WORDS[v])}</span>
      </h2>
      <dl>
        <dt>port</dt>
        <dd>{a.port}</dd>
        <dt>device</dt>
        <dd>{`${a.model ?? ""} hw ${a.hw_rev ?? ""} fw ${a.fw_version ?? ""}`}</dd>
        <dt>work order</dt>
        <dd>{a.batch ?? "none"}</dd>
        <dt>started by</dt>
        <dd data-testid="record-operator">{a.operator ?? "unknown (before sign-in was recorded)"}</dd>
        {a.stage && (
          <>
            <dt>stage</dt>
            <dd>{storedWords(a.stage, stageWords)}</dd>
          </>
        )}
        {a.reason && (
          <>
            <dt>reason</dt>
            <dd class="reason" data-testid="record-reason">{a.reason}</dd>
          </>
        )}
        {a.hint && (
          <>
            <dt>next step</dt>
            <dd class="hint" data-testid="record-hint">{a.hint}</dd>
          </>
        )}
      </dl>
      {c && (
        <div class="cert">
          <h3>Certificate</h3>
          <dl>
            <dt>serial</dt>
            <dd data-testid="cert-serial">{c.serial_hex}</dd>
            <dt>subject</dt>
            <dd>{c.subject}</dd>
            <dt>issuer</dt>
            <dd>{c.issuer}</dd>
            <dt>valid</dt>
            <dd>{`${c.not_before} … ${c.not_after}`}</dd>
            <dt>SHA-256</dt>
            <dd class="mono">{c.fingerprint_sha256}</dd>
            {c.revoked_at && (
              <>
                <dt>revoked</dt>
                <dd data-testid="cert-revoked">{`${c.revoked_at} (${c.revocation_reason ?? "unspecified"}) by ${c.revoked_by ?? "-"}`}</dd>
              </>
            )}
          </dl>
        </div>
      )}
      <h3>QA verdicts</h3>
      {d.qa_verdicts.length === 0 ? (
        <p class="muted" data-testid="record-qa-none">Not verified by QA yet.</p>
      ) : (
        d.qa_verdicts.map((v) => (
          <details key={v.id} class={`record-qa ${v.passed ? "passed" : "failed"}`} data-testid="record-qa" data-passed={String(v.passed)} open={!v.passed}>
            <summary>
              <span class={`pill ${v.passed ? "passed" : "failed"}`}>{verdictWord(v)}</span>{" "}
              <span data-testid="record-qa-line">{`${v.at.replace("T", " ").slice(0, 19)} by ${v.operator ?? "-"}: ${verdictLine(v)}`}</span>
            </summary>
            <VerdictChecks v={v} />
          </details>
        ))
      )}
      <h3>Steps</h3>
      <table class="steps" data-testid="record-steps">
        <tbody>
          {d.steps.map((s, i) => (
            <tr key={i} class={s.kind}>
              <td>{s.at.slice(11, 23)}</td>
              <td>{storedWords(s.stage, stageWords)}</td>
              <td>{s.kind}</td>
              <td>{s.detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
