//! The web portal over the real server, on both stores, as a browser
//! without a script engine sees it: sessions, CSRF and cross-origin
//! refusals, validation next to the field, the access workflow from
//! request to allocation, a job from the form to its output, the
//! operations page for operators only, errors as pages and never JSON.
//! (The same journey in a real Chromium is `e2e/portal.test.mjs`.)

use serde_json::json;

#[path = "common/openapi.rs"]
mod openapi;
#[path = "common/app.rs"]
#[macro_use]
mod app;
use app::*;

/// A browser: its session cookie, and forms posted from the server's own
/// origin (as a browser does).
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new(app: &App) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.url.clone(),
            cookie: None,
        }
    }

    async fn send(&mut self, rq: reqwest::RequestBuilder) -> Page {
        let rq = match &self.cookie {
            Some(c) => rq.header("cookie", format!("gf_session={c}")),
            None => rq,
        };
        let r = rq.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        if let Some(sc) = headers.get("set-cookie").and_then(|v| v.to_str().ok()) {
            let v = sc
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches("gf_session=");
            self.cookie = (!v.is_empty()).then(|| v.to_string());
        }
        let location = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.text().await.unwrap();
        Page {
            status,
            location,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let rq = self.http.get(format!("{}{path}", self.base));
        self.send(rq).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let rq = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", self.base.clone())
            .form(form);
        self.send(rq).await
    }

    async fn sign_in(&mut self, token: &str) {
        let p = self.post("/login", &[("token", token)]).await;
        assert_eq!(p.status, 303, "{}", p.body);
        assert_eq!(p.location.as_deref(), Some("/me"));
        let sc = p.headers["set-cookie"].to_str().unwrap();
        for flag in ["HttpOnly", "Secure", "SameSite=Lax"] {
            assert!(sc.contains(flag), "{sc}");
        }
    }
}

/// The value of the page's CSRF field.
fn csrf(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no csrf field in:\n{body}"))
        .to_string()
}

/// The text of the element with `id` (up to its closing tag).
fn text_of<'a>(body: &'a str, id: &str) -> &'a str {
    let from = body
        .split(&format!("id=\"{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no #{id} in:\n{body}"));
    let from = &from[from.find('>').unwrap() + 1..];
    &from[..from.find("</").unwrap()]
}

fn is_page(p: &Page) {
    let ct = p.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/html"), "{ct}: {}", p.body);
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(!p.body.contains("<script>"), "an inline script: {}", p.body);
    assert!(!p.body.contains("style=\""), "an inline style: {}", p.body);
}

async fn user(app: &App, name: &str, org: Option<&str>, role: &str) -> (String, i64) {
    let mut body = json!({"name": name, "role": role});
    if let Some(o) = org {
        body["org"] = json!(o);
    }
    let u = app.post("/api/v1/users", body).await;
    (
        u["token"].as_str().unwrap().to_string(),
        u["id"].as_i64().unwrap(),
    )
}

both_stores!(portal_journey);

