//! Signing in and out: the token form, OpenID Connect, the session cookie.

use super::*;

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct Login<'a> {
    c: Chrome<'a>,
    expired: bool,
    bad: bool,
    /// The site's provider is configured.
    oidc: bool,
    /// Why a sign-in through the provider failed.
    problem: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    expired: Option<String>,
}

pub(super) async fn login_page(State(p): State<PortalState>, q: Query<LoginQuery>) -> Response {
    page(&Login {
        c: chrome(&p, None),
        expired: q.expired.is_some(),
        bad: false,
        oidc: p.oidc.is_some(),
        problem: None,
    })
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

pub(super) async fn login(State(p): State<PortalState>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim().to_string();
    if token.len() > 200 || p.shared.principal(&token).is_none() {
        let mut r = page(&Login {
            c: chrome(&p, None),
            expired: false,
            bad: true,
            oidc: p.oidc.is_some(),
            problem: None,
        });
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    signed_in(&p, token, None)
}

/// Opens a session for `token` and sends the browser to its dashboard.
pub(super) fn signed_in(p: &PortalState, token: String, minted: Option<i64>) -> Response {
    let (id, _) = p.open_session(token, minted);
    // Lax, not Strict: the browser comes back from the identity provider,
    // another site, and must bring the cookie along to the dashboard
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
        SESSION_IDLE.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/me")).into_response()
}

pub(super) fn sign_in_failed(p: &PortalState, status: StatusCode, problem: String) -> Response {
    let mut r = page(&Login {
        c: chrome(p, None),
        expired: false,
        bad: false,
        oidc: p.oidc.is_some(),
        problem: Some(problem),
    });
    *r.status_mut() = status;
    r
}

/// The cookie that binds a sign-in through the provider to the browser
/// that started it.
const OIDC_COOKIE: &str = "gf_oidc";

/// Sends the browser to the site's identity provider.
pub(super) async fn oidc_start(State(p): State<PortalState>) -> Response {
    let Some(o) = &p.oidc else {
        return sign_in_failed(
            &p,
            StatusCode::NOT_FOUND,
            p.words.get("login.nooidc").into(),
        );
    };
    match o.start().await {
        Ok((url, browser)) => {
            let c = format!(
                "{OIDC_COOKIE}={browser}; Path=/login/oidc; HttpOnly; Secure; SameSite=Lax; Max-Age=600"
            );
            ([(header::SET_COOKIE, c)], Redirect::to(&url)).into_response()
        }
        Err(e) => sign_in_failed(&p, StatusCode::BAD_GATEWAY, e.0),
    }
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back: the identity it vouches for
/// signs in as the user linked to it.
pub(super) async fn oidc_callback(
    State(p): State<PortalState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(o) = &p.oidc else {
        return sign_in_failed(
            &p,
            StatusCode::NOT_FOUND,
            p.words.get("login.nooidc").into(),
        );
    };
    if let Some(e) = q.error {
        let said = format!("{e}: {}", q.error_description.unwrap_or_default());
        return sign_in_failed(
            &p,
            StatusCode::UNAUTHORIZED,
            format!(
                "{} {}",
                p.words.get("login.refused"),
                gigafab_core::time::excerpt(&said, 200)
            ),
        );
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return sign_in_failed(
            &p,
            StatusCode::BAD_REQUEST,
            p.words.get("login.again").into(),
        );
    };
    let browser = super::super::cookie_named(&headers, OIDC_COOKIE).unwrap_or_default();
    let sub = match o.finish(&state, &code, &browser).await {
        Ok(sub) => sub,
        Err(e) => return sign_in_failed(&p, StatusCode::UNAUTHORIZED, e.0),
    };
    let who = p
        .shared
        .tenancy
        .user_by_subject(&sub)
        .and_then(|u| p.shared.tenancy.user_principal(u));
    let Some(who) = who else {
        return sign_in_failed(
            &p,
            StatusCode::FORBIDDEN,
            format!(
                "{} {}",
                p.words.get("login.unlinked"),
                gigafab_core::time::excerpt(&sub, 255)
            ),
        );
    };
    let req = gigafab_api::CreateToken {
        user: None,
        expires_in_days: Some(SESSION_IDLE.as_secs_f64() / 86_400.0),
    };
    let shared = p.shared.clone();
    let made =
        tokio::spawn(async move { crate::tenancy::create_token(&shared, &who, req).await }).await;
    match made {
        Ok(Ok(t)) => signed_in(&p, t.token, Some(t.id.0)),
        Ok(Err(e)) => sign_in_failed(&p, e.status, e.message),
        Err(e) => sign_in_failed(&p, StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
}

pub(super) async fn logout(
    State(p): State<PortalState>,
    s: Signed,
    headers: axum::http::HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !form_ok(&s, &f.csrf) {
        return csrf_refused(&p, &s);
    }
    if let Some(id) = super::super::cookie(&headers)
        && let Some(minted) = p.close_session(&id)
    {
        // the token made at an OpenID Connect sign-in ends with its session
        let shared = p.shared.clone();
        let who = s.who.clone();
        let _ =
            tokio::spawn(async move { crate::tenancy::revoke_token(&shared, &who, minted).await })
                .await;
    }
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0");
    ([(header::SET_COOKIE, gone)], Redirect::to("/")).into_response()
}
