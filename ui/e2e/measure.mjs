// Measures the desktop app: time from launch to an interactive Bench view
// (UI ready and N simulated tiles shown), and memory as PSS of the app and
// its WebKit processes. Prints one JSON line; run through scripts/measure-app.
import { readFileSync, readdirSync } from "node:fs";
import { Driver, stationEnv } from "./webdriver.mjs";

const APP = process.env.IMPRINT_APP;
const RUNS = Number(process.env.RUNS ?? 3);

function pssKb(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").match(/^Pss:\s+(\d+) kB/m);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * This run's app process and its descendants (WebKit's web and network processes). The app is
 * found among the processes started with this station's own HOME (`Driver.ours`), never as the
 * newest `imprint-app` on the machine, which may be another session's or test's.
 */
function procs(ours) {
  const all = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const exe = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0")[0].split("/").pop();
      all.push({ pid: Number(d), ppid: Number(rest[1]), state: rest[0], start: Number(rest[19]), exe });
    } catch { /* gone */ }
  }
  const apps = all.filter((p) => p.exe === "imprint-app" && p.state !== "Z" && ours.has(p.pid)).sort((a, b) => b.start - a.start);
  if (!apps.length) return [];
  const out = [apps[0]];
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of all) if (p.state !== "Z" && !out.includes(p) && out.some((o) => o.pid === p.ppid)) { out.push(p); grew = true; }
  }
  return out;
}

const results = [];
for (let i = 0; i < RUNS; i++) {
  const st = stationEnv();
  const d = new Driver();
  await d.start(st.env);
  const t0 = performance.now();
  await d.session(APP, ["--simulate", "4", "--mode", "manual"]);
  await d.waitFor(async () => (await d.tiles()).length === 4 && (await d.exec("return document.body.dataset.ready === 'true'")), "interactive bench", 30000);
  const ms = performance.now() - t0;
  const ps = procs(new Set(d.ours()));
  const pss = ps.reduce((a, p) => a + pssKb(p.pid), 0);
  results.push({ startup_ms: Math.round(ms), pss_mb: +(pss / 1024).toFixed(1), processes: ps.map((p) => p.exe) });
  await d.stop();
}
const med = (k) => results.map((r) => r[k]).sort((a, b) => a - b)[Math.floor(results.length / 2)];
console.log(JSON.stringify({ runs: results, median_startup_ms: med("startup_ms"), median_pss_mb: med("pss_mb") }));
