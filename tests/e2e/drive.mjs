// Drive Debian's Chromium (playwright-core, no downloaded browser) through a SMART launch of the
// imaging timeline, as a clinician would: sign in, pick the patient (standalone), allow.
//
//   node tests/e2e/drive.mjs '<json>'
//
// JSON arguments: url (the page to open), username, password, patient (NHS number to search in
// the picker; standalone only), screenshot (PNG path), userDataDir (a fresh folder),
// timeoutMs (each wait), totalTimeoutMs (the whole run), chromium (executable),
// gpu (WebGL through SwiftShader instead of --disable-gpu), axe (run axe-core on every page and
// report its violations by page), shots (a folder: a PNG of every page, named by the page),
// openStudy (a StudyInstanceUID: open its images), narrow (also measure the timeline 360 px wide),
// reportPdf (a StudyInstanceUID: open its report's PDF from the keyboard and report the request the app
// made for it, its answer's first bytes and the tab it opened).
// Prints one JSON object on stdout: the final page as the test needs it (rows of #studies, the
// banner, #status), the pages it went through, and console errors. Exits 0 when the app reached
// #status[data-state=ready], 1 otherwise (with "error" set), never hangs past totalTimeoutMs.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const args = JSON.parse(process.argv[2] || "{}");
const timeout = args.timeoutMs ?? 20000;
const totalTimeout = args.totalTimeoutMs ?? 90000;
const result = { steps: [], console: [], pageErrors: [], requestsFailed: [], httpErrors: [], requests: [], axe: {}, shots: [] };
const axeSource = args.axe ? readFileSync(new URL("../../node_modules/axe-core/axe.min.js", import.meta.url), "utf8") : null;
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

// axe-core on the page as it is now (evaluated through DevTools, so the page's CSP does not apply to
// it): every violation with its impact and the first few elements, by page name.
async function audit(page, name) {
  if (!axeSource) return;
  await page.evaluate(axeSource);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
  });
  result.axe[name] = found;
}

