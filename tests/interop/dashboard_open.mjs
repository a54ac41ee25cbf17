// Lives beside node_modules so that ES module resolution finds playwright-core.
// Opens the dashboard once in headless Chromium (Debian's package) with playwright-core,
// as a person would, on a gateway that has already served calls, and prints what the page
// shows, for tests/browser.rs to judge:
//   STATE <json>   {feed: [texts], cache: {label: value}, rows: {name: {latency, probe,
//                  error, errorTitle, errorFits}}, charts: {name: {calls, p50, p99, hits}}}
//                  where the chart values are how many points each line has.
// It waits only for what every page shows once the stream is open (the upstreams named on
// the command line in the table, and their charts), never for a particular value.
// Usage: node dashboard_open.mjs URL SCREENSHOT NAME...
import { chromium } from "playwright-core";

const [url, screenshot, ...names] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url);
  for (const name of names) {
    await page.locator(`tr[data-server="${name}"]`).waitFor({ timeout: 30000 });
  }
  await page.locator(`[data-traffic] svg`).first().waitFor({ timeout: 30000 });
  const state = await page.evaluate((names) => {
    const text = (el) => (el ? el.textContent.replace(/\s+/g, " ").trim() : null);
    const cache = {};
    const cells = [...document.querySelectorAll("#cache span")];
    for (let i = 0; i + 1 < cells.length; i += 2) cache[text(cells[i])] = text(cells[i + 1]);
    const points = (el) => (el ? el.getAttribute("points").trim().split(/\s+/).filter(Boolean).length : 0);
    const rows = {}, charts = {};
    for (const name of names) {
      const row = document.querySelector(`tr[data-server="${name}"]`);
      const error = row.querySelector("td.error");
      const panel = row.closest("section").getBoundingClientRect();
      const box = error.getBoundingClientRect();
      rows[name] = {
        latency: text(row.querySelector("td.latency")),
        probe: text(row.querySelector("td.probe")),
        error: text(error),
        errorTitle: error.title,
        errorFits: box.left >= panel.left && box.right <= panel.right,
      };
      const card = document.querySelector(`[data-traffic="${name}"]`);
      charts[name] = card && {
        calls: points(card.querySelector("svg.calls polyline")),
        p50: points(card.querySelector("svg.latency polyline.p50")),
        p99: points(card.querySelector("svg.latency polyline.p99")),
        hits: points(card.querySelector("svg.hits polyline")),
      };
    }
    const feed = [...document.querySelectorAll("#feed li")].map(text);
    const scripts = [...document.querySelectorAll("script[src], link[href]")].map((e) => e.src || e.href);
    return { feed, cache, rows, charts, scripts };
  }, names);
  // Every upstream's row and chart, the feed and the cache panel, in one picture.
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`STATE ${JSON.stringify(state)}`);
} finally {
  await browser.close();
}
