//! Files as an account sees them (list, view text, download, upload): a
//! job's working directory (`/files/{job}`, through the API's
//! `/jobs/{id}/files`) and the organisation's project space (`/space`,
//! through `/space/files`).

use super::*;
use axum::extract::Multipart;

/// A path as a query value.
fn q(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An entry as the page draws it.
pub(super) struct FileRow {
    pub name: String,
    pub dir: bool,
    pub size: u64,
    pub modified: String,
    /// Its path, as a query value.
    pub href: String,
}

/// A directory's entries, whether uploads may go there, and a project
/// space's (organisation, directory on the machines).
type Listing = (Vec<t::FileEntry>, bool, Option<(String, String)>);

/// Whose files a page shows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Where {
    Job(i64),
    Space,
}

impl Where {
    /// The page's own address.
    fn page(self) -> String {
        match self {
            Where::Job(j) => format!("/files/{j}"),
            Where::Space => "/space".into(),
        }
    }

    /// The API's address of its files.
    fn api(self) -> String {
        match self {
            Where::Job(j) => format!("/api/v1/jobs/{j}/files"),
            Where::Space => "/api/v1/space/files".into(),
        }
    }
}

#[derive(Template)]
#[template(path = "files.html")]
pub(super) struct FilesPage<'a> {
    c: Chrome<'a>,
    /// The page's own address (`/files/3`, `/space`).
    base: String,
    /// Its heading, and what it links to (the job's page).
    title: String,
    link: Option<(String, String)>,
    intro: &'a str,
    /// The upload's hint.
    hint: &'a str,
    /// The space's directory on the machines (a project space).
    dir: Option<String>,
    path: String,
    /// The parent directory, as a query value (None at the top).
    up: Option<String>,
    /// This directory, as a query value.
    here: String,
    writable: bool,
    rows: Vec<FileRow>,
    /// A file shown: (its path, its text, cut at the preview's size).
    view: Option<(String, String, bool)>,
    problem: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct PathQuery {
    #[serde(default)]
    path: String,
}

/// Most bytes of a file shown on the page.
const PREVIEW: usize = 256 << 10;

async fn show(
    p: &PortalState,
    s: &Signed,
    at: Where,
    path: &str,
    view: Option<(String, String, bool)>,
    problem: Option<String>,
) -> Response {
    let url = format!("{}?path={}", at.api(), q(path));
    // what both listings have, and the space's own
    let listing: Result<Listing, Failure> = match at {
        Where::Job(_) => p
            .api::<t::JobFiles, _>(&s.token, Method::GET, &url, NO_BODY)
            .await
            .map(|l| (l.entries, l.writable, None)),
        Where::Space => p
            .api::<t::SpaceFiles, _>(&s.token, Method::GET, &url, NO_BODY)
            .await
            .map(|l| (l.entries, l.writable, Some((l.org, l.dir)))),
    };
    let (entries, writable, space) = match listing {
        Ok(l) => l,
        Err(f) => {
            let back = match at {
                Where::Job(_) => "/jobs",
                Where::Space => "/",
            };
            return failure(p, Some(s), f, back);
        }
    };
    let base = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{}/", path.trim_end_matches('/'))
    };
    let rows = entries
        .into_iter()
        .map(|e| FileRow {
            href: q(&format!("{base}{}", e.name)),
            name: e.name,
            dir: e.dir,
            size: e.size,
            modified: e.modified,
        })
        .collect();
    let up = (!base.is_empty()).then(|| {
        let trimmed = base.trim_end_matches('/');
        q(trimmed.rsplit_once('/').map_or("", |(a, _)| a))
    });
    let w = &p.words;
    let (title, link, intro, hint, dir) = match (at, space) {
        (Where::Job(j), _) => (
            w.get("files.title").to_string(),
            Some((format!("/jobs/{j}"), format!("#{j}"))),
            w.get("files.intro"),
            w.get("files.file"),
            None,
        ),
        (Where::Space, space) => {
            let (org, dir) = space.unwrap_or_default();
            (
                format!("{} {org}", w.get("space.title")),
                None,
                w.get("space.intro"),
                w.get("space.file"),
                Some(dir),
            )
        }
    };
    page(&FilesPage {
        c: chrome(p, Some(s)),
        base: at.page(),
        title,
        link,
        intro,
        hint,
        dir,
        path: if base.is_empty() {
            ".".into()
        } else {
            path.to_string()
        },
        up,
        here: q(path),
        writable,
        rows,
        view,
        problem,
    })
}

pub(super) async fn files(
    State(p): State<PortalState>,
    s: Signed,
    Path(job): Path<i64>,
    Query(pq): Query<PathQuery>,
) -> Response {
    show(&p, &s, Where::Job(job), &pq.path, None, None).await
}

pub(super) async fn space(
    State(p): State<PortalState>,
    s: Signed,
    Query(pq): Query<PathQuery>,
) -> Response {
    show(&p, &s, Where::Space, &pq.path, None, None).await
}

