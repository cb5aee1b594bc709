// Drive Debian's Chromium (playwright-core, no downloaded browser) through a SMART launch of the
// imaging timeline, as a clinician would: sign in, pick the patient (standalone), allow.
//
//   node tests/e2e/drive.mjs '<json>'
//
// JSON arguments: url (the page to open), username, password, patient (NHS number to search in
// the picker; standalone only), screenshot (PNG path), userDataDir (a fresh folder),
// timeoutMs (each wait), totalTimeoutMs (the whole run), chromium (executable).
// Prints one JSON object on stdout: the final page as the test needs it (rows of #studies, the
// banner, #status), the pages it went through, and console errors. Exits 0 when the app reached
// #status[data-state=ready], 1 otherwise (with "error" set), never hangs past totalTimeoutMs.
import { chromium } from "playwright-core";

const args = JSON.parse(process.argv[2] || "{}");
const timeout = args.timeoutMs ?? 20000;
const totalTimeout = args.totalTimeoutMs ?? 90000;
const result = { steps: [], console: [], pageErrors: [], requestsFailed: [], httpErrors: [] };
let browser;
let current; // the page, for a screenshot of a failure

const watchdog = setTimeout(async () => {
  result.error = `drive.mjs: gave up after ${totalTimeout} ms`;
  process.stdout.write(JSON.stringify(result) + "\n");
  // Close Chromium if it answers within 5 s; the caller kills this process group otherwise.
  await Promise.race([browser ? browser.close().catch(() => {}) : null, new Promise((r) => setTimeout(r, 5000))]);
  process.exit(2);
}, totalTimeout);

const started = Date.now();
function step(page, name) {
  result.steps.push({ name, url: page.url(), ms: Date.now() - started });
}

