// Lives beside node_modules so that ES module resolution finds playwright-core.
// Drives the dashboard in headless Chromium (Debian's package) with playwright-core, never
// reloading the page, and prints one line per step for tests/browser.rs:
//   READY          the upstream named on the command line shows as healthy;
//   PROBED <ms>    its last-probe time changed on screen (a later probe, which publishes no
//                  event, reached the page through system_metrics), with the latency shown;
//   CHANGED <st>   it shows another status (the test kills it after PROBED);
//   FEED <text>    the health-event feed;
//   BANNER <text>  the reconnect banner, once the gateway has stopped (after FEED).
// Usage: node dashboard.mjs URL SERVER [SCREENSHOT]
import { chromium } from "playwright-core";

const [url, server, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url);
  const row = `tr[data-server="${server}"]`;
  const status = page.locator(`${row} .status`);
  await status.filter({ hasText: /^healthy$/ }).waitFor({ timeout: 30000 });
  if (screenshot) await page.screenshot({ path: screenshot });
  console.log("READY");

  const probedAt = await page.locator(`${row} td.probe`).getAttribute("title");
  await page.waitForFunction(([row, before]) => {
    const el = document.querySelector(`${row} td.probe`);
    return el && el.title && el.title !== before;
  }, [row, probedAt], { timeout: 30000 });
  console.log(`PROBED ${(await page.locator(`${row} td.latency`).textContent()).trim()}`);

  await page.waitForFunction((row) => {
    const el = document.querySelector(`${row} .status`);
    return el && el.textContent !== "healthy";
  }, row, { timeout: 30000 });
  console.log(`CHANGED ${await status.textContent()}`);
  const feed = await page.locator("#feed").textContent();
  console.log(`FEED ${feed.replace(/\s+/g, " ").slice(0, 500)}`);

  await page.locator("#banner.show").waitFor({ timeout: 30000 });
  console.log(`BANNER ${(await page.locator("#banner").textContent()).trim()}`);
} finally {
  await browser.close();
}
