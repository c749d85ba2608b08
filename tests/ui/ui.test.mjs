// Browser tests of the staff UI: the real storebox binary, Debian's headless Chromium driven by
// playwright-core, real MQTT devices (mqtt.js), axe-core on every page. Screenshots of each page
// go to target/ui-screenshots/.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  Box, axe, connectDevice, launchBrowser, money, newPage, screenshot, signIn, storeLocal, vanish, withTimeout,
} from "./harness.mjs";

const TZ = "Europe/Rome";
const HQ_TOKEN = "hq-secret-token-must-never-show-9f3a";
const PW = { ada: "admin-pass-12345", maria: "manager-pass-123", sam: "staff-pass-12345" };
const DAY = 86400000;
const iso = (ms) => new Date(ms).toISOString();
// Every test is bounded (each wait inside is bounded too).
const T = { timeout: 120000 };

let box, browser, token;
const devices = {};
const axeReport = [];

async function checkPage(page, name) {
  await page.waitForLoadState("networkidle", { timeout: 5000 }).catch(() => {});
  await screenshot(page, name);
  const violations = await axe(page);
  axeReport.push({ name, violations });
  assert.deepEqual(violations, [], `axe found serious/critical problems on ${name}`);
  assert.deepEqual(page.foreign, [], `${name} requested something outside the box`);
  const csp = page.errors.filter((e) => /Content Security Policy|Refused to/.test(e));
  assert.deepEqual(csp, [], `${name}: blocked by the page's own CSP`);
  const html = await page.content();
  assert.ok(!html.includes(HQ_TOKEN), `${name} shows the HQ token`);
}