async function run() {
  // A persistent context is how playwright takes a fresh --user-data-dir of our own.
  browser = await chromium.launchPersistentContext(args.userDataDir, {
    executablePath: args.chromium ?? "/usr/bin/chromium",
    headless: true,
    timeout,
    viewport: { width: 1280, height: 860 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = browser.pages()[0] ?? (await browser.newPage());
  current = page;
  page.setDefaultTimeout(timeout);
  page.setDefaultNavigationTimeout(timeout);
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") result.console.push(`${msg.type()}: ${msg.text()}`);
  });
  page.on("pageerror", (error) => result.pageErrors.push(String(error)));
  page.on("response", (response) => {
    if (response.status() >= 400) result.httpErrors.push(`${response.status()} ${response.request().method()} ${response.url()}`);
  });
  page.on("requestfailed", (request) => result.requestsFailed.push(`${request.url()} ${request.failure()?.errorText}`));

  await page.goto(args.url, { waitUntil: "domcontentloaded" });

  // Sign in (the app redirected to /auth/authorize).
  await page.waitForSelector("#username", { timeout });
  step(page, "login");
  await page.fill("#username", args.username);
  await page.fill("#password", args.password);
  await Promise.all([page.waitForLoadState("domcontentloaded"), page.click("#sign-in")]);

  if (args.patient) {
    // Standalone launch: the patient picker.
    await page.waitForSelector("#q", { timeout });
    step(page, "picker");
    await page.fill("#q", args.patient);
    await Promise.all([page.waitForLoadState("domcontentloaded"), page.click("#search")]);
    const choose = page.locator("button.choose");
    await choose.first().waitFor({ timeout });
    result.pickerRows = await page.locator("table tr").allInnerTexts();
    if ((await choose.count()) !== 1) throw new Error(`picker shows ${await choose.count()} patients, expected 1`);
    await Promise.all([page.waitForLoadState("domcontentloaded"), choose.click()]);
  }

  // Consent.
  await page.waitForSelector("#allow", { timeout });
  step(page, "consent");
  result.consentText = await page.locator("main").innerText();
  await page.click("#allow");

  // Back in the app: FHIR.oauth2.ready(), then the studies.
  await page.waitForSelector('#status[data-state="ready"], #status[data-state="error"]', { timeout });
  step(page, "app");
  result.ms = Date.now() - started;
  result.status = {
    state: await page.getAttribute("#status", "data-state"),
    text: await page.locator("#status").innerText(),
  };
  result.finalUrl = page.url();
  result.banner = {
    visible: await page.locator("#patient-banner").isVisible(),
    text: (await page.locator("#patient-banner").innerText()).trim(),
  };
  result.caption = await page.locator("#studies caption").innerText().catch(() => null);
  result.headers = await page.locator("#studies thead th").allInnerTexts();
  result.rows = await page.$$eval("#studies tbody tr", (rows) => rows.map((row) => ({
    uid: row.getAttribute("data-study-uid"),
    cells: Array.from(row.cells).map((cell) => cell.innerText.trim()),
  })));
  result.signedIn = await page.locator("#signed-in").innerText().catch(() => null);
  if (args.openStudy && result.status.state === "ready") {
    // Open one study's images: a thumbnail per series, then its images one by one (the gateway, same token).
    await page.click(`#studies tr[data-study-uid="${args.openStudy}"] button.view-images`);
    await page.waitForSelector('#viewer[data-state="ready"], #viewer[data-state="error"]', { timeout });
    await page.waitForFunction(() => document.getElementById("frame-image").naturalWidth > 0, null, { timeout })
      .catch(() => {});
    step(page, "viewer");
    const read = async () => ({
      state: await page.getAttribute("#viewer", "data-state"),
      status: await page.locator("#viewer-status").innerText(),
      thumbnails: await page.$$eval("#thumbnails img", (imgs) => imgs.map((i) => ({ loaded: i.complete && i.naturalWidth > 0 }))),
      seriesUids: await page.$$eval("#thumbnails button", (b) => b.map((x) => x.getAttribute("data-series-uid"))),
      frameWidth: await page.$eval("#frame-image", (i) => i.naturalWidth),
      frameSrc: await page.getAttribute("#frame-image", "src"),
      position: await page.locator("#frame-position").innerText(),
      iidHref: await page.locator("#viewer-iid-link").getAttribute("href").catch(() => null),
      iidVisible: await page.locator("#viewer-iid").isVisible(),
    });
    result.viewer = await read();
    if (!(await page.locator("#frame-next").isDisabled())) {
      await page.click("#frame-next");
      await page.waitForFunction(() => /^Image 2 of/.test(document.getElementById("frame-position").textContent), null, { timeout });
      await page.waitForFunction((before) => { const i = document.getElementById("frame-image"); return i.src !== before && i.naturalWidth > 0; },
        result.viewer.frameSrc, { timeout });
      result.viewerNext = await read();
    }
    if (args.viewerScreenshot) await page.screenshot({ path: args.viewerScreenshot, fullPage: true });
  }
  result.sessionKeys = await page.evaluate(() => Object.keys(window.sessionStorage));
  if (args.screenshot) {
    await page.screenshot({ path: args.screenshot, fullPage: true });
    result.screenshot = args.screenshot;
  }
  if (result.status.state !== "ready") throw new Error(`app status: ${result.status.text}`);
}

let code = 0;
try {
  await run();
} catch (error) {
  result.error = String(error && error.stack ? error.stack : error);
  code = 1;
  if (current && args.screenshot) {
    const failed = args.screenshot.replace(/\.png$/, "") + "-failed.png";
    try {
      result.failedUrl = current.url();
      await current.screenshot({ path: failed, fullPage: true, timeout: 5000 });
      result.screenshot = failed;
    } catch (shotError) {
      result.screenshotError = String(shotError);
    }
  }
}
try {
  if (browser) await browser.close();
} catch (error) {
  result.closeError = String(error);
}
clearTimeout(watchdog);
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(code);
