// Lives beside node_modules so that ES module resolution finds playwright-core.
// Drives the dashboard in headless Chromium (Debian's package) with playwright-core:
// waits until the upstream named on the command line shows as healthy, prints READY,
// then waits, without reloading, until it shows any other status and prints CHANGED.
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
  const status = page.locator(`tr[data-server="${server}"] .status`);
  await status.filter({ hasText: /^healthy$/ }).waitFor({ timeout: 30000 });
  if (screenshot) await page.screenshot({ path: screenshot });
  console.log("READY");
  await page.waitForFunction((name) => {
    const el = document.querySelector(`tr[data-server="${name}"] .status`);
    return el && el.textContent !== "healthy";
  }, server, { timeout: 30000 });
  console.log(`CHANGED ${await status.textContent()}`);
  const feed = await page.locator("#feed").textContent();
  console.log(`FEED ${feed.replace(/\s+/g, " ").slice(0, 500)}`);
} finally {
  await browser.close();
}
