// Test harness: starts the real `storebox serve` binary on 127.0.0.1 port 0 with a temporary data
// dir, runs its CLI for users/tokens/devices/imports, connects real MQTT devices, and drives
// Debian's Chromium through playwright-core. Every wait is bounded.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import mqtt from "mqtt";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "../..");
export const BIN = process.env.STOREBOX_BIN || path.join(ROOT, "target/debug/storebox");
export const SHOTS = path.join(ROOT, "target/ui-screenshots");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const AXE_SOURCE = fs.readFileSync(path.join(here, "node_modules/axe-core/axe.min.js"), "utf8");

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]);
}

/** A running storebox. */
export class Box {
  constructor(env = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "storebox-ui-"));
    this.env = {
      ...process.env,
      STOREBOX_STORAGE__DATA_DIR: this.dir,
      STOREBOX_HTTP__LISTEN: "127.0.0.1:0",
      STOREBOX_MQTT__LISTEN: "127.0.0.1:0",
      STOREBOX_LOG__LEVEL: "info",
      NO_COLOR: "1",
      ...env,
    };
    this.stderr = "";
  }

  cli(args, input) {
    const r = spawnSync(BIN, args, { env: this.env, input: input ?? "", encoding: "utf8", timeout: 30000 });
    if (r.status !== 0) throw new Error(`storebox ${args.join(" ")} failed (${r.status}): ${r.stdout} ${r.stderr}`);
    return r.stdout;
  }

  addUser(name, role, password) {
    this.cli(["user", "add", name, "--role", role, "--password-stdin"], `${password}\n`);
  }

  addToken(name, role) {
    return this.cli(["token", "add", name, "--role", role]).trim().split("\n").pop().trim();
  }

  addDevice(id, kind) {
    const out = this.cli(["device", "add", id, "--kind", kind]);
    const m = out.match(/password:\s*(\S+)/);
    if (!m) throw new Error(`no password in: ${out}`);
    return m[1];
  }

  importEvents(events) {
    const file = path.join(this.dir, "import.jsonl");
    fs.writeFileSync(file, events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    this.cli(["import", file]);
  }

  async start() {
    if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing: run cargo build (or cargo test) first`);
    this.proc = spawn(BIN, ["serve"], { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stderr.on("data", (d) => { this.stderr += d.toString(); });
    const line = await withTimeout(new Promise((resolve, reject) => {
      let buf = "";
      this.proc.stdout.on("data", (d) => {
        buf += d.toString();
        const l = buf.split("\n").find((x) => x.startsWith("storebox ready "));
        if (l) resolve(l);
      });
      this.proc.on("exit", (code) => reject(new Error(`storebox exited (${code}) before ready: ${this.stderr}`)));
    }), 20000, "storebox ready line");
    this.http = line.match(/http=(\S+)/)[1];
    this.mqttPort = Number(line.match(/mqtt=mqtt:\/\/[^\s]*:(\d+)/)[1]);
    return this;
  }

  async api(method, p, token, body) {
    const res = await withTimeout(fetch(this.http + "/api/v1" + p, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    }), 10000, `${method} ${p}`);
    return { status: res.status, body: await res.json().catch(() => null) };
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      await withTimeout(exited, 10000, "storebox exit").catch(() => this.proc.kill("SIGKILL"));
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A device connection over MQTT 3.1.1 (no automatic reconnect). */
export async function connectDevice(box, id, password) {
  const client = await withTimeout(mqtt.connectAsync(`mqtt://127.0.0.1:${box.mqttPort}`, {
    clientId: id, username: id, password, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, keepalive: 30,
  }), 8000, `MQTT connect ${id}`);
  return client;
}

/** Drops the TCP connection without DISCONNECT, like a device losing power. */
export function vanish(client) {
  client.stream.destroy();
  client.end(true);
}

export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (or run .ci/run)`);
  // playwright gives every launch a fresh temporary user-data-dir (and removes it on close).
  const browser = await withTimeout(chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  }), 40000, "chromium launch");
  return browser;
}

/**
 * A browser context on the box: tablet-sized (10-inch landscape), English, with every request
 * checked to stay on the box (no CDN, fonts or scripts from elsewhere) and console errors kept.
 */
export async function newPage(browser, box) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "en-US", deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.foreign = [];
  page.errors = [];
  const origin = new URL(box.http).origin;
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith("data:")) page.foreign.push(u);
  });
  page.on("console", (m) => { if (m.type() === "error") page.errors.push(m.text()); });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  return page;
}

export async function signIn(page, box, user, password) {
  await page.goto(box.http + "/");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#who").filter({ hasText: user }).waitFor();
}

/** Runs axe-core on the page; returns the serious and critical violations. */
export async function axe(page) {
  // page.evaluate is not subject to the page's Content-Security-Policy (an injected <script> is).
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")})`);
}

export async function screenshot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Store-local "YYYY-MM-DDTHH:MM" of an instant, for datetime-local inputs. */
export function storeLocal(date, timeZone) {
  const p = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).formatToParts(date).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
}

export const money = (minor, currency = "EUR") =>
  new Intl.NumberFormat("en-US", { style: "currency", currency }).format(minor / 100);