async fn portal_journey(app: App) {
    // the public page: what the factory offers, no session needed
    let mut anon = Browser::new(&app);
    let home = anon.get("/").await;
    assert_eq!(home.status, 200);
    is_page(&home);
    assert!(home.body.contains("Accelerators free now"), "{}", home.body);
    assert!(home.body.contains("No call is open now."), "{}", home.body);
    // a page that needs a session sends to the sign-in page
    let me = anon.get("/me").await;
    assert_eq!((me.status, me.location.as_deref()), (303, Some("/login")));
    let bad = anon.post("/login", &[("token", "gf_not_a_token")]).await;
    assert_eq!(bad.status, 401);
    is_page(&bad);
    assert!(
        bad.body.contains("unknown, revoked or expired"),
        "{}",
        bad.body
    );

    // the workflow's people and a fast-lane call
    for (o, c) in [("acme", "sme"), ("rev", "public")] {
        app.post("/api/v1/orgs", json!({"name": o, "category": c}))
            .await;
    }
    let (alice, _) = user(&app, "alice", Some("acme"), "member").await;
    let (rita, rita_id) = user(&app, "rita", Some("rev"), "member").await;
    let (opal, _) = user(&app, "opal", None, "operator").await;
    let call = app
        .post(
            "/api/v1/calls",
            json!({"name": "fast-2027", "mode": "fast-lane", "categories": ["sme"], "envelope_gpu_hours": 10000.0}),
        )
        .await;
    let call_id = call["id"].as_i64().unwrap();
    app.post(
        &format!("/api/v1/calls/{call_id}/reviewers"),
        json!({"user": rita_id}),
    )
    .await;
    let home = anon.get("/").await;
    assert!(home.body.contains("fast-2027"), "{}", home.body);
    assert!(
        home.body.contains("Fast lane: one technical review"),
        "{}",
        home.body
    );

    // alice applies
    let mut a = Browser::new(&app);
    a.sign_in(&alice).await;
    let me = a.get("/me").await;
    assert_eq!(me.status, 200);
    is_page(&me);
    assert!(me.body.contains("acme"), "{}", me.body);
    let form = a.get("/requests/new").await;
    let token = csrf(&form.body);
    assert!(form.body.contains("fast-2027 (fast-lane)"), "{}", form.body);
    let call_s = call_id.to_string();
    // no CSRF token: refused, as a page
    let p = a
        .post(
            "/requests/new",
            &[
                ("call", &call_s),
                ("title", "x"),
                ("gpu_hours", "1"),
                ("days", "1"),
            ],
        )
        .await;
    assert_eq!(p.status, 403);
    is_page(&p);
    assert!(p.body.contains("This form has expired"), "{}", p.body);
    // another site's form: refused before it is read
    let rq = a
        .http
        .post(format!("{}/requests/new", a.base))
        .header("origin", "http://evil.example")
        .header(
            "cookie",
            format!("gf_session={}", a.cookie.clone().unwrap()),
        )
        .form(&[("csrf", token.as_str()), ("call", &call_s)]);
    let p = a.send(rq).await;
    assert_eq!(p.status, 403, "{}", p.body);
    // a field the form cannot read, then one the API refuses: each error
    // next to its field, the values kept
    let p = a
        .post(
            "/requests/new",
            &[
                ("csrf", &token),
                ("call", &call_s),
                ("title", "Protein LM"),
                ("project", "plm"),
                ("gpu_hours", "lots"),
                ("days", "90"),
                ("summary", "fine-tuning"),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    is_page(&p);
    assert_eq!(
        text_of(&p.body, "f-gpu_hours-err"),
        "gpu_hours: a number is needed"
    );
    assert!(p.body.contains("value=\"Protein LM\""), "{}", p.body);
    assert!(p.body.contains("aria-invalid=\"true\""), "{}", p.body);
    let p = a
        .post(
            "/requests/new",
            &[
                ("csrf", &token),
                ("call", &call_s),
                ("title", ""),
                ("project", "plm"),
                ("gpu_hours", "500"),
                ("days", "90"),
            ],
        )
        .await;
    assert_eq!(p.status, 422);
    assert!(
        text_of(&p.body, "f-title-err").starts_with("title:"),
        "{}",
        p.body
    );
    let p = a
        .post(
            "/requests/new",
            &[
                ("csrf", &token),
                ("call", &call_s),
                ("title", "Protein LM <b>"),
                ("project", "plm"),
                ("gpu_hours", "500"),
                ("days", "90"),
                ("summary", "fine-tuning"),
                ("gpu_hours_by_type", "h100=300, mi300x=200"),
                ("team", "alice"),
                ("residency", "EU only"),
                ("then", "submit"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let req_path = p.location.unwrap();
    let r = a.get(&req_path).await;
    assert_eq!(r.status, 200);
    for shown in [
        "h100: 300, mi300x: 200",
        "<dd>alice</dd>",
        "<dd>EU only</dd>",
    ] {
        assert!(r.body.contains(shown), "{shown}: {}", r.body);
    }
    // what a user typed is shown as text, never as markup
    assert!(
        r.body.contains("Protein LM &#60;b&#62;") && !r.body.contains("Protein LM <b>"),
        "{}",
        r.body
    );
    assert!(
        ["submitted", "in_review"].contains(&text_of(&r.body, "request-state")),
        "{}",
        r.body
    );

    // rita reviews it from her queue; one technical review decides
    let mut rv = Browser::new(&app);
    rv.sign_in(&rita).await;
    let q = rv.get("/reviews").await;
    assert!(
        q.body.contains(&format!("href=\"{req_path}\"")),
        "{}",
        q.body
    );
    let page = rv.get(&req_path).await;
    assert!(page.body.contains("Your review"), "{}", page.body);
    let t = csrf(&page.body);
    // a question and its answer, in the request's comments
    for (who, tok, text) in [
        (&mut rv, &t, "Which tokenizer?"),
        (&mut a, &token, "BPE, 50k <i>merges</i>"),
    ] {
        let p = who
            .post(
                &format!("{req_path}/comment"),
                &[("csrf", tok), ("text", text)],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
    }
    let page = rv.get(&req_path).await;
    let comments = page.body.split("id=\"comments\"").nth(1).unwrap_or("");
    assert!(
        comments.contains("<strong>rita</strong> (reviewer)")
            && comments.contains("<strong>alice</strong> (applicant)")
            && comments.contains("BPE, 50k &#60;i&#62;merges&#60;/i&#62;"),
        "{}",
        page.body
    );
    let p = rv
        .post(
            &format!("{req_path}/comment"),
            &[("csrf", &t), ("text", " ")],
        )
        .await;
    assert_eq!(p.status, 422, "an empty comment: {}", p.body);
    is_page(&p);
    let p = rv
        .post(
            &format!("{req_path}/review"),
            &[
                ("csrf", &t),
                ("score", "4"),
                ("verdict", "approve"),
                ("comment", "sound plan"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let r = a.get(&req_path).await;
    assert_eq!(text_of(&r.body, "request-state"), "approved", "{}", r.body);
    // alice cannot review, and the refusal is a page
    let p = a
        .post(
            &format!("{req_path}/review"),
            &[("csrf", &token), ("score", "5"), ("verdict", "approve")],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    is_page(&p);

    // the allocation is on her dashboard; she runs a job on it
    let me = a.get("/me").await;
    assert!(me.body.contains("<meter"), "{}", me.body);
    assert!(
        me.body.contains("<li>plm: alice</li>"),
        "the approval's project: {}",
        me.body
    );
    let allocs = app.get("/api/v1/allocations?org=acme").await;
    let alloc = allocs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["org"] == "acme")
        .unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let form = a.get("/jobs/new").await;
    assert!(
        form.body.contains(&format!("value=\"{alloc}\"")),
        "{}",
        form.body
    );
    let p = a
        .post(
            "/jobs/new",
            &[
                ("csrf", &token),
                ("allocation", &alloc),
                ("gpus", "0"),
                ("command", "echo hi"),
                ("time_limit_min", "5"),
            ],
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(
        text_of(&p.body, "f-gpus-err").starts_with("gpus:"),
        "{}",
        p.body
    );
    // a share of an accelerator asks for a slice: this fleet has none, and
    // the page says so with the slices that would hold it
    let p = a
        .post(
            "/jobs/new",
            &[
                ("csrf", &token),
                ("allocation", &alloc),
                ("gpus", "0.25"),
                ("command", "echo hi"),
                ("time_limit_min", "5"),
            ],
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(
        p.body
            .contains("no slice of this fleet holds 0.25 of an accelerator")
            && p.body.contains("h100: 2g.20gb"),
        "{}",
        p.body
    );
    assert!(p.body.contains("name=\"gpu_profile\""), "{}", p.body);
    let p = a
        .post(
            "/jobs/new",
            &[
                ("csrf", &token),
                ("allocation", &alloc),
                ("gpus", "1"),
                ("command", "echo hello-from-the-portal"),
                ("name", "first"),
                ("time_limit_min", "5"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let job_path = p.location.unwrap();
    let id: i64 = job_path.rsplit('/').next().unwrap().parse().unwrap();
    app.wait_state(id, &["completed"], 30).await;
    let j = a.get(&job_path).await;
    is_page(&j);
    assert_eq!(text_of(&j.body, "job-state"), "completed");
    assert!(j.body.contains("hello-from-the-portal"), "{}", j.body);
    let log = a
        .get(&format!("{job_path}/log?stream=stdout&offset=6"))
        .await;
    assert_eq!(log.body, "from-the-portal\n");
    assert_eq!(log.headers["x-job-state"], "completed");
    let jobs = a.get("/jobs").await;
    assert!(
        jobs.body.contains(&format!("href=\"{job_path}\"")),
        "{}",
        jobs.body
    );

    // a job behind a running one: its estimated start is the running
    // one's end at its time limit (the scheduler run forward)
    let alloc_id: i64 = alloc.parse().unwrap();
    let long = |gpus: i64| json!({"allocation": alloc_id, "gpus": gpus, "type": "h100", "command": ["sleep", "60"], "time_limit_s": 600});
    let (s, first) = app.submit(&alice, long(4)).await;
    assert_eq!(s, 201, "{first}");
    let first_id = first["id"].as_i64().unwrap();
    let running = app.wait_state(first_id, &["running"], 30).await;
    let (s, behind) = app.submit(&alice, long(2)).await;
    assert_eq!(s, 201, "{behind}");
    let behind_id = behind["id"].as_i64().unwrap();
    let (s, e) = app
        .call(
            "GET",
            &format!("/api/v1/jobs/{behind_id}/estimate"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, 200, "{e}");
    let ms =
        |v: &serde_json::Value| gigafab_core::time::parse_rfc3339(v.as_str().unwrap()).unwrap();
    let expect = ms(&running["started_at"]) + 600_000;
    let got = ms(&e["estimated_start"]);
    assert!((got - expect).abs() <= 1000, "{e} vs {running}");
    let page = a.get(&format!("/jobs/{behind_id}")).await;
    assert!(page.body.contains("Estimated start"), "{}", page.body);
    // an array's task that waits for the running job: both said on its page
    let mut held = long(1);
    held["dependency"] = json!(format!("afterok:{first_id}"));
    held["array"] = json!("0-1");
    let (s, h) = app.submit(&alice, held).await;
    assert_eq!(s, 201, "{h}");
    let h_id = h["id"].as_i64().unwrap();
    let page = a.get(&format!("/jobs/{}", h_id + 1)).await;
    assert!(page.body.contains("Waits for"), "{}", page.body);
    assert!(
        page.body.contains(&format!("afterok:{first_id}")),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(&format!("{h_id}</a>_1")),
        "{}",
        page.body
    );
    // cancelled from their pages
    for id in [behind_id, first_id] {
        let p = a
            .post(&format!("/jobs/{id}/cancel"), &[("csrf", &token)])
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
        app.wait_state(id, &["cancelled"], 30).await;
    }
    let (_, e) = app
        .call(
            "GET",
            &format!("/api/v1/jobs/{behind_id}/estimate"),
            Some(&alice),
            None,
        )
        .await;
    assert!(e["estimated_start"].is_null(), "{e}");

    // the operations page: operators only
    let p = a.get("/admin").await;
    assert_eq!(p.status, 403);
    is_page(&p);
    let mut op = Browser::new(&app);
    op.sign_in(&opal).await;
    let adm = op.get("/admin").await;
    assert_eq!(adm.status, 200, "{}", adm.body);
    assert!(adm.body.contains("Audit log"), "{}", adm.body);
    assert!(
        adm.body
            .contains(&format!("request {}", req_path.rsplit('/').next().unwrap()))
            || adm.body.contains("review"),
        "{}",
        adm.body
    );
    let t = csrf(&adm.body);
    let node = adm
        .body
        .split("action=\"/admin/nodes/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(adm.body.contains("alice (member)"), "members: {}", adm.body);
    let p = op
        .post(
            &format!("/admin/nodes/{node}/drain"),
            &[("csrf", &t), ("reason", "fan failure")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    // an operator opens a call from the page; a refusal is said there
    let bad = op
        .post(
            "/admin/calls",
            &[
                ("csrf", &t),
                ("name", "q2"),
                ("mode", "fast-lane"),
                ("categories", "sme, pirates"),
                ("envelope_gpu_hours", "500"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    is_page(&bad);
    assert!(bad.body.contains("categories: `pirates`"), "{}", bad.body);
    let p = op
        .post(
            "/admin/calls",
            &[
                ("csrf", &t),
                ("name", "q2"),
                ("mode", "large-scale"),
                ("categories", "sme, academia"),
                ("countries", "FR, DE"),
                ("types", "h100"),
                ("envelope_gpu_hours", "80000"),
                ("closes_at", "2099-03-31"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let calls = app.get("/api/v1/calls").await;
    let q2 = calls["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "q2")
        .unwrap()
        .clone();
    assert_eq!(
        (
            &q2["mode"],
            &q2["countries"],
            &q2["types"],
            &q2["envelope_gpu_hours"]
        ),
        (
            &json!("large-scale"),
            &json!(["FR", "DE"]),
            &json!(["h100"]),
            &json!(80000.0)
        )
    );
    // a node name that is no node name: a page, not a crash
    let p = op
        .post("/admin/nodes/a%20b%3Fx/drain", &[("csrf", &t)])
        .await;
    assert_eq!(p.status, 404, "{}", p.body);
    is_page(&p);
    let fleet = app.get("/api/v1/fleet").await;
    let n = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node.as_str())
        .unwrap();
    assert_eq!(
        (&n["state"], &n["reason"]),
        (&json!("drained"), &json!("fan failure"))
    );
    let adm = op.get("/admin").await;
    assert!(adm.body.contains("drained: fan failure"), "{}", adm.body);
    assert_eq!(adm.status, 200);

    // signing out ends the session; a revoked token ends it too
    let p = a.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(p.status, 303);
    assert!(a.cookie.is_none());
    assert_eq!(a.get("/me").await.location.as_deref(), Some("/login"));
    let tokens = app.call("GET", "/api/v1/tokens", Some(&rita), None).await.1;
    let tid = tokens["items"][0]["id"].as_i64().unwrap();
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{tid}"),
            Some(&rita),
            None,
        )
        .await;
    assert!(s == 200 || s == 204, "{s}");
    let p = rv.get("/reviews").await;
    assert_eq!(p.location.as_deref(), Some("/login?expired=1"));
    let p = rv.get("/login?expired=1").await;
    assert!(p.body.contains("Your session has ended"), "{}", p.body);
}

/// Sign-in through an OpenID Connect provider, what the server alone
/// decides (the whole flow against a real provider is in
/// `e2e/portal.test.mjs`): identities are linked to one user each, a
/// provider that cannot be reached or a callback nobody started is a page
/// that says so, and no session comes of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sign_in_refusals() {
    let mut app = App::spawn(Db::Sqlite, "oidc").await.unwrap();
    // without a provider: no such sign-in
    let mut b = Browser::new(&app);
    let p = b.get("/login").await;
    assert!(!p.body.contains("/login/oidc"), "{}", p.body);
    let p = b.get("/login/oidc").await;
    assert_eq!(p.status, 404);
    is_page(&p);
    // identities: one user each, and a sane identifier
    app.post("/api/v1/orgs", json!({"name": "acme", "category": "sme"}))
        .await;
    let u = app
        .post(
            "/api/v1/users",
            json!({"name": "alice", "org": "acme", "oidc_subject": "a1b2"}),
        )
        .await;
    assert_eq!(u["oidc_subject"], "a1b2");
    let (s, e) = app
        .call(
            "POST",
            "/api/v1/users",
            Some(TOKEN),
            Some(json!({"name": "eve", "org": "acme", "oidc_subject": "a1b2"})),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (409, Some("conflict")), "{e}");
    let (s, e) = app
        .call(
            "POST",
            "/api/v1/users",
            Some(TOKEN),
            Some(json!({"name": "eve", "org": "acme", "oidc_subject": "a\nb"})),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["message"].as_str().unwrap().starts_with("oidc_subject:"),
        "{e}"
    );
    // a provider that does not answer (a closed port)
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let idp = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    app.kill9();
    app.extra = vec![
        "--oidc-issuer".into(),
        idp,
        "--oidc-client-id".into(),
        "gigafab".into(),
    ];
    app.start(None);
    let mut b = Browser::new(&app);
    let p = b.get("/login").await;
    assert!(p.body.contains("href=\"/login/oidc\""), "{}", p.body);
    let p = b.get("/login/oidc").await;
    assert_eq!(p.status, 502, "{}", p.body);
    is_page(&p);
    assert!(p.body.contains("cannot be reached now"), "{}", p.body);
    // a callback that no sign-in here started, and a provider's refusal
    let p = b.get("/login/oidc/callback?state=forged&code=stolen").await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(p.body.contains("expired"), "{}", p.body);
    let p = b
        .get("/login/oidc/callback?error=access_denied&error_description=%3Cscript%3Ex")
        .await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(
        p.body.contains("access_denied: &#60;script&#62;x"),
        "{}",
        p.body
    );
    assert!(b.cookie.is_none(), "no session came of it");
    // the flags are checked at start: a provider over plain HTTP elsewhere
    // than the loopback is refused
    app.kill9();
    app.extra = vec![
        "--oidc-issuer".into(),
        "http://idp.example".into(),
        "--oidc-client-id".into(),
        "gigafab".into(),
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args([
            "serve",
            "--single-user",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&app.dir)
        .args(&app.extra)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--oidc-issuer: `http://idp.example` must be https://"),
        "{err}"
    );
}

/// One token signed in over and over keeps at most 16 sessions, its own
/// oldest going first: other users' sessions stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_per_token() {
    let app = App::spawn(Db::Sqlite, "sessions").await.unwrap();
    app.post("/api/v1/orgs", json!({"name": "acme", "category": "sme"}))
        .await;
    let (other, _) = user(&app, "other", Some("acme"), "member").await;
    let mut keep = Browser::new(&app);
    keep.sign_in(&other).await;
    let mut first = Browser::new(&app);
    first.sign_in(TOKEN).await;
    let mut last = Browser::new(&app);
    for _ in 0..16 {
        last = Browser::new(&app);
        last.sign_in(TOKEN).await;
    }
    assert_eq!(
        first.get("/me").await.location.as_deref(),
        Some("/login?expired=1")
    );
    assert_eq!(last.get("/me").await.status, 200);
    assert_eq!(keep.get("/me").await.status, 200);
}

/// The catalog's pages: a gated entry's card to all, a request for it, the
/// owner's grant from the page, then its versions and files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_pages() {
    let app = App::spawn(Db::Sqlite, "portal-catalog").await.unwrap();
    for (o, c) in [("acme", "sme"), ("beta", "startup")] {
        app.post("/api/v1/orgs", json!({"name": o, "category": c}))
            .await;
    }
    let (olga, _) = user(&app, "olga", Some("acme"), "owner").await;
    let (bob, _) = user(&app, "bob", Some("beta"), "member").await;
    app.post(
        "/api/v1/catalog",
        json!({"name": "cells", "kind": "dataset", "licence": "CC-BY-4.0", "org": "acme",
               "access": "gated", "card": {"description": "Cell <b>images</b>", "limitations": "No patients"}}),
    )
    .await;
    let d = app.dir.join("cells");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("README"), "cells\n").unwrap();
    let v = app
        .post(
            "/api/v1/catalog/cells/versions",
            json!({"path": d.display().to_string(), "aliases": ["latest"]}),
        )
        .await;
    assert_eq!(v["version"], 1, "{v}");

    let mut b = Browser::new(&app);
    b.sign_in(&bob).await;
    let l = b.get("/catalog").await;
    assert_eq!(l.status, 200);
    is_page(&l);
    assert!(
        l.body.contains("href=\"/catalog/cells\"") && l.body.contains("not readable by you"),
        "{}",
        l.body
    );
    let e = b.get("/catalog/cells").await;
    assert!(
        e.body.contains("Cell &#60;b&#62;images&#60;/b&#62;"),
        "{}",
        e.body
    );
    assert!(
        !e.body.contains("sha256"),
        "no files for one who cannot read it"
    );
    let t = csrf(&e.body);
    let p = b
        .post("/catalog/cells/request", &[("csrf", &t), ("reason", " ")])
        .await;
    assert_eq!(p.status, 422, "an empty reason: {}", p.body);
    is_page(&p);
    let p = b
        .post(
            "/catalog/cells/request",
            &[("csrf", &t), ("reason", "benchmarks")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let p = b
        .post("/catalog/cells/grant", &[("csrf", &t), ("org", "beta")])
        .await;
    assert_eq!(
        p.status, 403,
        "a member of another organisation grants nothing"
    );
    is_page(&p);

    let mut o = Browser::new(&app);
    o.sign_in(&olga).await;
    let e = o.get("/catalog/cells").await;
    assert!(
        e.body.contains("<strong>beta</strong> (bob): benchmarks"),
        "{}",
        e.body
    );
    let t = csrf(&e.body);
    let p = o
        .post(
            "/catalog/cells/grant",
            &[("csrf", &t), ("org", "beta"), ("days", "30")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);

    let e = b.get("/catalog/cells").await;
    assert_eq!(text_of(&e.body, "versions"), "1");
    assert!(e.body.contains("<td>README</td><td>6</td>"), "{}", e.body);
    for bad in ["/catalog/nope", "/catalog/..%2Fetc"] {
        let p = b.get(bad).await;
        assert_eq!(p.status, 404, "{bad}");
        is_page(&p);
    }
}