/// File `path` of `at`, as its account reads it.
async fn fetch(
    p: &PortalState,
    s: &Signed,
    at: Where,
    path: &str,
    max: Option<usize>,
) -> Result<axum::body::Bytes, Failure> {
    let first = max.map(|m| format!("&max={m}")).unwrap_or_default();
    p.api_bytes(
        &s.token,
        Method::GET,
        &format!("{}/content?path={}{first}", at.api(), q(path)),
        None,
        max.unwrap_or(64 << 20) + 1024,
    )
    .await
}

pub(super) async fn view_file(
    State(p): State<PortalState>,
    s: Signed,
    Path(job): Path<i64>,
    Query(pq): Query<PathQuery>,
) -> Response {
    view_at(&p, &s, Where::Job(job), &pq.path).await
}

pub(super) async fn space_view(
    State(p): State<PortalState>,
    s: Signed,
    Query(pq): Query<PathQuery>,
) -> Response {
    view_at(&p, &s, Where::Space, &pq.path).await
}

/// A file's text on the page, under its directory's listing.
async fn view_at(p: &PortalState, s: &Signed, at: Where, path: &str) -> Response {
    let dir = path.rsplit_once('/').map_or("", |(a, _)| a).to_string();
    match fetch(p, s, at, path, Some(PREVIEW + 1)).await {
        Ok(b) => {
            let cut = b.len() > PREVIEW;
            let text = String::from_utf8_lossy(&b[..b.len().min(PREVIEW)]).into_owned();
            show(p, s, at, &dir, Some((path.to_string(), text, cut)), None).await
        }
        Err(f) => show(p, s, at, &dir, None, Some(f.message)).await,
    }
}

pub(super) async fn download_file(
    State(p): State<PortalState>,
    s: Signed,
    Path(job): Path<i64>,
    Query(pq): Query<PathQuery>,
) -> Response {
    download_at(&p, &s, Where::Job(job), &pq.path).await
}

pub(super) async fn space_download(
    State(p): State<PortalState>,
    s: Signed,
    Query(pq): Query<PathQuery>,
) -> Response {
    download_at(&p, &s, Where::Space, &pq.path).await
}

/// A file, downloaded.
async fn download_at(p: &PortalState, s: &Signed, at: Where, path: &str) -> Response {
    match fetch(p, s, at, path, None).await {
        Ok(b) => {
            let name = path
                .rsplit('/')
                .next()
                .unwrap_or("file")
                .replace(['"', '\\', '\r', '\n'], "_");
            let mut r = b.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                "application/octet-stream".parse().expect("a header"),
            );
            if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(f) => {
            let back = match at {
                Where::Job(_) => "/jobs",
                Where::Space => "/space",
            };
            failure(p, Some(s), f, back)
        }
    }
}

pub(super) async fn upload_file(
    State(p): State<PortalState>,
    s: Signed,
    Path(job): Path<i64>,
    Query(pq): Query<PathQuery>,
    form: Multipart,
) -> Response {
    upload_at(&p, &s, Where::Job(job), &pq.path, form).await
}

pub(super) async fn space_upload(
    State(p): State<PortalState>,
    s: Signed,
    Query(pq): Query<PathQuery>,
    form: Multipart,
) -> Response {
    upload_at(&p, &s, Where::Space, &pq.path, form).await
}

/// A file uploaded into directory `path` (a form with the CSRF token and
/// the file).
async fn upload_at(
    p: &PortalState,
    s: &Signed,
    at: Where,
    path: &str,
    mut form: Multipart,
) -> Response {
    let mut csrf = String::new();
    let mut file: Option<(String, axum::body::Bytes)> = None;
    loop {
        match form.next_field().await {
            Ok(Some(f)) => {
                let name = f.name().unwrap_or_default().to_string();
                if name == "csrf" {
                    csrf = f.text().await.unwrap_or_default();
                } else if name == "file" {
                    let fname = f.file_name().unwrap_or_default().to_string();
                    match f.bytes().await {
                        Ok(b) => file = Some((fname, b)),
                        Err(e) => return show(p, s, at, path, None, Some(e.body_text())).await,
                    }
                }
            }
            Ok(None) => break,
            Err(e) => return show(p, s, at, path, None, Some(e.body_text())).await,
        }
    }
    if !form_ok(s, &csrf) {
        return csrf_refused(p, s);
    }
    let Some((fname, bytes)) = file.filter(|(n, _)| !n.is_empty()) else {
        return show(
            p,
            s,
            at,
            path,
            None,
            Some(p.words.get("files.choose").into()),
        )
        .await;
    };
    // the file's own name, never a path
    let fname = fname
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_string();
    let dir = path.trim_end_matches('/');
    let target = if dir.is_empty() || dir == "." {
        fname
    } else {
        format!("{dir}/{fname}")
    };
    match p
        .api_bytes(
            &s.token,
            Method::PUT,
            &format!("{}/content?path={}", at.api(), q(&target)),
            Some(bytes),
            1 << 20,
        )
        .await
    {
        Ok(_) => Redirect::to(&format!("{}?path={}", at.page(), q(path))).into_response(),
        Err(f) => show(p, s, at, path, None, Some(f.message)).await,
    }
}
