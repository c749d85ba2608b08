// Browser tests of HQ's console: a real `storebox hq`, a real `storebox serve` store syncing with it,
// a real MQTT device, Debian's headless Chromium (playwright-core) and axe-core on every page.
// Waits are for conditions (bounded), never fixed sleeps. Screenshots go to target/ui-screenshots/.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { BIN, Box, axe, connectDevice, launchBrowser, newPage, screenshot, signIn, withTimeout } from "./harness.mjs";

const ADMIN = "hq-admin-token-for-ui-tests-7c1d";
const PW = { sam: "support-pass-123", olga: "operator-pass-12", ada: "admin-pass-12345" };
const TZ = "Europe/Rome";
const T = { timeout: 180000 };

/** A running `storebox hq` on its SQLite file. */
class Hq {
  constructor(env = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "storebox-hq-ui-"));
    this.env = {
      ...process.env,
      STOREBOX_HQ_SERVER__DATA_DIR: this.dir,
      STOREBOX_HQ_SERVER__LISTEN: "127.0.0.1:0",
      STOREBOX_HQ_SERVER__ADMIN_TOKEN: ADMIN,
      STOREBOX_STORAGE__DATA_DIR: path.join(this.dir, "unused-store"),
      STOREBOX_LOG__LEVEL: "info",
      NO_COLOR: "1",
      ...env,
    };
    this.stderr = "";
  }

  cli(args, input) {
    const r = spawnSync(BIN, ["hq", ...args], { env: this.env, input: input ?? "", encoding: "utf8", timeout: 30000 });
    if (r.status !== 0) throw new Error(`storebox hq ${args.join(" ")} failed (${r.status}): ${r.stdout} ${r.stderr}`);
    return r.stdout;
  }

  addUser(name, role, password) {
    this.cli(["user", "add", name, "--role", role, "--password-stdin"], `${password}\n`);
  }

  addStore(id, group) {
    return this.cli(["store", "add", id, "--group", group]).trim().split("\n").pop().trim();
  }

  async start() {
    this.proc = spawn(BIN, ["hq"], { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stderr.on("data", (d) => { this.stderr += d.toString(); });
    const line = await withTimeout(new Promise((resolve, reject) => {
      let buf = "";
      this.proc.stdout.on("data", (d) => {
        buf += d.toString();
        const l = buf.split("\n").find((x) => x.startsWith("storebox-hq ready "));
        if (l) resolve(l);
      });
      this.proc.on("exit", (code) => reject(new Error(`storebox hq exited (${code}) before ready: ${this.stderr}`)));
    }), 20000, "storebox hq ready line");
    this.http = line.match(/http=(\S+)/)[1];
    return this;
  }

  async admin(method, p, body) {
    const res = await withTimeout(fetch(this.http + p, {
      method,
      headers: { Authorization: `Bearer ${ADMIN}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    }), 10000, `${method} ${p}`);
    return { status: res.status, body: await res.json().catch(() => null) };
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      await withTimeout(exited, 10000, "storebox hq exit").catch(() => this.proc.kill("SIGKILL"));
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Polls `f` until it returns a truthy value (bounded). */
async function until(what, secs, f) {
  const end = Date.now() + secs * 1000;
  for (;;) {
    const v = await f().catch(() => null);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${secs} s: ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

let hq, store, browser, page, fridge;
let lane, s2Token;
const axeReport = [];

async function checkPage(p, name) {
  await p.waitForLoadState("networkidle", { timeout: 5000 }).catch(() => {});
  await screenshot(p, `hq-${name}`);
  const violations = await axe(p);
  axeReport.push({ name, violations });
  assert.deepEqual(violations, [], `axe found serious/critical problems on ${name}`);
  assert.deepEqual(p.foreign, [], `${name} requested something outside HQ`);
  const csp = p.errors.filter((e) => /Content Security Policy|Refused to/.test(e));
  assert.deepEqual(csp, [], `${name}: blocked by the page's own CSP`);
}

/** A signed release made with the real CLI: a minimal .deb (dpkg-deb), `storebox release keygen`
 * and `sign`. Returns the public key line and the package and manifest paths. */
function signedRelease(version) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "storebox-hq-ui-release-"));
  const run = (cmd, args) => {
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 30000 });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stdout} ${r.stderr}`);
  };
  const root = path.join(dir, "pkg");
  fs.mkdirSync(path.join(root, "DEBIAN"), { recursive: true });
  fs.mkdirSync(path.join(root, "usr/share/doc/storebox"), { recursive: true });
  fs.writeFileSync(path.join(root, "usr/share/doc/storebox/README"), "test package\n");
  fs.writeFileSync(path.join(root, "DEBIAN/control"),
    `Package: storebox\nVersion: ${version}\nArchitecture: amd64\nMaintainer: tests <tests@localhost>\nDescription: test package\n`);
  const deb = path.join(dir, `storebox_${version}_amd64.deb`);
  run("dpkg-deb", ["--build", "--root-owner-group", root, deb]);
  run(BIN, ["release", "keygen", "--out", path.join(dir, "keys")]);
  run(BIN, ["release", "sign", "--key", path.join(dir, "keys/release.key"), deb]);
  return { dir, pub: fs.readFileSync(path.join(dir, "keys/release.pub"), "utf8").trim(), deb, manifest: `${deb}.manifest.json` };
}
let release;

before(async () => {
  release = signedRelease("9.9.9");
  // Offline after 6 s without contact; the store long-polls every second.
  hq = new Hq({ STOREBOX_HQ_SERVER__OFFLINE_AFTER_SECONDS: "6", STOREBOX_HQ_SERVER__RELEASE_PUBLIC_KEYS: JSON.stringify([release.pub]) });
  hq.addUser("sam", "support", PW.sam);
  hq.addUser("olga", "operator", PW.olga);
  hq.addUser("ada", "admin", PW.ada);
  const token = hq.addStore("s1", "pilot");
  s2Token = hq.addStore("s2", "north");
  await hq.start();
  store = new Box({
    STOREBOX_STORE__ID: "s1", STOREBOX_STORE__TIMEZONE: TZ,
    STOREBOX_HQ__URL: hq.http, STOREBOX_HQ__TOKEN: token,
    STOREBOX_HQ__RETRY_MAX_SECS: "1", STOREBOX_HQ__POLL_WAIT_SECS: "1", STOREBOX_HQ__ROLLUP_INTERVAL_SECS: "1",
  });
  const pw = store.addDevice("fridge-1", "fridge");
  store.addDevice("lane-1", "lane");
  lane = store.addToken("lane-1", "staff");
  await store.start();
  fridge = await connectDevice(store, "fridge-1", pw);
  await fridge.publishAsync("devices/fridge-1/status", JSON.stringify({ online: true }), { qos: 1, retain: true });
  await fridge.publishAsync("devices/fridge-1/alerts", JSON.stringify({ code: "DOOR_OPEN", severity: "warning", message: "Door open for 5 minutes" }), { qos: 1 });
  // The alert reaches HQ first; then HQ authors a price for the store's group.
  await until("the alert reaches HQ", 60, async () => {
    const r = await hq.admin("GET", "/hq/v1/fleet");
    return r.body.stores.find((s) => s.id === "s1" && s.open_alerts === 1);
  });
  const r = await hq.admin("POST", "/hq/v1/events", {
    target: { groups: ["pilot"] },
    events: [
      { type: "catalog.upsert", payload: { sku: "1001", name: "Whole milk 1 L", unit: "each", department: "dairy" } },
      { type: "price.set", payload: { id: "pr-1001", sku: "1001", price: 99, starts_at: "2020-01-01T00:00:00Z", ends_at: null } },
    ],
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  // A checkout at the new price reaches HQ (the chart's checkouts per hour), as do telemetry rollups.
  await until("the price reaches the store", 60, async () => (await store.api("GET", "/prices/1001", lane)).status === 200);
  const c = await store.api("POST", "/checkouts", lane, { checkout_id: "hq-ui-1", lane: "lane-1", lines: [{ sku: "1001", quantity: 2 }], payment: { method: "card" } });
  assert.equal(c.status, 201, JSON.stringify(c.body));
  await until("the checkout and a telemetry rollup reach HQ", 60, async () => {
    const f = await hq.admin("GET", "/hq/v1/fleet");
    const s1 = f.body.stores.find((s) => s.id === "s1");
    return s1 && s1.checkouts_last_hour === 1 && s1.rollup;
  });
  browser = await launchBrowser();
  page = await newPage(browser, hq);
});

after(async () => {
  if (fridge) fridge.end(true);
  if (browser) await browser.close().catch(() => {});
  if (store) await store.stop().catch(() => {});
  if (hq) await hq.stop();
  if (release) fs.rmSync(release.dir, { recursive: true, force: true });
  if (axeReport.length) {
    const bad = axeReport.filter((r) => r.violations.length).length;
    console.log(`axe-core (HQ console): ${axeReport.length} pages checked, ${bad} with serious or critical violations`);
  }
});

test("HQ console: sign-in is required and shows nothing of the fleet before", T, async () => {
  const res = await page.goto(hq.http + "/");
  assert.equal(res.status(), 401);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  const html = await page.content();
  assert.ok(!html.includes("s1") && !html.includes("pilot"), "nothing of the fleet before sign-in");
  const api = await page.evaluate(async () => (await fetch("/hq/v1/fleet")).status);
  assert.equal(api, 401);
  const csp = res.headers()["content-security-policy"];
  assert.ok(csp && csp.includes("default-src 'self'"), `CSP: ${csp}`);
  await checkPage(page, "sign-in");
  // A wrong password says so, and the page stays.
  await page.getByLabel("Name").fill("sam");
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#login-error").filter({ hasText: "Wrong name or password" }).waitFor();
  // Signed in with the keyboard only: the shell with the user and role in the top bar.
  await page.getByLabel("Password").fill(PW.sam);
  await page.getByLabel("Password").press("Enter");
  await page.locator("#who").filter({ hasText: "sam (support)" }).waitFor({ timeout: 20000 });
  await page.getByRole("heading", { name: "Fleet" }).waitFor();
});

test("HQ console: the fleet page updates live when a store goes offline", T, async () => {
  const row = (id) => page.locator(`tr[data-store="${id}"]`);
  // s1 is connected with an open warning alert: degraded, and says why; s2 never connected.
  // (One wait for all of it: on a loaded machine a row may change between two reads.)
  const s1 = page.locator('tr[data-store="s1"][data-health="degraded"]', { hasText: "1 open alert" });
  await s1.waitFor({ timeout: 60000 });
  await until("one checkout in the last hour shown", 20, async () => (await s1.locator("td").last().innerText()).trim() === "1");
  assert.match(await row("s2").innerText(), /Offline[\s\S]*never connected/);
  assert.match(await page.locator("#fleet-live").innerText(), /Live/);
  await checkPage(page, "fleet");
  // Filters: by verdict and by text.
  await page.getByLabel("Health", { exact: true }).selectOption("offline");
  await until("only s2 shown", 10, async () => (await page.locator("tr[data-store]").count()) === 1 && (await row("s2").count()) === 1);
  await page.getByLabel("Health", { exact: true }).selectOption("");
  await page.getByLabel("Search", { exact: true }).fill("pilot");
  await until("only s1 shown", 10, async () => (await page.locator("tr[data-store]").count()) === 1 && (await row("s1").count()) === 1);
  await page.getByLabel("Search", { exact: true }).fill("");
  // No reload from here on: a marker on the window must survive.
  await page.evaluate(() => { window.__noReload = true; });
  await store.stop();
  store = null;
  await page.locator('tr[data-store="s1"][data-health="offline"]').waitFor({ timeout: 60000 });
  assert.match(await row("s1").innerText(), /not seen for/);
  assert.equal(await page.evaluate(() => window.__noReload), true, "updated without a reload");
  // Tablet portrait: still usable (the table scrolls inside its own region).
  await page.setViewportSize({ width: 768, height: 1024 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 1, `the page itself does not scroll sideways (${overflow} px)`);
  await screenshot(page, "hq-fleet-tablet");
  await page.setViewportSize({ width: 1280, height: 800 });
});

test("HQ console: a store's page tells its story, alert before the price", T, async () => {
  // Opened with the keyboard.
  await page.locator('tr[data-store="s1"] a').focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Store s1" }).waitFor();
  // The rollups are charted (uPlot draws on a canvas): checkouts per hour and telemetry.
  await until("two charts drawn", 20, async () => (await page.locator("#view .chart canvas").count()) === 2);
  assert.match(await page.locator("#view figcaption").first().innerText(), /Checkouts per hour \(times in Europe\/Rome\)/);
  const alert = page.locator('#story li[data-kind="alert"]');
  const price = page.locator('#story li[data-kind="authored"]').filter({ hasText: "Price for 1001 set to 99" });
  await alert.first().waitFor({ timeout: 20000 });
  await price.first().waitFor();
  assert.match(await alert.first().innerText(), /DOOR_OPEN raised on fridge-1/);
  const order = await page.evaluate(() => {
    const items = [...document.querySelectorAll("#story li")];
    return {
      alert: items.findIndex((li) => li.dataset.kind === "alert"),
      price: items.findIndex((li) => li.dataset.kind === "authored" && li.textContent.includes("Price for 1001")),
    };
  });
  assert.ok(order.alert >= 0 && order.alert < order.price, `alert first: ${JSON.stringify(order)}`);
  assert.match(await page.locator("#story-zone").innerText(), /Europe\/Rome/);
  assert.match(await alert.first().locator("time").innerText(), /Europe\/Rome/);
  await checkPage(page, "store");
  // Filtering by kind: only alerts.
  for (const label of ["Sent by HQ", "Sync milestones", "Device status"]) {
    await page.getByLabel(label).uncheck();
  }
  await until("no HQ items shown", 10, async () => (await page.locator('#story li[data-kind="authored"]').count()) === 0);
  assert.ok((await alert.count()) >= 1);
  // Back to the fleet with the link, and sign out: the sign-in page again.
  await page.getByRole("link", { name: "← Fleet" }).click();
  await page.getByRole("heading", { name: "Fleet" }).waitFor();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  const r = await page.evaluate(async () => (await fetch("/hq/v1/fleet")).status);
  assert.equal(r, 401);
});

// --- authoring, stores and groups, rollouts ---
test("HQ console: an operator authors a price, previews it in the store's zone and publishes; moves a store; pauses and resumes a rollout; starts one with the wave editor", T, async () => {
  await page.goto(hq.http + "/");
  await page.getByLabel("Name").fill("olga");
  await page.getByLabel("Password").fill(PW.olga);
  await page.getByLabel("Password").press("Enter");
  await page.locator("#who").filter({ hasText: "olga (operator)" }).waitFor({ timeout: 20000 });
  await page.getByRole("link", { name: "Author" }).click();
  await page.getByRole("heading", { name: "Author data" }).waitFor();
  await checkPage(page, "author");

  // Keyboard: the target radios move with the arrow keys; the groups list comes next in tab order.
  await page.getByLabel("All stores").focus();
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.getByLabel("Groups", { exact: true }).isChecked(), true);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "t-groups");
  await page.getByLabel("Groups that receive it").selectOption("pilot");
  // From "What", Tab walks the price fields in order; each has its label.
  await page.getByLabel("What").focus();
  const labelOfFocus = () => page.evaluate(() => document.activeElement.labels?.[0]?.textContent || document.activeElement.textContent);
  await page.keyboard.press("Tab");
  assert.equal(await labelOfFocus(), "SKU");
  await page.keyboard.type("1001");
  await page.keyboard.press("Tab");
  assert.match(await labelOfFocus(), /^Price in minor units/);
  await page.keyboard.type("-5");
  // HQ's refusal appears next to the field it names.
  const tomorrow = new Date(Date.now() + 86400000).toLocaleDateString("en-CA", { timeZone: TZ });
  await page.getByLabel("Starts", { exact: true }).fill(`${tomorrow}T08:00`);
  await page.getByRole("button", { name: "Preview" }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#err-price").filter({ hasText: /./ }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Publish" }).isDisabled(), true);
  await page.getByLabel(/^Price in minor units/).fill("89");
  await page.getByRole("button", { name: "Preview" }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Preview: 1 store affected" }).waitFor();
  const preview = await page.locator("#preview").innerText();
  assert.match(preview, /Store s1 \(group pilot\)/);
  assert.match(preview, /Times in Europe\/Rome/);
  assert.match(preview, new RegExp(`from ${tomorrow} 08:00:00\\+0[12]:00: 0\\.89`));
  assert.ok(!preview.includes("s2"), "s2 is in another group");
  await checkPage(page, "author-preview");
  const head = (await hq.admin("GET", "/hq/v1/stores")).body.head;
  await page.getByRole("button", { name: "Publish" }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#author-msg").filter({ hasText: "Published" }).waitFor();
  assert.equal((await hq.admin("GET", "/hq/v1/stores")).body.head, head + 1);
  // A CSV with a bad third line: refused, the line named, nothing applied.
  await page.getByLabel("CSV file").setInputFiles({ name: "prices.csv", mimeType: "text/csv",
    buffer: Buffer.from("id,sku,price,starts_at\npr-a,1001,129,2026-01-01T00:00:00\npr-b,1002,12.9,2026-01-01T00:00:00\n") });
  await page.getByRole("button", { name: "Upload" }).click();
  await page.locator("#csv-msg").filter({ hasText: /^Line 3 of prices\.csv: .*12\.9/ }).waitFor();
  assert.equal((await hq.admin("GET", "/hq/v1/stores")).body.head, head + 1);

  await page.getByRole("link", { name: "Stores and groups" }).click();
  await page.getByRole("heading", { name: "Stores and groups" }).waitFor();
  await checkPage(page, "groups");
  await page.getByLabel("Group of s2").fill("south");
  await page.getByLabel("Group of s2").press("Enter");
  await page.locator("#moved-s2").filter({ hasText: "Moved to south" }).waitFor();
  const stores = (await hq.admin("GET", "/hq/v1/stores")).body.stores;
  assert.equal(stores.find((s) => s.id === "s2").group, "south");

  // A release (uploaded by the admin) and a rollout of it: pilot first, then all.
  const form = new FormData();
  form.append("package", new Blob([fs.readFileSync(release.deb)]), "storebox.deb");
  form.append("manifest", new Blob([fs.readFileSync(release.manifest)]), "manifest.json");
  const up = await fetch(hq.http + "/hq/v1/releases", { method: "POST", headers: { Authorization: `Bearer ${ADMIN}` }, body: form });
  assert.equal(up.status, 201, await up.text());
  const ro = await hq.admin("POST", "/hq/v1/rollouts", {
    version: "9.9.9", waves: [{ groups: ["pilot"], min_success_percent: 100, soak_minutes: 0 }, { all: true, min_success_percent: 100, soak_minutes: 0 }],
    abort_failure_percent: 50, store_timeout_minutes: 600, urgent: false,
  });
  assert.equal(ro.status, 201, JSON.stringify(ro.body));

  await page.getByRole("link", { name: "Rollouts" }).click();
  await page.getByRole("heading", { name: "Releases and rollouts" }).waitFor();
  const link = page.getByRole("link", { name: ro.body.id });
  await link.waitFor();
  assert.match(await page.locator("#view").innerText(), /9\.9\.9/);
  await checkPage(page, "rollouts");
  await link.focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: `Rollout ${ro.body.id}` }).waitFor();
  await page.getByRole("heading", { name: /^Wave 1: pilot/ }).waitFor();
  await until("s1 assigned in wave 1", 20, async () => {
    await page.reload();
    await page.getByRole("heading", { name: `Rollout ${ro.body.id}` }).waitFor();
    return (await page.locator("#view table").first().innerText()).includes("s1");
  });
  await checkPage(page, "rollout");
  await page.getByRole("button", { name: "Pause" }).click();
  await page.locator("#rollout-state").filter({ hasText: "Paused" }).waitFor();
  assert.equal((await hq.admin("GET", `/hq/v1/rollouts/${ro.body.id}`)).body.state, "paused");
  await page.getByRole("button", { name: "Resume" }).click();
  await page.locator("#rollout-state").filter({ hasText: "Running" }).waitFor();
  assert.equal((await hq.admin("GET", `/hq/v1/rollouts/${ro.body.id}`)).body.state, "running");
  // The wave editor starts a new rollout (which supersedes the running one): south (where s2 is
  // now; a wave of a group without stores is refused), then all.
  await page.getByRole("link", { name: "All rollouts" }).click();
  await page.getByRole("heading", { name: "Start a rollout" }).waitFor();
  await page.getByLabel("Wave 1: groups (comma separated)").fill("south");
  await page.getByRole("button", { name: "Start rollout" }).click();
  await page.getByRole("heading", { name: /^Wave 1: south/ }).waitFor();
  await page.getByRole("heading", { name: /^Wave 2: all stores/ }).waitFor();
  const list = (await hq.admin("GET", "/hq/v1/rollouts")).body.rollouts;
  assert.deepEqual(list.map((r) => r.state), ["running", "aborted"]);
  assert.deepEqual(list[0].plan.waves[0].groups, ["south"]);
});

test("HQ console: the support desk lists a store's ticket and a reply reaches the store", T, async () => {
  // s1 was stopped by the fleet test: s2 opens the ticket.
  const s2 = new Box({
    STOREBOX_STORE__ID: "s2", STOREBOX_HQ__URL: hq.http, STOREBOX_HQ__TOKEN: s2Token,
    STOREBOX_HQ__RETRY_MAX_SECS: "1", STOREBOX_HQ__POLL_WAIT_SECS: "1",
  });
  s2.addDevice("lane-2", "lane");
  s2.addUser("lena", "staff", "lena-staff-pass-1");
  const staff = s2.addToken("lane-2", "staff");
  await s2.start();
  try {
    await deskReply(s2, staff);
  } finally {
    await s2.stop().catch(() => {});
  }
});

async function deskReply(s2, staff) {
  const t = await s2.api("POST", "/tickets", staff, { subject: "Scale 2 drifts", description: "reads 20 g heavy", category: "scale" });
  assert.equal(t.status, 201, JSON.stringify(t.body));
  const id = t.body.id;
  await until("the ticket reaches the desk", 60, async () =>
    (await hq.admin("GET", "/hq/v1/desk/tickets")).body.tickets.find((x) => x.id === id));
  // Whoever an earlier test left signed in, support signs in afresh.
  await page.context().clearCookies();
  await page.goto(hq.http + "/");
  await page.getByLabel("Name").fill("sam");
  await page.getByLabel("Password").fill(PW.sam);
  await page.getByLabel("Password").press("Enter");
  await page.locator("#who").filter({ hasText: "sam (support)" }).waitFor({ timeout: 20000 });
  await page.getByRole("link", { name: "Support desk" }).click();
  await page.getByRole("heading", { name: "Support desk" }).waitFor();
  const row = page.locator(`tr[data-ticket="${id}"]`);
  await row.waitFor({ timeout: 20000 });
  assert.match(await row.innerText(), /Open[\s\S]*s2[\s\S]*scale/);
  await checkPage(page, "desk");
  await row.locator("a").click();
  await page.getByRole("heading", { name: "Ticket: Scale 2 drifts" }).waitFor();
  assert.match(await page.locator("dl.facts").innerText(), /reads 20 g heavy/);
  await page.getByLabel("Reply to the store").fill("Recalibrate, then reboot");
  await page.getByRole("button", { name: "Send reply" }).click();
  await page.locator("#desk-status-line").filter({ hasText: "Reply sent" }).waitFor();
  await page.locator("#desk-history").filter({ hasText: "sam replied" }).waitFor();
  await checkPage(page, "desk ticket");
  await until("the reply reaches the store", 60, async () => {
    const r = await s2.api("GET", `/tickets/${id}`, staff);
    return r.body && (r.body.replies || []).some((x) => x.message === "Recalibrate, then reboot");
  });
  // Store staff see it in the store's own UI, on the ticket's page (a page of its own).
  const staffPage = await newPage(browser, s2);
  try {
    await signIn(staffPage, s2, "lena", "lena-staff-pass-1");
    await staffPage.goto(`${s2.http}/#/tickets/${encodeURIComponent(id)}`);
    await staffPage.locator("ol.replies").filter({ hasText: "Recalibrate, then reboot" }).waitFor({ timeout: 20000 });
    assert.deepEqual(staffPage.foreign, [], "the store UI requested something outside the store");
  } finally {
    await staffPage.context().close();
  }
}

