// Reports (supervisor): the filters every report shares, the summary a
// supervisor reads first, the failure Pareto and the yield per hour as bar
// charts, the attempts, and CSV/PDF saved through the native save dialog.
// Everything shown comes from the backend's one report (`report` command).
import { useApp } from "../context";
import type { AttemptStatus } from "../wire";
import { STATUS_WORDS, isAttemptStatus } from "../words";

const STATUSES = Object.keys(STATUS_WORDS) as AttemptStatus[];

type Bar = { label: string; value: number; shown: string };

/** A bar chart as SVG: bars scaled to `max`, values above, labels below. */
function BarChart(props: { title: string; bars: Bar[]; max: number; testid: string }) {
  const { bars, max } = props;
  const w = 640;
  const h = 160;
  const slot = bars.length ? (w - 40) / bars.length : w;
  const bw = Math.min(48, slot * 0.6);
  return (
    <figure class="chart" data-testid={props.testid}>
      <figcaption>{props.title}</figcaption>
      <svg width={w} height={h + 30} viewBox={`0 0 ${w} ${h + 30}`} role="img" aria-label={props.title}>
        <line x1="30" y1={h} x2={w} y2={h} stroke="currentColor" />
        <line x1="30" y1="10" x2="30" y2={h} stroke="currentColor" />
        {bars.map((b, i) => {
          const bh = max > 0 ? Math.max(1, (b.value / max) * (h - 20)) : 1;
          const x = 30 + slot * i + (slot - bw) / 2;
          return (
            <g key={b.label} data-testid="chart-bar" data-label={b.label} data-value={b.value}>
              <rect x={x} y={h - bh} width={bw} height={bh} fill="#336bb2" />
              <text x={x} y={h - bh - 3} font-size="10" fill="currentColor">{b.shown}</text>
              <text x={30 + slot * i + 2} y={h + 14} font-size="9" fill="currentColor">{b.label.length > 18 ? `${b.label.slice(0, 17)}…` : b.label}</text>
            </g>
          );
        })}
      </svg>
    </figure>
  );
}