before(async () => {
  const now = Date.now();
  box = new Box({ STOREBOX_STORE__TIMEZONE: TZ, STOREBOX_STORE__NAME: "Via Roma", STOREBOX_HQ__TOKEN: HQ_TOKEN });
  box.addUser("ada", "admin", PW.ada);
  box.addUser("maria", "manager", PW.maria);
  box.addUser("sam", "staff", PW.sam);
  token = box.addToken("ui-tests", "manager");
  devices["lane-1"] = box.addDevice("lane-1", "lane");
  devices["fridge-1"] = box.addDevice("fridge-1", "fridge");
  box.importEvents([
    { id: "c1", type: "catalog.upsert", payload: { sku: "1001", name: "Whole milk 1 L", barcodes: ["8001234567890"], department: "dairy", unit: "each" } },
    { id: "c2", type: "catalog.upsert", payload: { sku: "2001", name: "Bananas", barcodes: ["2000000000015"], department: "produce", unit: "kg" } },
    { id: "c3", type: "catalog.upsert", payload: { sku: "3001", name: "Sparkling water 6-pack", barcodes: [], department: "drinks", unit: "each" } },
    { id: "p1", type: "price.set", payload: { id: "pr-1001-base", sku: "1001", price: 129, starts_at: iso(now - 30 * DAY), ends_at: null } },
    { id: "p2", type: "price.set", payload: { id: "pr-1001-dec", sku: "1001", price: 139, starts_at: iso(now + 3 * DAY), ends_at: null } },
    { id: "p3", type: "price.set", payload: { id: "pr-2001", sku: "2001", price: 199, starts_at: iso(now - 30 * DAY), ends_at: null } },
    { id: "p4", type: "price.set", payload: { id: "pr-3001", sku: "3001", price: 349, starts_at: iso(now - 30 * DAY), ends_at: null } },
    { id: "m1", type: "promotion.upsert", payload: { id: "promo-milk", name: "Milk week", kind: "percent_off", params: { percent: 20 }, skus: ["1001"], department: null, starts_at: iso(now - DAY), ends_at: iso(now + 2 * DAY) } },
    { id: "m2", type: "promotion.upsert", payload: { id: "promo-water", name: "Water 2 for 5.99", kind: "multi_buy", params: { quantity: 2, price: 599 }, skus: [], department: "drinks", starts_at: iso(now + DAY), ends_at: iso(now + 10 * DAY) } },
  ]);
  await box.start();
  // Two checkouts today (priced on the box).
  for (const [id, lines] of [["ui-c1", [{ sku: "1001", quantity: 2 }]], ["ui-c2", [{ sku: "3001", quantity: 1 }, { sku: "2001", quantity: 1500 }]]]) {
    const r = await box.api("POST", "/checkouts", token, { checkout_id: id, lane: "lane-1", lines, payment: { method: "card" } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  // The fridge reports readings and an alert, then stays connected.
  const fridge = await connectDevice(box, "fridge-1", devices["fridge-1"]);
  await fridge.publishAsync("devices/fridge-1/status", JSON.stringify({ online: true, firmware: "1.4.2" }), { qos: 1, retain: true });
  for (let i = 10; i >= 0; i--) {
    await fridge.publishAsync("devices/fridge-1/telemetry", JSON.stringify({ ts: iso(now - i * 60000), metrics: { temp_c: 3.5 + (i % 4) * 0.3, door_open_s: i % 3 } }), { qos: 1 });
  }
  await fridge.publishAsync("devices/fridge-1/alerts", JSON.stringify({ code: "DOOR_OPEN", severity: "warning", message: "Door open for 5 minutes" }), { qos: 1 });
  devices.fridgeClient = fridge;
  browser = await launchBrowser();
});

after(async () => {
  if (devices.fridgeClient) devices.fridgeClient.end(true);
  if (browser) await browser.close().catch(() => {});
  if (box) await box.stop();
  if (axeReport.length) {
    const bad = axeReport.filter((r) => r.violations.length).length;
    console.log(`axe-core: ${axeReport.length} pages checked, ${bad} with serious or critical violations`);
  }
});

test("first-run setup with the one-time code from the log, then the overview", T, async () => {
  // This store has an HQ configured that cannot be reached (a closed port on loopback).
  const fresh = new Box({ STOREBOX_STORE__NAME: "New store", STOREBOX_HQ__URL: "http://127.0.0.1:9", STOREBOX_HQ__TOKEN: HQ_TOKEN });
  try {
    await fresh.start();
    const page = await newPage(browser, fresh);
    await page.goto(fresh.http + "/");
    await page.getByRole("heading", { name: "First-run setup" }).waitFor();
    await checkPage(page, "00-first-run-setup");
    const log = fresh.stderr.replace(/\x1b\[[0-9;]*m/g, "");
    const code = log.match(/setup_code=([A-Za-z0-9_-]{12})/);
    assert.ok(code, `no setup code in the log: ${log}`);
    await page.getByLabel("Setup code").fill("wrong-code-1");
    await page.getByLabel("Administrator name").fill("first");
    await page.getByLabel("Password (10 characters or more)").fill("first-admin-pass");
    await page.getByRole("button", { name: "Create administrator" }).click();
    await page.getByText("wrong setup code").waitFor();
    await page.getByLabel("Setup code").fill(code[1]);
    await page.getByRole("button", { name: "Create administrator" }).click();
    await page.locator("#who").filter({ hasText: "first (admin)" }).waitFor();
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await page.getByText("Not connected to HQ").waitFor();
    await checkPage(page, "00-overview-hq-unreachable");
    await page.context().close();
  } finally {
    await fresh.stop();
  }
});

test("sign in: wrong password refused, then the overview with sales and upcoming changes", T, async () => {
  const page = await newPage(browser, box);
  await page.goto(box.http + "/");
  await checkPage(page, "01-sign-in");
  await page.getByLabel("User name").fill("maria");
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Wrong user name or password.").waitFor();
  await page.getByLabel("Password").fill(PW.maria);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#who").filter({ hasText: "maria (manager)" }).waitFor();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  // The cookie is HttpOnly: scripts cannot read it.
  assert.equal(await page.evaluate(() => document.cookie), "");
  const cookies = await page.context().cookies();
  const sc = cookies.find((c) => c.name === "storebox_session");
  assert.ok(sc && sc.httpOnly && sc.sameSite === "Strict", JSON.stringify(cookies));

  const overview = (await box.api("GET", "/overview", token)).body;
  assert.equal(overview.sales_today.checkouts, 2);
  await page.getByText("Standalone: no HQ configured").waitFor();
  await page.getByText(money(overview.sales_today.total), { exact: true }).waitFor();
  await page.getByText(`${overview.sales_today.checkouts} checkouts on`).waitFor();
  await page.getByRole("cell", { name: "Whole milk 1 L (1001)" }).waitFor();
  await page.getByRole("cell", { name: "Water 2 for 5.99" }).first().waitFor();
  await page.locator("figure canvas").first().waitFor();
  await checkPage(page, "02-overview");
  await page.context().close();
});

test("devices: a device turns online and offline live, without reloading", T, async () => {
  const page = await newPage(browser, box);
  await signIn(page, box, "maria", PW.maria);
  await page.goto(box.http + "/#/devices");
  const row = page.locator('tr[data-device="lane-1"]');
  await row.waitFor();
  await page.locator("#live-state").filter({ hasText: "Live" }).waitFor();
  await page.evaluate(() => { window.__noReload = true; });
  assert.match(await row.locator("[data-status]").textContent(), /Offline/);

  const lane = await connectDevice(box, "lane-1", devices["lane-1"]);
  await lane.publishAsync("devices/lane-1/status", JSON.stringify({ online: true, firmware: "2.4.1" }), { qos: 1, retain: true });
  await row.locator('[data-status="online"]').waitFor({ timeout: 30000 });
  await row.getByText("2.4.1").waitFor();
  await checkPage(page, "03-devices-live");

  vanish(lane);
  await row.locator('[data-status="offline"]').waitFor({ timeout: 30000 });
  assert.match(await row.locator("[data-status]").textContent(), /Offline \(connection lost\)/);
  assert.equal(await page.evaluate(() => window.__noReload), true, "the page was reloaded");

  // Filters.
  await page.getByLabel("Status").selectOption("alerts");
  await page.locator('tr[data-device="fridge-1"]').waitFor();
  assert.equal(await page.locator('tr[data-device="lane-1"]').count(), 0);
  await page.getByLabel("Status").selectOption("");

  // A device's page: readings chart, alerts, commands, rejected messages.
  await page.locator('tr[data-device="fridge-1"]').getByRole("link", { name: "fridge-1" }).click();
  await page.getByRole("heading", { name: "temp_c" }).waitFor();
  await page.getByRole("cell", { name: /DOOR_OPEN/ }).waitFor();
  await page.locator("figure canvas").first().waitFor();
  await page.locator("#command-name").selectOption("ping");
  await page.getByRole("button", { name: "Send command" }).click();
  await page.getByRole("cell", { name: "Waiting for the device" }).first().waitFor();
  await checkPage(page, "04-device-detail");
  await page.context().close();
});

test("provision a device and connect with the credentials shown once", T, async () => {
  const page = await newPage(browser, box);
  await signIn(page, box, "maria", PW.maria);
  await page.goto(box.http + "/#/devices/new");
  await page.getByRole("heading", { name: "Add a device" }).waitFor();
  await checkPage(page, "05-provision-form");
  await page.getByLabel("Device id").fill("scale-7");
  await page.getByLabel("Kind").selectOption("scale");
  await page.getByLabel("Name shown to staff (optional)").fill("Deli scale");
  await page.getByRole("button", { name: "Add device" }).click();
  const password = (await page.locator("#cred-password").textContent()).trim();
  const snippet = await page.locator("#device-config").textContent();
  assert.ok(snippet.includes(`password=${password}`) && snippet.includes(`port=${box.mqttPort}`), snippet);
  assert.ok(snippet.includes("client_id=scale-7") && snippet.includes("username=scale-7"), snippet);
  await checkPage(page, "06-provision-credentials");

  const client = await connectDevice(box, "scale-7", password);
  await client.publishAsync("devices/scale-7/status", JSON.stringify({ online: true, firmware: "0.9.0" }), { qos: 1 });
  await page.getByRole("link", { name: "Open the device" }).click();
  await page.getByRole("heading", { name: "Deli scale (scale-7)" }).waitFor();
  await page.goto(box.http + "/#/devices");
  await page.locator('tr[data-device="scale-7"] [data-status="online"]').waitFor();
  // Wrong password is refused by the broker.
  await assert.rejects(connectDevice(box, "scale-7", password + "x"));
  // The password is not shown again anywhere.
  await page.goto(box.http + "/#/devices/scale-7");
  await page.getByRole("heading", { name: "Deli scale (scale-7)" }).waitFor();
  assert.ok(!(await page.content()).includes(password));
  client.end(true);
  await page.context().close();
});

test("find a product: the price shown is the API's, also at a later date", T, async () => {
  const page = await newPage(browser, box);
  await signIn(page, box, "sam", PW.sam);
  await page.goto(box.http + "/#/prices");
  await checkPage(page, "07-prices-search");
  await page.getByLabel("Product name, sku or barcode").fill("milk");
  await page.getByRole("button", { name: "Find" }).click();
  await page.getByRole("link", { name: "Whole milk 1 L" }).waitFor();
  await checkPage(page, "07-prices-results");
  await page.getByRole("link", { name: "Whole milk 1 L" }).click();
  await page.getByRole("heading", { name: "Whole milk 1 L" }).waitFor();

  const price = (await box.api("GET", "/prices/1001", token)).body;
  const basket = (await box.api("POST", "/baskets/price", token, { lines: [{ sku: "1001", quantity: 1 }] })).body;
  assert.deepEqual(price.promotions, ["promo-milk"]);
  assert.equal(basket.total, 103); // 129 - round_half_up(25.8)
  await page.locator("#price-value").filter({ hasText: money(basket.total) }).waitFor();
  await page.getByText(`Regular price ${money(price.price)} from price record`).waitFor();
  await page.locator("#price-now code").filter({ hasText: price.price_id }).waitFor();
  await page.getByText("Promotion “Milk week” (20% off)").waitFor();
  await page.locator("figure canvas").first().waitFor();
  await checkPage(page, "08-product-price");

  // What will it cost in 4 days (after the promotion, with the new price record)?
  const later = storeLocal(new Date(Date.now() + 4 * DAY), TZ);
  const expected = (await box.api("GET", `/prices/1001?at=${encodeURIComponent(later + ":00")}`, token)).body;
  assert.equal(expected.price, 139);
  await page.getByLabel(/Date and time/).fill(later);
  await page.getByRole("button", { name: "Show price" }).click();
  await page.locator("#price-at-result .big").filter({ hasText: money(expected.price) }).waitFor();
  await page.locator("#price-at-result code").filter({ hasText: expected.price_id }).waitFor();

  // Barcode search goes straight to the product.
  await page.goto(box.http + "/#/prices");
  await page.getByLabel("Product name, sku or barcode").fill("2000000000015");
  await page.getByRole("button", { name: "Find" }).click();
  await page.getByRole("heading", { name: "Bananas" }).waitFor();
  await page.getByText("per kg").first().waitFor();

  await page.goto(box.http + "/#/promotions");
  await page.getByRole("rowheader", { name: "Milk week" }).waitFor();
  await page.getByRole("rowheader", { name: "Water 2 for 5.99" }).waitFor();
  await checkPage(page, "09-promotions-calendar");
  await page.context().close();
});

test("open a support ticket about a device", T, async () => {
  const page = await newPage(browser, box);
  await signIn(page, box, "sam", PW.sam);
  await page.goto(box.http + "/#/tickets");
  await page.getByRole("heading", { name: "Open a ticket" }).waitFor();
  await checkPage(page, "10-tickets");
  await page.getByLabel("What is wrong? (one line)").fill("Fridge door alarm keeps ringing");
  await page.getByLabel(/Describe the problem/).fill("Since this morning the dairy fridge reports the door open although it is closed.");
  await page.getByLabel("Device concerned (optional)").selectOption("fridge-1");
  await page.getByLabel(/Attach the full support bundle/).check();
  await page.getByRole("button", { name: "Send to support" }).click();
  await page.getByRole("heading", { name: "Fridge door alarm keeps ringing" }).waitFor();
  await page.getByText("No reply yet.").waitFor();
  await checkPage(page, "11-ticket");
  const list = (await box.api("GET", "/tickets", token)).body.tickets;
  const t = list.find((x) => x.subject === "Fridge door alarm keeps ringing");
  assert.ok(t, JSON.stringify(list));
  assert.equal(t.device_id, "fridge-1");
  assert.equal(t.opened_by, "sam");
  assert.ok(!JSON.stringify(t.diagnostics).includes(HQ_TOKEN));
  assert.equal(t.diagnostics.bundle?.format, 1, "the support bundle is attached");
  assert.equal(t.diagnostics.bundle.database.quick_check, "ok");
  await page.context().close();
});

test("a staff user cannot reach manager or admin pages or actions", T, async () => {
  const page = await newPage(browser, box);
  await signIn(page, box, "sam", PW.sam);
  assert.equal(await page.getByRole("link", { name: "Users" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "Audit log" }).count(), 0);
  for (const [hash, role] of [["#/users", "admin"], ["#/audit", "manager"], ["#/devices/new", "manager"]]) {
    await page.goto(box.http + "/" + hash);
    await page.getByText(`This page needs the ${role} role`).waitFor();
  }
  await checkPage(page, "12-staff-not-allowed");
  // The server refuses too, whatever the UI shows.
  const results = await page.evaluate(async () => {
    const s = await (await fetch("/api/v1/session")).json();
    const h = { "Content-Type": "application/json", "X-CSRF-Token": s.csrf };
    return {
      users: (await fetch("/api/v1/users")).status,
      audit: (await fetch("/api/v1/audit")).status,
      patch: (await fetch("/api/v1/users/ada", { method: "PATCH", headers: h, body: JSON.stringify({ disabled: true }) })).status,
      provision: (await fetch("/api/v1/devices", { method: "POST", headers: h, body: JSON.stringify({ id: "x1", kind: "lane" }) })).status,
      command: (await fetch("/api/v1/devices/lane-1/commands", { method: "POST", headers: h, body: JSON.stringify({ name: "reboot" }) })).status,
      about: await (await fetch("/api/v1/about")).json(),
    };
  });
  assert.deepEqual([results.users, results.audit, results.patch, results.provision, results.command], [403, 403, 403, 403, 403]);
  assert.equal(results.about.config, null);
  await page.goto(box.http + "/#/about");
  await page.getByText("Only administrators can see the configuration.").waitFor();
  await checkPage(page, "13-about-staff");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal(await page.evaluate(async () => (await fetch("/api/v1/devices")).status), 401);
  await page.context().close();
});

test("admin pages: users, audit log, alerts, about; axe-core on each", T, async () => {
  const page = await newPage(browser, box);
  await signIn(page, box, "ada", PW.ada);
  await page.goto(box.http + "/#/users");
  await page.getByRole("rowheader", { name: "ada (you)" }).waitFor();
  await page.locator("#user-form").getByLabel("User name").fill("temp1");
  await page.locator("#user-form").getByLabel(/Password/).fill("temporary-pass-1");
  await page.locator("#user-form").getByLabel("Role").selectOption("staff");
  await page.getByRole("button", { name: "Add user" }).click();
  await page.getByRole("rowheader", { name: "temp1" }).waitFor();
  await page.getByLabel("Role of temp1").selectOption("manager");
  await page.getByText("temp1: role is now manager.").waitFor();
  const row = page.getByRole("row").filter({ has: page.getByRole("rowheader", { name: "temp1" }) });
  await row.getByRole("button", { name: "Disable" }).click();
  await row.getByRole("cell", { name: "Disabled" }).waitFor();
  await checkPage(page, "14-users");
  const users = (await box.api("GET", "/users", box.addToken("ui-admin", "admin"))).body;
  const temp = users.find((u) => u.username === "temp1");
  assert.deepEqual([temp.role, temp.disabled], ["manager", true]);

  await page.goto(box.http + "/#/audit");
  await page.getByRole("cell", { name: "user.change" }).first().waitFor();
  await checkPage(page, "15-audit");
  await page.goto(box.http + "/#/alerts");
  await page.getByRole("cell", { name: /DOOR_OPEN/ }).waitFor();
  await checkPage(page, "16-alerts");
  await page.goto(box.http + "/#/about");
  await page.getByRole("cell", { name: "set (hidden)" }).waitFor();
  await page.getByRole("cell", { name: "none (standalone)" }).waitFor();
  await page.getByRole("heading", { name: "Software updates" }).waitFor();
  await page.getByText("updates are off on this store: no [updates] public_key is configured").waitFor();
  assert.equal(await page.locator("#updates-state").textContent(), "Nothing assigned");
  await page.getByRole("table", { name: "Update history, newest first" }).waitFor();
  await checkPage(page, "17-about-admin");
  // The support bundle downloads as a file, without the HQ token.
  const [download] = await Promise.all([page.waitForEvent("download"),
    page.getByRole("link", { name: "Download the support bundle" }).click()]);
  assert.match(download.suggestedFilename(), /^storebox-diag-.*\.json$/);
  const bundle = await new Promise((resolve, reject) => {
    download.createReadStream().then((st) => { let b = ""; st.on("data", (c) => { b += c; }); st.on("end", () => resolve(b)); st.on("error", reject); }, reject);
  });
  assert.ok(!bundle.includes(HQ_TOKEN));
  assert.equal(JSON.parse(bundle).format, 1);
  await page.context().close();
});

test("tablet portrait: the overview and devices fit an 800 px wide screen", T, async () => {
  const page = await newPage(browser, box);
  await page.setViewportSize({ width: 800, height: 1280 });
  await signIn(page, box, "maria", PW.maria);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.locator("figure canvas").first().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
  await screenshot(page, "18-overview-portrait");
  await page.goto(box.http + "/#/devices");
  await page.locator('tr[data-device="fridge-1"]').waitFor();
  await screenshot(page, "19-devices-portrait");
  // Touch targets: navigation links and buttons are at least 44 px high.
  const small = await page.evaluate(() => [...document.querySelectorAll("nav a, button")]
    .filter((e) => e.offsetParent && e.getBoundingClientRect().height < 44).map((e) => e.textContent));
  assert.deepEqual(small, []);
  await withTimeout(page.context().close(), 5000, "close");
});