async function shot(page, name) {
  if (!args.shots) return;
  const path = join(args.shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  result.shots.push(path);
}

async function run() {
  // A persistent context is how playwright takes a fresh --user-data-dir of our own.
  browser = await chromium.launchPersistentContext(args.userDataDir, {
    executablePath: args.chromium ?? "/usr/bin/chromium",
    headless: true,
    timeout,
    viewport: { width: 1280, height: 860 },
    args: [
      "--headless", "--no-sandbox", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      // WebGL without a GPU: Chromium's software renderer (the image viewer's WebGL path), or none.
      ...(args.gpu ? ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"] : ["--disable-gpu", "--disable-webgl"]),
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
  page.on("request", (request) => { result.requests.push(request.url()); });
  page.on("requestfailed", (request) => result.requestsFailed.push(`${request.url()} ${request.failure()?.errorText}`));

  await page.goto(args.url, { waitUntil: "domcontentloaded" });
  if (args.launcher) return runLauncher(page);

  // Sign in (the app redirected to /auth/authorize).
  await page.waitForSelector("#username", { timeout });
  step(page, "login");
  await audit(page, "sign-in");
  await shot(page, "sign-in");
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
    await audit(page, "picker");
    await shot(page, "picker");
    if ((await choose.count()) !== 1) throw new Error(`picker shows ${await choose.count()} patients, expected 1`);
    await Promise.all([page.waitForLoadState("domcontentloaded"), choose.click()]);
  }

  // Consent.
  await page.waitForSelector("#allow", { timeout });
  step(page, "consent");
  result.consentText = await page.locator("main").innerText();
  await audit(page, "consent");
  await shot(page, "consent");
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
  result.rows = await page.$$eval("#studies tbody tr.study-row", (rows) => rows.map((row) => ({
    uid: row.getAttribute("data-study-uid"),
    cells: Array.from(row.cells).map((cell) => cell.innerText.trim()),
  })));
  result.reportsState = await page.getAttribute("#studies", "data-reports");
  // At 1280 px the table fits its column: how far it would scroll sideways (0: not at all).
  result.tableOverflow = await page.$eval(".table-wrap", (w) => w.scrollWidth - w.clientWidth);
  result.signedIn = await page.locator("#signed-in").innerText().catch(() => null);
  result.warnings = await page.$$eval("#warnings .callout-warning", (c) => c.map((x) => x.innerText.trim()));
  if (result.status.state === "ready") {
    // The first study's details (an expandable row), opened from the keyboard.
    const toggle = page.locator("button.details-toggle").first();
    await toggle.focus();
    await page.keyboard.press("Enter");
    result.details = {
      expanded: await toggle.getAttribute("aria-expanded"),
      text: await page.locator("tr.details-row:not([hidden])").first().innerText().catch(() => null),
    };
    await audit(page, "timeline");
    await shot(page, "timeline");
    await page.keyboard.press("Enter");
    if (args.reportPdf) await openReportPdf(page, browser);
    if (args.narrow) {
      await page.setViewportSize({ width: 360, height: 740 });
      result.narrow = await page.evaluate(() => ({
        scrollWidth: document.documentElement.scrollWidth,
        bannerSticky: getComputedStyle(document.getElementById("patient-banner")).position,
      }));
      await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
      result.narrow.bannerTop = await page.evaluate(() => {
        const b = document.getElementById("patient-banner");
        return b.hidden ? null : b.getBoundingClientRect().top;
      });
      await page.evaluate(() => window.scrollTo(0, 0));
      await shot(page, "timeline-360px");
      await page.setViewportSize({ width: 1280, height: 860 });
    }
  }
  if (args.openStudy && result.status.state === "ready") {
    await openViewer(page);
  }
  result.sessionKeys = await page.evaluate(() => Object.keys(window.sessionStorage));
  if (args.screenshot) {
    await page.screenshot({ path: args.screenshot, fullPage: true });
    result.screenshot = args.screenshot;
  }
  if (result.status.state !== "ready") throw new Error(`app status: ${result.status.text}`);
}

// A study's report PDF, opened from the keyboard: the app fetches the gateway's route with its token and
// opens the PDF as a blob URL in a new tab.
async function openReportPdf(page, context) {
  const button = page.locator(`#studies tr[data-study-uid="${args.reportPdf}"] button.open-pdf`).first();
  // The server's answer passes through unchanged; its bytes are kept (a fetch the page reads as a blob
  // leaves playwright's response.body() empty).
  let fetched = null;
  await page.route(/\/document\.pdf(\?|$)/, async (route) => {
    const answer = await route.fetch();
    fetched = await answer.body();
    await route.fulfill({ response: answer, body: fetched });
  });
  await button.focus();
  const [response, popup] = await Promise.all([
    page.waitForResponse((r) => /\/document\.pdf(\?|$)/.test(r.url()), { timeout }),
    context.waitForEvent("page", { timeout }),
    page.keyboard.press("Enter"),
  ]);
  const body = fetched ?? Buffer.alloc(0);
  const headers = response.request().headers();
  await page.waitForFunction(() => !!document.getElementById("studies").dataset.lastPdf, null, { timeout });
  await popup.waitForURL(/^blob:/, { timeout, waitUntil: "commit" }).catch(() => {});
  result.reportPdf = {
    url: response.url(),
    status: response.status(),
    contentType: response.headers()["content-type"] ?? null,
    bearer: /^Bearer \S+$/.test(headers.authorization ?? ""),
    firstBytes: body.subarray(0, 5).toString("latin1"),
    blobUrl: await page.getAttribute("#studies", "data-last-pdf"),
    popupUrl: popup.url(),
    note: (await page.locator(`#studies tr[data-study-uid="${args.reportPdf}"] .report-note`).first().innerText()).trim(),
    focused: await page.evaluate(() => document.activeElement && document.activeElement.className),
  };
  await popup.close().catch(() => {});
}

// Pixels of the viewer's canvas: how many distinct grey levels a sample of them has (0: blank).
async function canvasLevels(page) {
  return page.evaluate(() => {
    const canvas = document.querySelector("#viewport canvas");
    if (!canvas || !canvas.width) return 0;
    const copy = document.createElement("canvas");
    copy.width = canvas.width;
    copy.height = canvas.height;
    const ctx = copy.getContext("2d");
    ctx.drawImage(canvas, 0, 0);
    const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
    const levels = new Set();
    for (let i = 0; i < data.length; i += 4 * 7) levels.add(data[i] + "," + data[i + 1] + "," + data[i + 2]);
    return levels.size;
  });
}

async function openViewer(page) {
  // Open one study's images: a thumbnail per series, then its images (the gateway, same token).
  const opener = page.locator(`#studies tr[data-study-uid="${args.openStudy}"] button.view-images`);
  await opener.focus();
  await page.keyboard.press("Enter");
  await page.waitForSelector('#viewer[data-state="ready"], #viewer[data-state="error"]', { timeout });
  await page.waitForFunction(() => {
    const v = document.getElementById("viewer");
    return v.dataset.renderer === "webgl" ? document.getElementById("viewport").dataset.gpu === "true"
      : document.getElementById("frame-image").naturalWidth > 0;
  }, null, { timeout }).catch(() => {});
  step(page, "viewer");
  const read = async () => ({
    state: await page.getAttribute("#viewer", "data-state"),
    renderer: await page.getAttribute("#viewer", "data-renderer"),
    gpu: await page.getAttribute("#viewport", "data-gpu"),
    renderedIndex: await page.getAttribute("#viewport", "data-rendered-index"),
    levels: await canvasLevels(page),
    status: await page.locator("#viewer-status").innerText(),
    facts: await page.locator("#viewer-facts").innerText(),
    thumbnails: await page.$$eval("#thumbnails img", (imgs) => imgs.map((i) => ({ loaded: i.complete && i.naturalWidth > 0 }))),
    seriesUids: await page.$$eval("#thumbnails button", (b) => b.map((x) => x.getAttribute("data-series-uid"))),
    frameWidth: await page.$eval("#frame-image", (i) => i.naturalWidth),
    frameSrc: await page.getAttribute("#frame-image", "src"),
    position: await page.locator("#frame-position").innerText(),
    iidHref: await page.locator("#viewer-iid-link").getAttribute("href").catch(() => null),
    iidVisible: await page.locator("#viewer-iid").isVisible(),
  });
  result.viewer = await read();
  await audit(page, "viewer");
  await shot(page, "viewer");
  const webgl = result.viewer.renderer === "webgl";
  if (!(await page.locator("#frame-next").isDisabled())) {
    // Scroll one image on with the keyboard (the image has focus), one more with the mouse wheel.
    await page.focus(webgl ? "#viewport" : "#frame-next");
    if (webgl) await page.keyboard.press("ArrowDown");
    else await page.click("#frame-next");
    await page.waitForFunction(() => /^Image 2 of/.test(document.getElementById("frame-position").textContent), null, { timeout });
    if (webgl) {
      await page.waitForFunction(() => document.getElementById("viewport").dataset.renderedIndex === "1", null, { timeout });
    } else {
      await page.waitForFunction((before) => { const i = document.getElementById("frame-image"); return i.src !== before && i.naturalWidth > 0; },
        result.viewer.frameSrc, { timeout });
    }
    result.viewerNext = await read();
    if (webgl && !(await page.locator("#frame-next").isDisabled())) {
      const box = await page.locator("#viewport").boundingBox();
      await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      await page.mouse.wheel(0, 120);
      await page.waitForFunction(() => document.getElementById("viewport").dataset.renderedIndex === "2", null, { timeout });
      result.viewerWheel = await read();
    }
  }
  if (webgl) {
    // A CT preset, then a window/level drag: the voi range changes what the canvas shows.
    await page.selectOption("#wl-preset", "1500,-600");
    result.presetLevels = await canvasLevels(page);
    result.presetChosen = await page.inputValue("#wl-preset");
    // Another series opens as stored: the preset does not carry over.
    const thumbs = page.locator("#thumbnails button");
    if ((await thumbs.count()) > 1) {
      await thumbs.nth(1).click();
      await page.waitForFunction(() => document.querySelector("#thumbnails button:nth-child(1)") !== null
        && document.querySelectorAll("#thumbnails button")[1].getAttribute("aria-pressed") === "true"
        && document.getElementById("wl-preset").value === "", null, { timeout });
      result.presetAfterSeries = await page.inputValue("#wl-preset");
    }
  }
  if (args.viewerScreenshot) await page.screenshot({ path: args.viewerScreenshot, fullPage: true });
}

// The EHR launch simulator (/apps/launcher/): sign in with the authorization server's own page, find
// the patient, choose a study and the app, launch; the app runs its EHR launch inside the EPR's frame.
async function runLauncher(page) {
  await page.waitForSelector("#username", { timeout });
  step(page, "launcher-sign-in");
  result.signInUrl = page.url();
  await page.fill("#username", args.username);
  await page.fill("#password", args.password);
  await Promise.all([page.waitForLoadState("domcontentloaded"), page.click("#sign-in")]);
  await page.waitForSelector("#q", { timeout });
  step(page, "launcher");
  await page.fill("#q", args.launcher.patient);
  await Promise.all([page.waitForLoadState("domcontentloaded"), page.click("#search")]);
  const select = page.locator("a.select-patient");
  await select.first().waitFor({ timeout });
  result.launcherRows = await page.locator("table tr").allInnerTexts();
  await Promise.all([page.waitForLoadState("domcontentloaded"), select.first().click()]);
  await page.waitForSelector("#launch", { timeout });
  result.studyChoices = await page.locator(".choice label").allInnerTexts();
  if (args.launcher.study) await page.check(`input[name=study][value="${args.launcher.study}"]`);
  await page.selectOption("#app", args.launcher.app ?? "imaging-timeline");
  await audit(page, "launcher");
  await shot(page, "launcher");
  await Promise.all([page.waitForLoadState("domcontentloaded"), page.click("#launch")]);
  await page.waitForSelector("#app-frame", { timeout });
  step(page, "ehr-frame");
  result.ehrBanner = (await page.locator(".ehr-banner").innerText()).trim();
  const frame = page.frameLocator("#app-frame");
  await frame.locator("#allow").waitFor({ timeout });
  step(page, "consent-in-frame");
  result.consentText = await frame.locator("main").innerText();
  await frame.locator("#allow").click();
  await frame.locator('#status[data-state="ready"], #status[data-state="error"]').waitFor({ timeout, state: "attached" });
  step(page, "app-in-frame");
  const app = page.frames().find((f) => f.url().includes("/apps/imaging-timeline/"));
  result.frameUrl = app ? app.url() : null;
  result.status = { state: await frame.locator("#status").getAttribute("data-state"), text: await frame.locator("#status").innerText() };
  result.banner = { visible: await frame.locator("#patient-banner").isVisible() };
  result.rows = await frame.locator("#studies tbody tr.study-row").evaluateAll((rows) => rows.map((row) => row.getAttribute("data-study-uid")));
  result.signedIn = await frame.locator("#signed-in").innerText().catch(() => null);
  if (args.launcher.study) {
    // The launch's study (fhirContext): the app opens at its images.
    await frame.locator('#viewer[data-state="ready"], #viewer[data-state="error"]').waitFor({ timeout });
    result.launchedViewer = {
      visible: await frame.locator("#viewer").isVisible(),
      state: await frame.locator("#viewer").getAttribute("data-state"),
      seriesUids: await frame.locator("#thumbnails button").evaluateAll((b) => b.map((x) => x.getAttribute("data-series-uid"))),
    };
  }
  await audit(page, "ehr-launch");
  await shot(page, "ehr-launch");
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
