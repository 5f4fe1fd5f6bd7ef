// gigafab's portal end to end in a real headless Chromium: an applicant
// signs in, applies to a fast-lane call, a reviewer approves, the
// applicant runs a job on the new allocation and watches its output come,
// an operator finds it all in the audit log. The applicant signs in
// through a real OpenID Connect provider started here (`oidc-provider`,
// its development login and consent pages). Each main page is saved as a
// screenshot under e2e/artifacts/ and checked with axe-core (no serious or
// critical violation).
//
// Needs: the gigafab binary (GIGAFAB_BIN, default ../target/debug/gigafab),
// Chromium (CHROMIUM, default /usr/bin/chromium), `npm ci` in e2e/.
// Run: cd e2e && npm test

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import Provider from "oidc-provider";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.GIGAFAB_BIN || join(here, "../target/debug/gigafab");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ADMIN = "gf_e2e_bootstrap_token_0123456789abcdef";
const ARTIFACTS = join(here, "artifacts");
// jupyter-lab of a venv with PyPI's jupyterlab (.ci/jupyter.sh)
const JUPYTER = process.env.GIGAFAB_TEST_JUPYTER || "";
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

let server, dir, base, browser, idp;

/** A port free now (for a server whose address must be known first). */
async function freePort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

/** The site's OpenID Connect provider, with gigafab as a public client
 *  (PKCE) sent back to `callback`; any login is an identity whose `sub` is
 *  that login. */
async function startProvider(callback) {
  idp = createServer();
  await new Promise((r) => idp.listen(0, "127.0.0.1", r));
  const issuer = `http://127.0.0.1:${idp.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: "gigafab",
        token_endpoint_auth_method: "none",
        redirect_uris: [callback],
        grant_types: ["authorization_code"],
        response_types: ["code"],
      },
    ],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  });
  idp.on("request", provider.callback());
  return issuer;
}

/** Starts `gigafab serve` with a fresh store, signing in through the
 *  provider too; resolves its URL. */
async function startServer() {
  dir = mkdtempSync(join(tmpdir(), "gigafab-e2e-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const issuer = await startProvider(`${url}/login/oidc/callback`);
  // JupyterLab from PyPI (.ci/jupyter.sh), as a site's app file says
  const extra = [];
  if (JUPYTER) {
    const apps = join(dir, "apps");
    mkdirSync(apps, { recursive: true });
    const root = process.getuid && process.getuid() === 0 ? ', "--allow-root"' : "";
    writeFileSync(join(apps, "jupyter.toml"), [
      'title = "JupyterLab"',
      `command = [${JSON.stringify(JUPYTER)}, "--no-browser"${root}, "--ip=127.0.0.1", "--port={port}", "--ServerApp.base_url={base}", "--ServerApp.allow_origin=*"]`,
      'env = { JUPYTER_TOKEN = "{token}" }',
      'ready = "{base}api/status"',
      'auth_header = "token {token}"',
      "[idle]",
      'check = "app"',
      'path = "{base}api/status"',
      'field = "last_activity"',
      "",
    ].join("\n"));
    extra.push("--apps-dir", apps);
  }
  server = spawn(
    BIN,
    ["serve", "--single-user", "--listen", `127.0.0.1:${port}`, "--data-dir", dir, "--tick-ms", "100", "--poll-ms", "50",
     "--oidc-issuer", issuer, "--oidc-client-id", "gigafab", "--public-url", url, ...extra],
    { env: { ...process.env, GIGAFAB_BOOTSTRAP_TOKEN: ADMIN, RUST_LOG: "warn" }, stdio: ["ignore", "ignore", "pipe"] },
  );
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error("server did not start:\n" + seen)), 30000);
    server.stderr.on("data", (d) => {
      seen += d.toString();
      const m = seen.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    server.on("exit", (code) => reject(new Error(`server exited (${code}):\n${seen}`)));
  });
}

/** The API, as the admin or another token. */
async function api(method, path, body, token = ADMIN) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** axe-core on the page: no serious or critical violation. */
async function accessible(page, name) {
  await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`),
    [],
    `${name}: accessibility violations`,
  );
}

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  await accessible(page, name);
}

