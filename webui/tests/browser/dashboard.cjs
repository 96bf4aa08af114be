// The browser half of webui/tests/browser.rs and of the VM harness's
// dashboard check (tests/vm/harness.py): drives Debian's Chromium through
// playwright-core against the real gazelle-webui at $BASE. Every step
// throws with what it expected and what it saw; screenshots go to
// $ARTIFACTS. Run by `cargo test` or the harness (see either for the
// environment). Optional:
//   NEW_IP, NEW_PORT  add an instance there and see it serve (unset: the
//                     step is skipped, and says so)
//   EXPECT_FAILOVER=1 the bond page must list a failover (the harness cut
//                     a link before)
//   TIMEOUT_SCALE     multiplies every wait (a VM under TCG is slow)
"use strict";

const { chromium } = require("playwright-core");
const { spawn, execFileSync } = require("child_process");
const path = require("path");

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through cargo test)`);
  return v;
};
const BASE = env("BASE");
const ARTIFACTS = env("ARTIFACTS");
const NS = env("NS");
const STACK_IP = env("STACK_IP");
const REDIS_PORT = env("REDIS_PORT");
const NEW_IP = process.env.NEW_IP || "";
const NEW_PORT = process.env.NEW_PORT || "";
const EXPECT_FAILOVER = process.env.EXPECT_FAILOVER === "1";
const SCALE = Number(process.env.TIMEOUT_SCALE || 1);
const PASSWORD = env("PASSWORD");
const VIEWER_PASSWORD = "viewer-password-42";

const consoleErrors = [];
let step = "start";
const log = (m) => console.log(`browser: ${m}`);

function check(ok, what) {
  if (!ok) throw new Error(`${step}: ${what}`);
}

async function until(what, timeoutMs, fn) {
  timeoutMs *= SCALE;
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${step}: ${what} (not within ${timeoutMs} ms; last: ${last})`);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

