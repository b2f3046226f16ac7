// The Reports view end to end (issue 14): a supervisor filters by work
// order, sees the summary and the failure chart, and saves CSV and PDF
// through the native save dialog (GTK's file chooser, driven by xdotool
// as a person's keyboard would: WebDriver cannot reach a native dialog);
// the files are then read as a user would: the CSV parsed, the PDF
// rendered with pdftoppm and its text read with pdftotext.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { withApp } from "./webdriver.mjs";

const APP = process.env.IMPRINT_APP;
const CLI = process.env.IMPRINT_CLI;
const WO = "WO-REP-1";

/** The X display the app draws on (xvfb-run's, inherited). */
const xdo = (...args) => execFileSync("xdotool", args, { stdio: ["ignore", "pipe", "pipe"] }).toString().trim();

/** Wait for GTK's save dialog, type `path` into its name field and press Enter. */
async function saveThroughDialog(d, path) {
  const win = await d.waitFor(() => {
    try {
      return xdo("search", "--onlyvisible", "--name", "^Save").split("\n").filter(Boolean).pop() || null;
    } catch {
      return null; // xdotool exits 1 while no window matches
    }
  }, "GTK's save dialog", 20000);
  xdo("windowfocus", "--sync", win);
  // The name field has the focus and holds the suggested name: replace it with a whole path.
  xdo("key", "--clearmodifiers", "ctrl+a");
  xdo("type", "--delay", "5", path);
  xdo("key", "Return");
  await d.waitFor(() => (existsSync(path) && statSync(path).size > 0) || null, `the file ${path}`, 20000);
  await d.waitFor(() => {
    try {
      return !xdo("search", "--onlyvisible", "--name", "^Save") || null;
    } catch {
      return true;
    }
  }, "the save dialog to close", 10000);
}

test("a supervisor filters the report by work order, sees the summary and chart, and saves CSV and PDF through the save dialog", async () => {
  const out = mkdtempSync(join(tmpdir(), "imprint-e2e-report-"));
  const prepare = (st) => {
    // Exit 0 (every device passed) or 1 (one failed, as intended); anything else fails the test.
    const run = (args) => {
      const r = spawnSync(CLI, args, { env: st.env, stdio: ["ignore", "pipe", "pipe"] });
      assert.ok(r.status === 0 || r.status === 1, `imprint ${args.join(" ")}: exit ${r.status}\n${r.stderr}`);
    };
    run(["work-orders", "add", WO, "--product", "sensor", "--quantity", "10"]);
    // Three devices under the work order, the third with a weak key (one failure for the chart).
    run(["station", "--simulate", "3", "--fault", "3:weak-key", "--batch", WO, "--max", "3", "--json"]);
    // One attempt outside it (the same simulated serial again: refused as already provisioned).
    run(["station", "--simulate", "1", "--max", "1", "--json"]);
  };
  await withApp(APP, [], async (d, st) => {
    await d.click(await d.one(d.byId("nav-reports")));
    await d.one(d.byId("view-reports"));
    // Unfiltered: the work order's 3 attempts and the one outside it.
    await d.waitFor(async () => ((await d.text(await d.one(d.byId("sum-attempts")))).trim() === "4") || null, "4 attempts in all");
    await d.type(await d.one(d.byId("r-batch")), WO);
    await d.click(await d.one(d.byId("report-run")));
    await d.waitFor(async () => ((await d.text(await d.one(d.byId("sum-attempts")))).trim() === "3") || null, `the 3 attempts of ${WO}`);
    const cli = JSON.parse(execFileSync(CLI, ["report", "--batch", WO, "--json"], { env: st.env }).toString());
    assert.equal(cli.summary.attempts, 3);
    assert.equal((await d.text(await d.one(d.byId("sum-passed")))).trim(), String(cli.summary.passed));
    assert.equal((await d.text(await d.one(d.byId("sum-failed")))).trim(), "1");
    const bars = await d.all("[data-testid=chart-pareto] [data-testid=chart-bar]");
    assert.equal(bars.length, 1, "one failure code in the Pareto chart");
    assert.equal(await d.attr(bars[0], "data-label"), `${cli.summary.pareto[0].stage}/${cli.summary.pareto[0].code}`);

    // CSV through the save dialog.
    const csvPath = join(out, "wo-report.csv");
    await d.click(await d.one(d.byId("report-csv")));
    await saveThroughDialog(d, csvPath);
    const lines = readFileSync(csvPath, "utf8").trimEnd().split(/\r?\n/);
    assert.equal(lines.length, 4, "a header and the 3 attempts");
    assert.match(lines[0], /^station_id,.*,operator,.*,issuer,dev_ca,/, "the shared column set: station, operator, issuer, development CA");
    for (const l of lines.slice(1)) assert.ok(l.includes(WO), `every row is of ${WO}: ${l}`);
    for (const s of ["SIM-0001", "SIM-0002", "SIM-0003"]) assert.ok(lines.some((l) => l.includes(s)), `${s} in the CSV`);

    // PDF through the save dialog: rendered and read back.
    const pdfPath = join(out, "wo-report.pdf");
    await d.click(await d.one(d.byId("report-pdf")));
    await saveThroughDialog(d, pdfPath);
    assert.equal(readFileSync(pdfPath).subarray(0, 5).toString(), "%PDF-");
    const text = execFileSync("pdftotext", ["-layout", pdfPath, "-"]).toString();
    assert.ok(text.includes(`Filters: work order ${WO}`), "the PDF's header names the filter");
    assert.match(text, /Attempts: 3/);
    for (const s of ["SIM-0001", "SIM-0002", "SIM-0003"]) assert.ok(text.includes(s), `${s} in the PDF`);
    assert.ok(text.includes(cli.summary.pareto[0].code), "the failure code is in the PDF's Pareto");
    assert.match(text, /page 1 of \d+/, "numbered pages");
    execFileSync("pdftoppm", ["-png", "-r", "50", "-f", "1", "-l", "1", pdfPath, join(out, "page")]);
    const png = readdirSync(out).find((f) => f.startsWith("page") && f.endsWith(".png"));
    assert.ok(png, "pdftoppm wrote the first page");
    const page = readFileSync(join(out, png));
    assert.ok(page.length > 1000, "pdftoppm rendered the first page");
  }, undefined, "", prepare);
});