test("HQ console: an admin sets desk routing and teams; guides are previewed as stores render them", T, async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("Name").fill("ada");
  await page.getByLabel("Password").fill(PW.ada);
  await page.getByLabel("Password").press("Enter");
  await page.locator("#who").filter({ hasText: "ada (admin)" }).waitFor({ timeout: 20000 });
  await page.getByRole("link", { name: "Desk routing" }).click();
  await page.getByRole("heading", { name: "Desk routing and teams" }).waitFor();
  await page.getByRole("button", { name: "Add team" }).click();
  await page.getByLabel("Name", { exact: true }).fill("scales");
  await page.getByLabel("Members (HQ user names, comma separated)").fill("sam");
  await page.getByLabel("On call (one of the members)").fill("sam");
  await page.getByRole("button", { name: "Save teams" }).click();
  await page.locator("#routing-status").filter({ hasText: "Teams saved." }).waitFor();
  await page.getByLabel("Team for scale").selectOption("scales");
  await page.getByRole("button", { name: "Save routing" }).click();
  await page.locator("#routing-status").filter({ hasText: "Routing saved." }).waitFor();
  const r = await hq.admin("GET", "/hq/v1/desk/routing");
  assert.deepEqual(r.body.routes, [{ category: "scale", team: "scales" }]);
  await checkPage(page, "desk routing");
  await page.getByRole("link", { name: "Guides" }).click();
  await page.getByRole("heading", { name: "Support guides" }).waitFor();
  await page.getByLabel("Text (Markdown)").fill("1. Close the door\n2. Call **facilities**\n<script>x()</script>");
  await page.getByRole("button", { name: "Preview" }).click();
  await page.locator("#guide-preview strong").filter({ hasText: "facilities" }).waitFor();
  assert.match(await page.locator("#guide-preview").innerText(), /<script>x\(\)<\/script>/, "raw HTML shown as text");
  await checkPage(page, "guides");
  // Published, it is listed (for all stores) and "Edit" loads it back into the form.
  await page.getByLabel("Guide id").fill("g-fridge");
  await page.getByLabel("Title").fill("Fridge too warm");
  await page.getByLabel("Alert codes (comma separated)").fill("temp_high");
  await page.getByRole("button", { name: "Publish guide" }).click();
  await page.locator("#guide-status").filter({ hasText: "Guide g-fridge published." }).waitFor();
  await page.reload();
  const row = page.locator("tr").filter({ hasText: "Fridge too warm" });
  await row.waitFor();
  assert.match(await row.innerText(), /g-fridge[\s\S]*temp_high[\s\S]*all stores/);
  await page.getByRole("button", { name: "Edit Fridge too warm" }).click();
  assert.equal(await page.getByLabel("Guide id").inputValue(), "g-fridge");
  assert.equal(await page.getByLabel("Alert codes (comma separated)").inputValue(), "temp_high");
  await checkPage(page, "guides with one published");
});
