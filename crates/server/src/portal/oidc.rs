//! Sign-in through the site's OpenID Connect provider: the
//! authorization-code flow with PKCE (`openidconnect`), the ID token's
//! signature, issuer, audience and nonce checked, and its `sub` claim
//! (opaque and permanent, as MyAccessID's) mapped to the gigafab user
//! created with that `oidc_subject`. A sign-in makes a token for that
//! user that lasts as long as a session, revoked at sign-out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest,
    HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};

/// The site's provider, as `serve` is told of it.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer (`https://...`; `http://` only on the loopback).
    pub issuer: String,
    pub client_id: String,
    /// None: a public client (PKCE alone).
    pub client_secret: Option<String>,
    /// This server's address as browsers reach it (`https://portal.example`):
    /// the provider sends them back to `{public_url}/login/oidc/callback`.
    pub public_url: String,
}

impl OidcConfig {
    /// Checks the addresses (a clear error for `serve` to print).
    pub fn check(&self) -> Result<(), String> {
        let url = |what: &str, u: &str| -> Result<(), String> {
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| u.starts_with(p));
            if !(u.starts_with("https://") || loopback) {
                return Err(format!(
                    "{what}: `{u}` must be https:// (http:// only on the loopback)"
                ));
            }
            Ok(())
        };
        url("--oidc-issuer", &self.issuer)?;
        url("--public-url", &self.public_url)?;
        IssuerUrl::new(self.issuer.clone()).map_err(|e| format!("--oidc-issuer: {e}"))?;
        RedirectUrl::new(self.redirect_url()).map_err(|e| format!("--public-url: {e}"))?;
        if self.client_id.is_empty() {
            return Err("--oidc-client-id: empty".into());
        }
        Ok(())
    }

    fn redirect_url(&self) -> String {
        format!(
            "{}/login/oidc/callback",
            self.public_url.trim_end_matches('/')
        )
    }
}

/// A sign-in under way: what the callback must match.
struct Pending {
    verifier: String,
    nonce: String,
    /// The random value of the cookie set on the browser that started the
    /// sign-in: the callback must come from that browser (no login CSRF).
    browser: String,
    at: Instant,
}

/// How long a browser has to come back from the provider.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// Most sign-ins under way at once.
const MAX_PENDING: usize = 10_000;

/// The provider's side of the portal.
pub struct Oidc {
    cfg: OidcConfig,
    http: Http,
    /// The provider's metadata, fetched at the first sign-in (and again
    /// after a failure).
    metadata: tokio::sync::Mutex<Option<CoreProviderMetadata>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Why a sign-in failed, for the sign-in page.
#[derive(Debug)]
pub struct SignInError(pub String);

impl Oidc {
    pub fn new(cfg: OidcConfig) -> Oidc {
        Oidc {
            cfg,
            http: Http(
                reqwest::Client::builder()
                    // no redirect is followed: the provider's endpoints are
                    // its metadata's, nothing else
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("an HTTP client"),
            ),
            metadata: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        }
    }

