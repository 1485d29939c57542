// A tiny headless-Chromium driver for tests, with no dependencies: the DevTools
// protocol over --remote-debugging-pipe (JSON messages separated by NUL bytes on fds 3/4).

import { spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

const NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"];

/** The Chromium executable: $CHROMIUM or $CHROME_PATH, else the first of NAMES on PATH; or null. */
export function findChromium() {
  const explicit = process.env.CHROMIUM || process.env.CHROME_PATH;
  const candidates = explicit ? [explicit] : (process.env.PATH || "").split(delimiter).flatMap((dir) => NAMES.map((n) => join(dir, n)));
  for (const file of candidates) {
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // next
    }
  }
  return null;
}

export class Browser {
  #proc;
  #out;
  #nextId = 1;
  #pending = new Map();
  #listeners = new Set();
  #profile;

  static async launch(executable = findChromium()) {
    if (!executable) throw new Error("Chromium not found (set $CHROMIUM)");
    const browser = new Browser();
    await browser.#start(executable);
    return browser;
  }

  async #start(executable) {
    this.#profile = mkdtempSync(join(tmpdir(), "streamrelay-chromium-"));
    const args = [
      "--headless",
      "--no-sandbox", // tests run as root in CI containers
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-extensions",
      "--disable-background-networking",
      "--no-first-run",
      "--no-default-browser-check",
      "--remote-debugging-pipe",
      `--user-data-dir=${this.#profile}`,
      "about:blank",
    ];
    this.#proc = spawn(executable, args, { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
    let stderr = "";
    this.#proc.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
    this.#out = this.#proc.stdio[3];
    const input = this.#proc.stdio[4];
    let buffer = "";
    input.setEncoding("utf8");
    input.on("data", (data) => {
      buffer += data;
      let end;
      while ((end = buffer.indexOf("\0")) >= 0) {
        const message = JSON.parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
        this.#dispatch(message);
      }
    });
    const exited = new Promise((resolve) => this.#proc.once("exit", resolve));
    exited.then(() => {
      for (const { reject } of this.#pending.values()) reject(new Error(`Chromium exited: ${stderr}`));
      this.#pending.clear();
    });
    this.exited = exited;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Chromium did not start within 30 s: ${stderr}`)), 30000);
    });
    try {
      await Promise.race([this.send("Browser.getVersion"), timeout]);
    } catch (err) {
      this.#proc.kill("SIGKILL");
      rmSync(this.#profile, { recursive: true, force: true });
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  #dispatch(message) {
    if (message.id !== undefined) {
      const call = this.#pending.get(message.id);
      this.#pending.delete(message.id);
      if (!call) return;
      if (message.error) call.reject(new Error(`${call.method}: ${message.error.message}`));
      else call.resolve(message.result);
      return;
    }
    for (const listener of this.#listeners) listener(message);
  }

  /** Sends one DevTools command; `sessionId` targets a page. */
  send(method, params = {}, sessionId) {
    const id = this.#nextId++;
    const message = { id, method, params };
    if (sessionId) message.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, method });
      this.#out.write(JSON.stringify(message) + "\0");
    });
  }

  /** Calls `listener(message)` for every event; returns a function that removes it. */
  on(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Opens a tab at `url` and waits for its load event. */
  async open(url) {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId);
    await this.send("Runtime.enable", {}, sessionId);
    await this.send("Page.enable", {}, sessionId);
    const loaded = page.next("Page.loadEventFired");
    await this.send("Page.navigate", { url }, sessionId);
    await loaded;
    return page;
  }

  async close() {
    try {
      await Promise.race([this.send("Browser.close"), new Promise((r) => setTimeout(r, 2000))]);
    } catch {
      // already gone
    }
    const exited = await Promise.race([this.exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 3000))]);
    if (!exited) {
      this.#proc.kill("SIGKILL");
      await this.exited;
    }
    rmSync(this.#profile, { recursive: true, force: true });
  }
}

export class Page {
  /** Uncaught exceptions and console.error calls of the page, as strings. */
  errors = [];

  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
    browser.on((m) => {
      if (m.sessionId !== sessionId) return;
      if (m.method === "Runtime.exceptionThrown") {
        const d = m.params.exceptionDetails;
        this.errors.push(d.exception?.description || d.text);
      } else if (m.method === "Runtime.consoleAPICalled" && m.params.type === "error") {
        this.errors.push(m.params.args.map((a) => a.value ?? a.description).join(" "));
      }
    });
  }

  /** Resolves with the next event `method` of this page. */
  next(method) {
    return new Promise((resolve) => {
      const off = this.browser.on((m) => {
        if (m.sessionId === this.sessionId && m.method === method) {
          off();
          resolve(m.params);
        }
      });
    });
  }

  /** Evaluates `fn` (a function or an expression string) in the page; returns its JSON value. */
  async eval(fn, ...args) {
    const expression = typeof fn === "function" ? `(${fn})(...${JSON.stringify(args)})` : fn;
    const { result, exceptionDetails } = await this.browser.send(
      "Runtime.evaluate",
      { expression, awaitPromise: true, returnByValue: true },
      this.sessionId,
    );
    if (exceptionDetails) throw new Error(`in page: ${exceptionDetails.exception?.description || exceptionDetails.text}`);
    return result.value;
  }

  /** Polls `fn` in the page until it returns something truthy; returns that. */
  async waitFor(fn, { timeout = 5000, what = String(fn) } = {}, ...args) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const value = await this.eval(fn, ...args);
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 15));
    }
  }
}
