// Measures the desktop app: time from launch to an interactive Bench view
// (UI ready and TILES simulated tiles shown, 16 by default: a full fixture),
// and memory as PSS of the app and its WebKit processes, per process and per
// kind (anonymous, file-backed, shared memory). Prints one JSON line per
// launch and a summary line (min / median / max, load average before and
// after); run through scripts/measure-app. Environment:
//   RUNS=10       launches (each a fresh station: own HOME, store, CA)
//   TILES=16      simulated devices (ports) on the Bench
//   SETTLE_MS=0   wait this long after the Bench is interactive before reading memory
//   TOP=0         also list each process's N largest mappings by PSS (smaps)
import { readFileSync, readdirSync } from "node:fs";
import { loadavg } from "node:os";
import { Driver, stationEnv } from "./webdriver.mjs";

const APP = process.env.IMPRINT_APP;
const RUNS = Number(process.env.RUNS ?? 10);
const TILES = Number(process.env.TILES ?? 16);
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 0);
const TOP = Number(process.env.TOP ?? 0);

/** One process's PSS by kind (kB), from smaps_rollup. */
function rollup(pid) {
  const out = { pss: 0, anon: 0, file: 0, shmem: 0, rss: 0 };
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const kb = (k) => Number((text.match(new RegExp(`^${k}:\\s+(\\d+) kB`, "m")) ?? [0, 0])[1]);
    Object.assign(out, { pss: kb("Pss"), anon: kb("Pss_Anon"), file: kb("Pss_File"), shmem: kb("Pss_Shmem"), rss: kb("Rss") });
  } catch { /* gone */ }
  return out;
}

/** A process's largest mappings by PSS (kB), grouped by name ([heap], a library, anonymous). */
function topMappings(pid, n) {
  const by = new Map();
  try {
    let name = "";
    for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
      const head = line.match(/^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/);
      if (head) { name = head[1] || "[anon]"; continue; }
      const m = line.match(/^Pss:\s+(\d+) kB/);
      if (m) by.set(name, (by.get(name) ?? 0) + Number(m[1]));
    }
  } catch { /* gone */ }
  return [...by.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, kb]) => ({ name: name.split("/").pop(), mb: +(kb / 1024).toFixed(1) }));
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

const mb = (kb) => +(kb / 1024).toFixed(1);
const load = () => loadavg().map((l) => +l.toFixed(2));
const loadBefore = load();
const results = [];
for (let i = 0; i < RUNS; i++) {
  const st = stationEnv();
  const d = new Driver();
  try {
    await d.start(st.env);
    const t0 = performance.now();
    await d.session(APP, ["--simulate", String(TILES), "--mode", "manual"]);
    await d.waitFor(async () => (await d.tiles()).length === TILES && (await d.exec("return document.body.dataset.ready === 'true'")), "interactive bench", 60000);
    const ms = performance.now() - t0;
    if (SETTLE_MS) await new Promise((r) => setTimeout(r, SETTLE_MS));
    const ps = procs(new Set(d.ours()));
    const per = ps.map((p) => {
      const r = rollup(p.pid);
      const row = { exe: p.exe, pss_mb: mb(r.pss), anon_mb: mb(r.anon), file_mb: mb(r.file), shmem_mb: mb(r.shmem), rss_mb: mb(r.rss) };
      if (TOP) row.top = topMappings(p.pid, TOP);
      return row;
    });
    const pss = per.reduce((a, p) => a + p.pss_mb, 0);
    const run = { run: i + 1, startup_ms: Math.round(ms), pss_mb: +pss.toFixed(1), load1: load()[0], processes: per };
    results.push(run);
    console.log(JSON.stringify(run));
  } finally {
    await d.stop();
  }
}
const stats = (k) => {
  const v = results.map((r) => r[k]).sort((a, b) => a - b);
  const mid = v.length / 2;
  const median = v.length % 2 ? v[Math.floor(mid)] : +((v[mid - 1] + v[mid]) / 2).toFixed(1);
  return { min: v[0], median, max: v[v.length - 1] };
};
console.log(JSON.stringify({ runs: results.length, tiles: TILES, settle_ms: SETTLE_MS, startup_ms: stats("startup_ms"), pss_mb: stats("pss_mb"), loadavg_before: loadBefore, loadavg_after: load() }));