    async fn metadata(&self) -> Result<CoreProviderMetadata, SignInError> {
        let mut m = self.metadata.lock().await;
        if let Some(md) = m.as_ref() {
            return Ok(md.clone());
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone())
            .map_err(|e| SignInError(format!("the issuer's address: {e}")))?;
        let md = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(
                    "OpenID Connect discovery at {} failed: {e}",
                    self.cfg.issuer
                );
                SignInError("the identity provider cannot be reached now".into())
            })?;
        *m = Some(md.clone());
        Ok(md)
    }

    /// Where to send the browser to sign in, and the value of the cookie
    /// that binds the sign-in to that browser.
    pub async fn start(&self) -> Result<(String, String), SignInError> {
        let md = self.metadata().await?;
        let client = CoreClient::from_provider_metadata(
            md,
            ClientId::new(self.cfg.client_id.clone()),
            self.cfg.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(RedirectUrl::new(self.cfg.redirect_url()).expect("checked at start"));
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("openid".into()))
            .set_pkce_challenge(challenge)
            .url();
        let mut p = self.pending.lock().expect("pending sign-ins");
        let now = Instant::now();
        p.retain(|_, x| now.duration_since(x.at) < PENDING_FOR);
        if p.len() >= MAX_PENDING
            && let Some(oldest) = p.iter().min_by_key(|(_, x)| x.at).map(|(k, _)| k.clone())
        {
            // the oldest goes: a flood of starts cannot lock sign-in out
            p.remove(&oldest);
        }
        let browser = crate::auth::new_token();
        p.insert(
            state.secret().clone(),
            Pending {
                verifier: verifier.secret().clone(),
                nonce: nonce.secret().clone(),
                browser: browser.clone(),
                at: now,
            },
        );
        Ok((url.to_string(), browser))
    }

    /// The provider sent the browser back with `code` for `state`: the
    /// `sub` of the identity it vouches for.
    pub async fn finish(
        &self,
        state: &str,
        code: &str,
        browser: &str,
    ) -> Result<String, SignInError> {
        let pending = {
            let mut p = self.pending.lock().expect("pending sign-ins");
            // only the browser that started it finishes it (and a stranger's
            // try leaves it in place)
            match p.get(state) {
                Some(x) if crate::portal::same(&x.browser, browser) => p.remove(state),
                _ => None,
            }
        }
        .filter(|p| p.at.elapsed() < PENDING_FOR)
        .ok_or_else(|| SignInError("this sign-in has expired; start again".into()))?;
        let md = self.metadata().await?;
        let client = CoreClient::from_provider_metadata(
            md,
            ClientId::new(self.cfg.client_id.clone()),
            self.cfg.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(RedirectUrl::new(self.cfg.redirect_url()).expect("checked at start"));
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| SignInError(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!("OpenID Connect code exchange failed: {e}");
                SignInError("the identity provider refused the sign-in".into())
            })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| SignInError("the identity provider sent no ID token".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
            .map_err(|e| {
                tracing::warn!("OpenID Connect ID token refused: {e}");
                SignInError("the identity provider's answer did not verify".into())
            })?;
        Ok(claims.subject().as_str().to_string())
    }
}

/// The HTTP client `openidconnect` calls (reqwest, the system's TLS
/// roots, no redirects, answers of at most 1 MiB).
struct Http(reqwest::Client);

/// A failed call to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, req: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let mut r = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(e.to_string()))?;
            let mut out = openidconnect::http::Response::builder().status(r.status());
            for (k, v) in r.headers() {
                out = out.header(k, v);
            }
            let mut body = Vec::new();
            while let Some(chunk) = r.chunk().await.map_err(|e| HttpError(e.to_string()))? {
                if body.len() + chunk.len() > 1 << 20 {
                    return Err(HttpError("an answer over 1 MiB".into()));
                }
                body.extend_from_slice(&chunk);
            }
            out.body(body).map_err(|e| HttpError(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc() -> Oidc {
        Oidc::new(OidcConfig {
            issuer: "http://127.0.0.1:9".into(),
            client_id: "gigafab".into(),
            client_secret: None,
            public_url: "http://127.0.0.1:8080".into(),
        })
    }

    /// A callback finishes only the sign-in its own browser started: a
    /// victim sent the attacker's callback link (login CSRF) gets nothing,
    /// and the attacker's sign-in is left as it was.
    #[tokio::test]
    async fn a_sign_in_is_finished_only_by_the_browser_that_started_it() {
        let o = oidc();
        o.pending.lock().unwrap().insert(
            "state-1".into(),
            Pending {
                verifier: "v".into(),
                nonce: "n".into(),
                browser: "attacker-cookie".into(),
                at: Instant::now(),
            },
        );
        for browser in ["", "victim-cookie"] {
            let e = o.finish("state-1", "code", browser).await.unwrap_err();
            assert!(e.0.contains("expired"), "{}", e.0);
        }
        assert!(o.pending.lock().unwrap().contains_key("state-1"));
        // its own browser gets past the binding (to the provider, which
        // does not answer here)
        let e = o
            .finish("state-1", "code", "attacker-cookie")
            .await
            .unwrap_err();
        assert!(e.0.contains("cannot be reached"), "{}", e.0);
        assert!(
            !o.pending.lock().unwrap().contains_key("state-1"),
            "used once"
        );
    }

    #[test]
    fn plain_http_is_refused_but_on_the_loopback() {
        let mut c = oidc().cfg;
        assert!(c.check().is_ok());
        c.issuer = "http://idp.example".into();
        assert!(c.check().unwrap_err().contains("must be https://"));
        c.issuer = "https://idp.example".into();
        c.public_url = "http://portal.example".into();
        assert!(c.check().unwrap_err().starts_with("--public-url"));
    }
}