/** A browser context signed in through the provider as identity `sub`. */
async function signedInAt(sub) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, bypassCSP: true });
  const page = await ctx.newPage();
  page.setDefaultTimeout(10000);
  await page.goto(base + "/login");
  await page.getByRole("link", { name: "Sign in with your institution" }).click();
  // the provider's own pages: its login, then its consent
  await page.locator("input[name=login]").fill(sub);
  await page.locator("input[name=password]").fill("any");
  await page.locator("button[type=submit]").click();
  await page.locator("button[type=submit]", { hasText: "Continue" }).click();
  return page;
}

/** A browser context (its own cookies) signed in with `token`. */
async function signedIn(token) {
  // bypassCSP only lets the test inject axe-core; the pages' own policy
  // is checked by the Rust tests
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, bypassCSP: true });
  const page = await ctx.newPage();
  page.setDefaultTimeout(10000);
  await page.goto(base + "/login");
  await page.getByLabel("Access token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(base + "/me");
  return page;
}

before(async () => {
  rmSync(ARTIFACTS, { recursive: true, force: true });
  mkdirSync(ARTIFACTS, { recursive: true });
  base = await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGKILL");
  idp?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("an applicant gets an allocation through a fast-lane call and runs a job on it", async () => {
  await api("POST", "/api/v1/orgs", { name: "acme", category: "startup" });
  await api("POST", "/api/v1/orgs", { name: "eval", category: "public" });
  await api("POST", "/api/v1/users", { name: "alice", org: "acme", role: "member", oidc_subject: "alice@idp" });
  const rita = await api("POST", "/api/v1/users", { name: "rita", org: "eval", role: "member" });
  const opal = (await api("POST", "/api/v1/users", { name: "opal", role: "operator" })).token;
  const call = await api("POST", "/api/v1/calls", {
    name: "fast-lane-2027",
    mode: "fast-lane",
    categories: ["startup", "sme"],
    envelope_gpu_hours: 20000,
  });
  await api("POST", `/api/v1/calls/${call.id}/reviewers`, { user: rita.id });

  // the public page, before signing in
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, bypassCSP: true });
  const pub = await ctx.newPage();
  pub.setDefaultTimeout(10000);
  await pub.goto(base + "/");
  await assert.doesNotReject(pub.getByRole("rowheader", { name: "fast-lane-2027" }).waitFor());
  await shot(pub, "01-home");
  // and on a phone
  await pub.setViewportSize({ width: 390, height: 844 });
  await shot(pub, "01-home-phone");
  await ctx.close();

  // an identity the provider vouches for but no gigafab user has is told
  // what to pass on, and is not signed in
  const m = await signedInAt("mallory@idp");
  await assert.doesNotReject(m.locator("#signin-problem").waitFor());
  assert.match(await m.locator("#signin-problem").textContent(), /not linked.*mallory@idp/);
  await shot(m, "02-signin-unlinked");

  // alice signs in through the provider and applies; a missing number is
  // shown next to its field
  const a = await signedInAt("alice@idp");
  await a.waitForURL(base + "/me");
  assert.match(await a.locator("h1").textContent(), /acme/);
  await shot(a, "02-dashboard");
  await a.getByRole("link", { name: "New access request" }).click();
  await a.getByLabel("Title").fill("Protein language model");
  await a.getByLabel("Project it creates").fill("plm");
  await a.getByLabel("Duration, days").fill("90");
  await a.getByRole("button", { name: "Submit for review" }).click();
  const err = a.locator("#f-gpu_hours-err");
  await assert.doesNotReject(err.waitFor());
  assert.match(await err.textContent(), /gpu_hours/);
  assert.equal(await a.getByLabel("GPU-hours", { exact: true }).getAttribute("aria-invalid"), "true");
  await shot(a, "03-request-invalid");
  await a.getByLabel("GPU-hours", { exact: true }).fill("1500");
  await a.getByLabel("Team (optional)").fill("alice");
  await a.getByLabel("Data residency needs (optional)").fill("EU only");
  await a.getByLabel("Summary").fill("Fine-tuning a protein language model on public data.");
  await a.getByRole("button", { name: "Submit for review" }).click();
  await a.waitForURL(/\/requests\/\d+$/);
  const requestUrl = a.url();
  assert.equal(await a.locator("#request-state").textContent(), "submitted");
  await assert.doesNotReject(a.getByText("EU only").waitFor());
  await shot(a, "04-request");

  // rita reviews it from her queue and approves
  const r = await signedIn(rita.token);
  await r.getByRole("link", { name: "Reviews" }).click();
  await r.getByRole("link", { name: "Protein language model" }).click();
  // a question in the request's comments first
  await r.getByLabel("Your comment (applicants and reviewers read it)").fill("Which tokenizer?");
  await r.getByRole("button", { name: "Add comment" }).click();
  await r.waitForURL(requestUrl);
  assert.match(await r.locator("#comments").textContent(), /rita \(reviewer\): Which tokenizer\?/);
  await r.getByLabel("Score (1 poor to 5 excellent)").selectOption("4");
  await r.getByLabel("Approve").check();
  await r.getByLabel("Comment", { exact: true }).fill("A sound plan.");
  await shot(r, "05-review");
  await r.getByRole("button", { name: "Send the review" }).click();
  await r.waitForURL(requestUrl);
  assert.equal(await r.locator("#request-state").textContent(), "approved");

  // alice runs a job on the allocation the approval granted, and watches
  // its output arrive while it runs
  await a.goto(base + "/me");
  await assert.doesNotReject(a.locator("meter").first().waitFor());
  await a.getByRole("link", { name: "Jobs" }).click();
  await a.getByRole("link", { name: "Submit a job" }).click();
  await a.getByLabel("Accelerators").fill("1");
  await a.getByLabel("Command").fill("sh -c 'echo first; sleep 3; echo second'");
  await a.getByLabel("Name (optional)").fill("hello");
  await shot(a, "06-job-form");
  await a.getByRole("button", { name: "Submit" }).click();
  await a.waitForURL(/\/jobs\/\d+$/);
  // the first line shows while the job still runs
  await assert.doesNotReject(a.locator("#stdout", { hasText: "first" }).waitFor({ timeout: 10000 }));
  assert.notEqual(await a.locator("#job-state").textContent(), "completed");
  await assert.doesNotReject(
    a.locator("#job-state", { hasText: "completed" }).waitFor({ timeout: 30000 }),
  );
  await assert.doesNotReject(a.locator("#stdout", { hasText: "second" }).waitFor({ timeout: 10000 }));
  assert.match(await a.locator("#stdout").textContent(), /first\nsecond/);
  // the page followed the job's end: no cancel button left
  await assert.doesNotReject(a.locator("#cancel-form").waitFor({ state: "detached" }));
  await shot(a, "07-job");
  // its files, as its account sees them: its output file, opened as text
  await a.locator("#job-files").click();
  await a.waitForURL(/\/files\/\d+$/);
  await a.getByRole("link", { name: "stdout.log", exact: true }).click();
  await assert.doesNotReject(a.locator("#file-view", { hasText: "second" }).waitFor());
  await shot(a, "07-job-files");
  // the organisation's project space: a file uploaded from the browser,
  // listed and opened as text
  await a.getByRole("link", { name: "Project space" }).click();
  await a.waitForURL(base + "/space");
  assert.match(await a.locator("#space-dir").textContent(), /spaces\//);
  await a.getByLabel(/^File \(at most 64 MiB/).setInputFiles({
    name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("shared with the team\n"),
  });
  await a.getByRole("button", { name: "Upload" }).click();
  await a.waitForURL(/\/space\?path=/);
  await a.getByRole("link", { name: "notes.txt", exact: true }).click();
  await assert.doesNotReject(a.locator("#file-view", { hasText: "shared with the team" }).waitFor());
  await shot(a, "17-project-space");

  // the operator sees it in the audit log
  const o = await signedIn(opal);
  await o.getByRole("link", { name: "Operations" }).click();
  await assert.doesNotReject(o.getByRole("heading", { name: "Audit log" }).waitFor());
  const audit = await o.locator("table").last().textContent();
  assert.match(audit, /rita/);
  assert.match(audit, /alice/);
  await shot(o, "08-operations");

  // the catalog: a gated dataset's card; rita's organisation asks for it
  await api("POST", "/api/v1/catalog", {
    name: "cells", kind: "dataset", licence: "CC-BY-4.0", org: "acme", access: "gated",
    residency: [], card: { description: "Cell images", intended_use: "Segmentation", limitations: "No patient data" },
  });
  await r.getByRole("link", { name: "Catalog" }).click();
  await shot(r, "09-catalog");
  await r.getByRole("link", { name: "cells" }).click();
  await r.getByLabel("Why your organisation needs it").fill("Benchmarking segmentation models.");
  await r.getByRole("button", { name: "Request access" }).click();
  await r.waitForURL(base + "/catalog/cells");
  await shot(r, "10-catalog-entry");
});

test("a member sees her organisation's model endpoint, makes a key and sets its replicas", async () => {
  await api("POST", "/api/v1/orgs", { name: "zeta", category: "sme" });
  const zoe = (await api("POST", "/api/v1/users", { name: "zoe", org: "zeta", role: "member" })).token;
  const alloc = await api("POST", "/api/v1/allocations", { org: "zeta", gpu_hours: 50 });
  // a model of zeta's, registered in place by the admin
  const modelDir = join(dir, "models", "tiny");
  mkdirSync(modelDir, { recursive: true });
  writeFileSync(join(modelDir, "model.gguf"), "not really a model");
  await api("POST", "/api/v1/catalog", { name: "tiny", kind: "model", licence: "MIT", org: "zeta" });
  await api("POST", "/api/v1/catalog/tiny/versions", { path: modelDir });
  // an endpoint that scales to zero: nothing runs until a request comes
  await api("POST", "/api/v1/endpoints", {
    name: "chat", model: "tiny@1", allocation: alloc.id, command: ["true"], max_replicas: 2,
  }, zoe);

  const z = await signedIn(zoe);
  await z.getByRole("link", { name: "Endpoints" }).click();
  await z.waitForURL(base + "/endpoints");
  const row = z.locator("#endpoint-chat");
  assert.match(await row.textContent(), /model:tiny@1/);
  assert.match(await row.textContent(), /\/v1\/endpoints\/chat/);
  assert.match(await row.textContent(), /0\/0 \(0\.\.2\)/);
  await shot(z, "11-endpoints");
  // a key, shown once, that the gateway takes
  await z.getByRole("button", { name: "Create an API key chat" }).click();
  const key = (await z.locator("#new-key").textContent()).trim();
  assert.match(key, /^gfk_/);
  await shot(z, "12-endpoint-key");
  const models = await fetch(`${base}/v1/endpoints/chat/models`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(models.status, 200);
  assert.equal((await models.json()).data[0].id, "chat");
  // the page never shows it again
  await z.goto(base + "/endpoints");
  assert.equal(await z.locator("#new-key").count(), 0);
  assert.ok(!(await z.content()).includes(key));
  // new bounds
  await z.getByLabel("Max", { exact: true }).fill("3");
  await z.getByRole("button", { name: "Set replicas chat" }).click();
  await z.waitForURL(base + "/endpoints");
  assert.match(await z.locator("#endpoint-chat").textContent(), /\(0\.\.3\)/);
  // a refusal is shown on the page, not as raw JSON
  await z.getByLabel("Min", { exact: true }).fill("9");
  await z.getByRole("button", { name: "Set replicas chat" }).click();
  assert.match(await z.locator("[role=alert]").textContent(), /min_replicas/);
});

test("a member opens JupyterLab from the portal, runs a cell on her accelerator, extends it and sees it culled when idle",
  { skip: !JUPYTER && "needs JupyterLab from PyPI: eval \"$(bash .ci/jupyter.sh)\"" }, async () => {
  await api("POST", "/api/v1/orgs", { name: "nbk", category: "academia" });
  const nora = (await api("POST", "/api/v1/users", { name: "nora", org: "nbk", role: "member" })).token;
  await api("POST", "/api/v1/allocations", { org: "nbk", gpu_hours: 50 });
  const n = await signedIn(nora);
  await n.getByRole("link", { name: "Sessions" }).click();
  await n.waitForURL(base + "/interactive");
  await shot(n, "13-sessions-empty");
  await n.getByLabel("App").selectOption("jupyter");
  await n.getByLabel("Time limit, hours").fill("1");
  // idle for 20 s: culled soon after the notebook is closed
  await n.getByLabel("Ended when idle for, minutes").fill("0.34");
  await n.getByRole("button", { name: "Start" }).click();
  await n.waitForURL(base + "/interactive");
  const row = n.locator("tr[id^=session-]").first();
  const id = (await row.getAttribute("id")).replace("session-", "");
  // ready once JupyterLab answers
  const until = async (re, ms) => {
    const t0 = Date.now();
    while (!re.test(await row.locator(".session-state").textContent())) {
      assert.ok(Date.now() - t0 < ms, `session ${id}: ${await row.textContent()}`);
      await new Promise((r) => setTimeout(r, 1000));
      await n.reload();
    }
  };
  await until(/^ready/, 90000);
  const endsBefore = await row.locator("td").nth(3).textContent();
  await n.getByRole("button", { name: `Extend by 1 h ${id}` }).click();
  await n.waitForURL(base + "/interactive");
  assert.notEqual(await row.locator("td").nth(3).textContent(), endsBefore);
  await shot(n, "14-sessions");
  // the notebook, through the portal's origin, signed in as nora
  const lab = await n.context().newPage();
  lab.setDefaultTimeout(90000);
  await lab.goto(`${base}/sessions/${id}/lab`);
  await lab.locator(".jp-LauncherCard[data-category=Notebook]").first().click();
  // JupyterLab drops a cell run before its kernel has connected: wait for it
  await lab.locator("#jp-main-statusbar").getByText(/ipykernel\) \| Idle/).waitFor();
  const editor = lab.locator(".jp-Notebook .jp-Cell .cm-content").first();
  await editor.click();
  await lab.keyboard.type('import os; print("cuda=" + os.environ.get("CUDA_VISIBLE_DEVICES", "none"))');
  await lab.keyboard.press("Shift+Enter");
  const out = lab.locator(".jp-OutputArea-output", { hasText: "cuda=" }).first();
  await out.waitFor().catch(async (e) => {
    // what the page showed instead, for the log
    await lab.screenshot({ path: join(ARTIFACTS, "15-jupyterlab-failed.png"), fullPage: true }).catch(() => {});
    const dialog = await lab.locator(".jp-Dialog").allTextContents().catch(() => []);
    const status = await lab.locator(".jp-StatusBar-Widget, #jp-main-statusbar").allTextContents().catch(() => []);
    throw new Error(`${e.message}\ndialogs: ${JSON.stringify(dialog)}\nstatus bar: ${JSON.stringify(status)}\ncell: ${JSON.stringify(await editor.textContent().catch(() => ""))}`);
  });
  assert.match(await out.textContent(), /cuda=\d/);
  await lab.screenshot({ path: join(ARTIFACTS, "15-jupyterlab.png"), fullPage: true });
  // another member of the organisation cannot open it
  const other = (await api("POST", "/api/v1/users", { name: "otto", org: "nbk", role: "member" })).token;
  const res = await fetch(`${base}/sessions/${id}/lab`, { headers: { authorization: `Bearer ${other}` } });
  assert.equal(res.status, 404);
  // closed and left alone: culled
  await lab.close();
  await until(/^ended.*culled: idle/, 120000);
  await shot(n, "16-session-culled");
});