function watch(page, who) {
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(`${who} ${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => consoleErrors.push(`${who} ${page.url()}: ${e.message}`));
}

// A page answered with an error status on purpose (a wrong password, a
// refused form) makes Chromium log "Failed to load resource" (the event
// may come late); each such answer forgives one such line, no more.
const expectedStatuses = [];
async function expectingStatus(status, fn) {
  expectedStatuses.push(status);
  await fn();
}

function unexpectedConsoleErrors() {
  const left = [...consoleErrors];
  for (const status of expectedStatuses) {
    const i = left.findIndex((e) => e.includes(`Failed to load resource: the server responded with a status of ${status} `));
    if (i >= 0) left.splice(i, 1);
  }
  return left;
}

// Labels on every visible input, a page title of ours.
async function accessible(page) {
  const title = await page.title();
  check(/ · gazelle appliance$/.test(title), `page title ${JSON.stringify(title)} does not name the page`);
  const unlabelled = await page.$$eval("input:not([type=hidden]), select, textarea", (els) =>
    els.filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")).map((e) => e.outerHTML)
  );
  check(unlabelled.length === 0, `inputs without a label: ${unlabelled.join(" ")}`);
}

async function go(page, p) {
  const r = await page.goto(BASE + p);
  check(r.ok(), `GET ${p} answered ${r.status()}`);
  await accessible(page);
}

async function chartValue(page, kind) {
  return page.$eval(`figure[data-series=${kind}]`, (f) => ({
    points: Number(f.dataset.points || 0),
    last: Number(f.dataset.last || 0),
  }));
}

function traffic() {
  const p = spawn("ip", ["netns", "exec", NS, "redis-benchmark", "-h", STACK_IP, "-p", REDIS_PORT,
    "-q", "-l", "-c", "4", "-t", "set,get"], { stdio: "ignore" });
  return p;
}

function redisPing(ip, port) {
  try {
    return execFileSync("ip", ["netns", "exec", NS, "redis-cli", "-h", ip, "-p", port, "PING"],
      { timeout: 5000 }).toString().trim();
  } catch (e) {
    return `error: ${e.message}`;
  }
}

async function bondMiimon(page) {
  await go(page, "/bond");
  return page.inputValue("#bond_miimon");
}

async function submitBond(page, fields) {
  await go(page, "/bond");
  for (const [k, v] of Object.entries(fields)) await page.fill(`#${k}`, v);
  await Promise.all([page.waitForLoadState("load"), page.click("form[action='/bond'] button[type=submit]")]);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  ctx.setDefaultTimeout(30000 * SCALE);
  const page = await ctx.newPage();
  watch(page, "admin");
  let load = null;
  try {
    step = "login";
    let r = await page.goto(BASE + "/dashboard");
    check(page.url().startsWith(BASE + "/login"), `without a session /dashboard goes to the login page, not ${page.url()}`);
    await accessible(page);
    await shot(page, "login");
    await page.fill("#username", "admin");
    await page.fill("#password", "not the password");
    await expectingStatus(401, () =>
      Promise.all([page.waitForLoadState("load"), page.click("button[type=submit]")]));
    check((await page.textContent(".error")).length > 0, "a wrong password says so");
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL(BASE + "/dashboard"), page.click("button[type=submit]")]);
    log("logged in");

    step = "dashboard while traffic flows";
    load = traffic();
    await accessible(page);
    const moving = await until("the throughput chart shows traffic", 30000, async () => {
      const v = await chartValue(page, "bps");
      return v.points >= 3 && v.last > 0 ? v : null;
    });
    log(`throughput chart: ${moving.points} points, last ${moving.last} bit/s`);
    const conns = await chartValue(page, "conns");
    check(conns.last > 0, `the connections chart shows redis-benchmark's connections, not ${conns.last}`);
    const latency = await until("the receive-latency chart shows reads", 15000, async () => {
      const v = await chartValue(page, "latency");
      return v.points >= 3 && v.last > 0 ? v : null;
    });
    const latencyText = await page.textContent("figure[data-series=latency] .legend");
    check(/p50: [\d.]+ (µs|ms)/.test(latencyText) && /p99: /.test(latencyText), `latency legend with units: ${latencyText}`);
    log(`latency chart: ${latency.points} points, ${latencyText.trim()}`);
    // The tables: a fresh page has rates and every number a unit.
    await page.reload();
    const portRate = await until("the ports table shows a receive rate", 15000, async () => {
      const t = await page.textContent("#ports td[data-live=port-rx-pps]");
      if (/^0 pkt\/s$/.test(t.trim())) { await page.reload(); return null; }
      return t;
    });
    check(/pkt\/s$/.test(portRate.trim()), `port rate has its unit: ${portRate}`);
    const instancesTable = await page.textContent("#instances");
    check(/redis/.test(instancesTable) && /running/.test(instancesTable), `the instance is listed running: ${instancesTable}`);
    check(/bit\/s/.test(instancesTable), "instance rates in bit/s");
    const dispatch = await page.textContent("#dispatch");
    check(/tcp/.test(dispatch) && /frames\/s/.test(dispatch), "dispatch counters with rates");
    check(/\d+ pages?|\d/.test(await page.textContent("#hugepages")), "hugepages shown");
    await until("charts have a few points", 15000, async () => (await chartValue(page, "pps")).points >= 5);
    await shot(page, "dashboard");
    await page.setViewportSize({ width: 390, height: 844 });
    await shot(page, "dashboard-phone");
    await page.setViewportSize({ width: 1280, height: 900 });

    step = "dashboard when traffic stops";
    load.kill("SIGTERM");
    load = null;
    await until("the packet-rate chart falls to nothing", 20000, async () => (await chartValue(page, "pps")).last < 50);
    await until("the latency chart falls to nothing (no reads)", 20000, async () => (await chartValue(page, "latency")).last === 0);
    log("rates fell when the traffic stopped");

    step = "bond: the failover history";
    await go(page, "/bond");
    check((await page.$("#bond-history h2")) !== null, "the bond page has a failover history");
    if (EXPECT_FAILOVER) {
      const rows = await page.$$eval("#failovers tbody tr", (trs) =>
        trs.map((tr) => Array.from(tr.cells, (c) => c.textContent.trim()).join(" | ")));
      check(rows.length > 0, `a failover is listed: ${await page.textContent("#bond-history")}`);
      check(rows.every((r) => /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/.test(r)), `failovers have their time: ${rows}`);
      log(`failover history: ${rows[0]}`);
    }
    await shot(page, "bond");

    step = "bond: an invalid MTU is refused next to its field";
    const mtuBefore = await (async () => { await go(page, "/bond"); return page.inputValue("#bond_mtu"); })();
    await expectingStatus(422, () => submitBond(page, { bond_mtu: "9000" }));
    const mtuError = await page.textContent("#bond_mtu-error");
    check(/bond_mtu/.test(mtuError) || /9000/.test(mtuError), `the MTU's message names it: ${mtuError}`);
    check((await page.getAttribute("#bond_mtu", "aria-invalid")) === "true", "the MTU input is marked invalid");
    await shot(page, "bond-invalid");

    step = "bond: miimon 50, confirmed";
    await submitBond(page, { bond_mtu: mtuBefore, bond_miimon: "50" });
    check(/pending confirmation/.test(await page.textContent(".flash")), "the flash says it is pending");
    await page.waitForSelector("#pending-banner");
    await accessible(page);
    await shot(page, "bond-pending");
    const left = await page.textContent("#countdown");
    check(/^\d+ s$/.test(left.trim()), `the countdown counts seconds: ${left}`);
    await Promise.all([page.waitForLoadState("load"), page.click("#pending-banner form[action='/pending/confirm'] button")]);
    check(/Confirmed/.test(await page.textContent(".flash")), "confirmed");
    check((await page.$("#pending-banner")) === null, "no banner once confirmed");
    check((await bondMiimon(page)) === "50", "the bond form shows miimon 50");
    await until("ltran runs miimon 50", 30000, async () => {
      await go(page, "/bond");
      return /every 50 ms/.test(await page.textContent("#bond-live"));
    });
    log("bond change confirmed");

    step = "bond: miimon 70, left to roll back";
    await submitBond(page, { bond_miimon: "70" });
    await page.waitForSelector("#pending-banner");
    await go(page, "/dashboard");
    check((await page.$("#pending-banner")) !== null, "the banner is on every page (dashboard)");
    // The countdown runs out; the page reloads itself and then says what
    // the rollback restored.
    await until("the page says the change was rolled back", 120000, async () => {
      const b = await page.$("#rollback-banner");
      return b ? b : null;
    });
    const rolled = await page.textContent("#rollback-banner");
    check(/Rolled back/.test(rolled) && /not confirmed in time/.test(rolled), `the rollback is told: ${rolled}`);
    await page.click("#rollback-banner summary");
    const restored = await page.textContent("#rollback-banner pre");
    check(/-bond_miimon = 70/.test(restored) && /\+bond_miimon = 50/.test(restored), `the restored diff: ${restored}`);
    await shot(page, "rolled-back");
    check((await bondMiimon(page)) === "50", "the config is back on miimon 50");
    log("rollback seen on the page");

    step = "instances: add one and see it serve";
    if (!NEW_IP) {
      log("skipped adding an instance: no NEW_IP given");
    } else {
      await until("no change pending or applying", 60000, async () => {
        await go(page, "/instances");
        return (await page.$("#pending-banner")) === null && (await page.$("#applying-banner")) === null;
      });
      await page.fill("#name", "redis2");
      await page.fill("#command", ["redis-server", "--port", NEW_PORT, "--save", "", "--appendonly", "no", "--protected-mode", "no"].join("\n"));
      await page.fill("#host_addr", NEW_IP);
      await page.selectOption("#based_on", "redis");
      await Promise.all([page.waitForLoadState("load"), page.click("#add-instance button[type=submit]")]);
      const added = await page.textContent(".flash").catch(() => "");
      check(/redis2 added/.test(added), `the instance was added: ${added} ${await page.textContent("main")}`);
      if (await page.$("#pending-banner form[action='/pending/confirm'] button")) {
        await Promise.all([page.waitForLoadState("load"), page.click("#pending-banner form[action='/pending/confirm'] button")]);
        check(/Confirmed/.test(await page.textContent(".flash")), "the new instance confirmed");
      }
      await until("redis2 runs", 90000, async () => {
        await go(page, "/instances");
        const row = await page.textContent("#instance-list");
        return /redis2[\s\S]*running/.test(row);
      });
      const pong = await until("redis2 answers a kernel client", 60000, async () => redisPing(NEW_IP, NEW_PORT) === "PONG");
      check(pong, "PONG");
      await shot(page, "instances");
      await go(page, "/instances/redis2");
      check(/running/.test(await page.textContent("#instance-state")), "its page says running");
      check((await page.$("#connections")) !== null && (await page.$("#latency")) !== null, "connections and latency tables");
      await shot(page, "instance");
      await go(page, "/instances/redis?state=LISTEN");
      const listen = await page.textContent("#connections tbody");
      check(/LISTEN/.test(listen) && !/ESTAB/.test(listen), `the connection filter keeps LISTEN only: ${listen}`);
      log("instance added and serving");
    }

    step = "accounts: a token shown once, a viewer made";
    await go(page, "/account");
    await page.fill("#token_name", "browser-test");
    await Promise.all([page.waitForLoadState("load"), page.click("form[action='/account/tokens'] button")]);
    const secret = (await page.textContent("#new-token-secret")).trim();
    check(secret.length > 20, `the token is shown: ${secret}`);
    await go(page, "/account");
    check(!(await page.content()).includes(secret), "the token is not shown again");
    await page.fill("#user_name", "watcher");
    await page.fill("#user_password", VIEWER_PASSWORD);
    await Promise.all([page.waitForLoadState("load"), page.click("form[action='/account/users'] button")]);
    check(/watcher/.test(await page.textContent("#users")), "the viewer account is listed");
    await shot(page, "account");

    step = "the other pages";
    for (const [p, name] of [["/devices", "devices"], ["/subnets", "subnets"], ["/config", "config"], ["/audit", "audit"]]) {
      await go(page, p);
      await shot(page, name);
    }
    const audit = await page.textContent("#audit");
    for (const a of ["bond.update", "config.confirm", "config.pending-ended", "token.create", "account.create"]
      .concat(NEW_IP ? ["instance.create"] : [])) {
      check(audit.includes(a), `the audit log has ${a}`);
    }

    step = "viewer: no buttons that change things, and the server refuses";
    const vctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    vctx.setDefaultTimeout(30000 * SCALE);
    const vpage = await vctx.newPage();
    watch(vpage, "viewer");
    await vpage.goto(BASE + "/login");
    await vpage.fill("#username", "watcher");
    await vpage.fill("#password", VIEWER_PASSWORD);
    await Promise.all([vpage.waitForURL(BASE + "/dashboard"), vpage.click("button[type=submit]")]);
    for (const p of ["/dashboard", "/devices", "/bond", "/subnets", "/instances", "/instances/redis", "/config", "/account", "/audit"]) {
      const r = await vpage.goto(BASE + p);
      check(r.ok(), `viewer GET ${p}: ${r.status()}`);
      await accessible(vpage);
      const buttons = await vpage.$$eval("form[method=post]", (fs) =>
        fs.filter((f) => !["/logout", "/account/password"].includes(f.getAttribute("action")))
          .map((f) => f.getAttribute("action")));
      check(buttons.length === 0, `viewer sees forms that change things on ${p}: ${buttons}`);
    }
    await vpage.goto(BASE + "/bond");
    await shot(vpage, "viewer-bond");
    const csrf = await vpage.getAttribute("form[action='/logout'] input[name=csrf]", "value");
    const forged = await vctx.request.post(BASE + "/bond", {
      form: { csrf, bond_miimon: "60" },
      headers: { Origin: BASE },
    });
    check(forged.status() === 403, `a viewer's bond change is refused with 403, not ${forged.status()}`);
    const forgedApi = await vctx.request.patch(BASE + "/api/v1/bond", {
      data: { miimon_ms: 60 },
      headers: { Origin: BASE, "X-CSRF-Token": csrf },
    });
    check(forgedApi.status() === 403, `and through the API: ${forgedApi.status()}`);
    check((await bondMiimon(page)) === "50", "nothing changed");
    log("viewer refused");

    step = "logout";
    await Promise.all([page.waitForURL(/\/login/), page.click("form.logout button")]);
    await page.goto(BASE + "/dashboard");
    check(page.url().startsWith(BASE + "/login"), "logged out: back to the login page");

    step = "console";
    const errors = unexpectedConsoleErrors();
    check(errors.length === 0, `console errors: ${errors.join("\n")}`);
    log("all steps passed");
  } catch (e) {
    await shot(page, "failure").catch(() => {});
    throw e;
  } finally {
    if (load) load.kill("SIGTERM");
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`browser: FAILED: ${e.stack || e}`);
  process.exit(1);
});