export function Reports() {
  const { store, actions } = useApp();
  const f = store.reportForm.value;
  const r = store.report.value;
  const onEnter = (e: KeyboardEvent) => {
    if (e.key === "Enter") void actions.runReport();
  };
  const text = (key: "batch" | "station" | "operator" | "code", placeholder: string) => (
    <input data-testid={`r-${key}`} placeholder={placeholder} value={f[key]} onInput={(e) => actions.setReportForm({ [key]: e.currentTarget.value })} onKeyDown={onEnter} />
  );
  const s = r?.summary;
  const pct = (v: number | null | undefined) => (v === null || v === undefined ? "-" : `${v.toFixed(1)}%`);
  return (
    <section class="reports" data-testid="view-reports">
      <div class="toolbar">
        <label>from <input data-testid="r-since" type="date" value={f.since} onInput={(e) => actions.setReportForm({ since: e.currentTarget.value })} /></label>
        <label>to <input data-testid="r-until" type="date" value={f.until} onInput={(e) => actions.setReportForm({ until: e.currentTarget.value })} /></label>
        {text("batch", "work order")}
        {text("station", "station")}
        {text("operator", "operator")}
        <select
          data-testid="r-status"
          value={f.status}
          onChange={(e) => {
            const v = e.currentTarget.value;
            actions.setReportForm({ status: isAttemptStatus(v) ? v : "" });
          }}
        >
          <option value="">any status</option>
          {STATUSES.map((st) => (
            <option key={st} value={st}>{STATUS_WORDS[st]}</option>
          ))}
        </select>
        <select
          data-testid="r-qa"
          value={f.qa_verdict}
          onChange={(e) => {
            const v = e.currentTarget.value;
            actions.setReportForm({ qa_verdict: v === "pass" || v === "fail" || v === "none" ? v : "" });
          }}
        >
          <option value="">any QA verdict</option>
          <option value="pass">QA passed</option>
          <option value="fail">QA failed</option>
          <option value="none">not verified</option>
        </select>
        {text("code", "failure code")}
        {store.sync.value?.configured && (
          <label>
            <input type="checkbox" data-testid="r-central" checked={f.central} onChange={(e) => actions.setReportForm({ central: e.currentTarget.checked })} /> all stations (central)
          </label>
        )}
        <button data-testid="report-run" onClick={() => void actions.runReport()}>Run report</button>
        <button data-testid="report-csv" onClick={() => void actions.exportReport("csv")}>Save CSV…</button>
        <button data-testid="report-pdf" onClick={() => void actions.exportReport("pdf")}>Save PDF…</button>
      </div>
      {r && s && (
        <div class="report-body">
          <p class="muted" data-testid="report-header">
            {r.source} · {r.filter_words} · {r.generated_at}
          </p>
          {s.overproduction.length > 0 && (
            <div class="overproduction" role="alert" data-testid="report-overproduction">
              <strong>OVERPRODUCTION</strong>: more certificates than the work order's quantity
              <ul>
                {s.overproduction.map((o) => (
                  <li key={o.work_order} data-testid="overproduced-order" data-id={o.work_order}>
                    {o.work_order}: {o.certificates} certificates for a quantity of {o.quantity} ({o.certificates - o.quantity} too many)
                  </li>
                ))}
              </ul>
            </div>
          )}
          <table class="summary" data-testid="report-summary">
            <thead>
              <tr>{["attempts", "devices", "passed", "failed", "first-pass yield", "final yield", "revoked", "superseded", "dev CA"].map((c) => <th key={c}>{c}</th>)}</tr>
            </thead>
            <tbody>
              <tr>
                <td data-testid="sum-attempts">{s.attempts}</td>
                <td data-testid="sum-devices">{s.devices}</td>
                <td data-testid="sum-passed">{s.passed}</td>
                <td data-testid="sum-failed">{s.failed}</td>
                <td data-testid="sum-fpy">{pct(s.first_pass_yield)}</td>
                <td data-testid="sum-yield">{pct(s.final_yield)}</td>
                <td>{s.revoked}</td>
                <td>{s.superseded}</td>
                <td>{s.dev_ca}</td>
              </tr>
            </tbody>
          </table>
          <div class="charts">
            <BarChart
              title="Failures by stage and code (Pareto)"
              testid="chart-pareto"
              max={Math.max(1, ...s.pareto.map((p) => p.count))}
              bars={s.pareto.slice(0, 10).map((p) => ({ label: `${p.stage}/${p.code}`, value: p.count, shown: String(p.count) }))}
            />
            <BarChart
              title="Yield per hour (UTC)"
              testid="chart-yield"
              max={100}
              bars={s.per_hour.slice(-24).map((t) => {
                const y = t.attempts ? (t.passed * 100) / t.attempts : 0;
                return { label: t.key.slice(5).replace("T", " ") + "h", value: y, shown: `${y.toFixed(0)}%` };
              })}
            />
          </div>
          <table class="qa-coverage" data-testid="report-qa">
            <thead>
              <tr>{["work order", "provisioned", "QA verified", "required", "coverage"].map((c) => <th key={c}>{c}</th>)}</tr>
            </thead>
            <tbody>
              {s.qa.map((q) => (
                <tr key={q.batch ?? ""}>
                  <td>{q.batch ?? "(none)"}</td>
                  <td>{q.provisioned}</td>
                  <td>{q.verified}</td>
                  <td>{q.required ?? "-"}</td>
                  <td class={q.met === false ? "warn" : ""}>{q.met === null ? q.plan : q.met ? "met" : "NOT MET"}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <p class="muted" data-testid="report-count">
            showing {r.rows.length} of {r.total} attempt(s)
          </p>
          <div class="records-wrap">
            <table class="records" data-testid="report-rows">
              <thead>
                <tr>{["started", "device", "status", "stage", "code", "work order", "operator", "QA", "certificate"].map((c) => <th key={c}>{c}</th>)}</tr>
              </thead>
              <tbody>
                {r.rows.map((row) => (
                  <tr key={String(row.attempt_id)} data-testid="report-row" class={`rec ${String(row.status)}`}>
                    {["started_at", "device_serial", "status", "stage", "code", "batch", "operator", "qa_verdict", "cert_serial"].map((k) => (
                      <td key={k}>{row[k] === null || row[k] === undefined ? "-" : String(row[k])}</td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </div>
      )}
    </section>
  );
}
