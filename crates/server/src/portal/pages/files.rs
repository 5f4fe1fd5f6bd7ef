//! A job's files: its working directory as its account sees it (list,
//! view text, download, upload), through the API's `/jobs/{id}/files`.

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

#[derive(Template)]
#[template(path = "files.html")]
pub(super) struct FilesPage<'a> {
    c: Chrome<'a>,
    job: i64,
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
    job: i64,
    path: &str,
    view: Option<(String, String, bool)>,
    problem: Option<String>,
) -> Response {
    let listing: Result<t::JobFiles, Failure> = p
        .api(
            &s.token,
            Method::GET,
            &format!("/api/v1/jobs/{job}/files?path={}", q(path)),
            NO_BODY,
        )
        .await;
    let l = match listing {
        Ok(l) => l,
        Err(f) => return failure(p, Some(s), f, "/jobs"),
    };
    let base = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{}/", path.trim_end_matches('/'))
    };
    let rows = l
        .entries
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
    page(&FilesPage {
        c: chrome(p, Some(s)),
        job,
        path: if base.is_empty() {
            ".".into()
        } else {
            path.to_string()
        },
        up,
        here: q(path),
        writable: l.writable,
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
    show(&p, &s, job, &pq.path, None, None).await
}

/// File `path` of `job`, as its account reads it.
async fn fetch(
    p: &PortalState,
    s: &Signed,
    job: i64,
    path: &str,
    max: Option<usize>,
) -> Result<axum::body::Bytes, Failure> {
    let first = max.map(|m| format!("&max={m}")).unwrap_or_default();
    p.api_bytes(
        &s.token,
        Method::GET,
        &format!("/api/v1/jobs/{job}/files/content?path={}{first}", q(path)),
        None,
        max.unwrap_or(64 << 20) + 1024,
    )
    .await
}

/// A file's text on the page, under its directory's listing.
pub(super) async fn view_file(
    State(p): State<PortalState>,
    s: Signed,
    Path(job): Path<i64>,
    Query(pq): Query<PathQuery>,
) -> Response {
    let dir = pq.path.rsplit_once('/').map_or("", |(a, _)| a).to_string();
    match fetch(&p, &s, job, &pq.path, Some(PREVIEW + 1)).await {
        Ok(b) => {
            let cut = b.len() > PREVIEW;
            let text = String::from_utf8_lossy(&b[..b.len().min(PREVIEW)]).into_owned();
            show(&p, &s, job, &dir, Some((pq.path.clone(), text, cut)), None).await
        }
        Err(f) => show(&p, &s, job, &dir, None, Some(f.message)).await,
    }
}

/// A file, downloaded.
pub(super) async fn download_file(
    State(p): State<PortalState>,
    s: Signed,
    Path(job): Path<i64>,
    Query(pq): Query<PathQuery>,
) -> Response {
    match fetch(&p, &s, job, &pq.path, None).await {
        Ok(b) => {
            let name = pq
                .path
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
        Err(f) => failure(&p, Some(&s), f, "/jobs"),
    }
}

/// A file uploaded into directory `path` (a form with the CSRF token and
/// the file).
pub(super) async fn upload_file(
    State(p): State<PortalState>,
    s: Signed,
    Path(job): Path<i64>,
    Query(pq): Query<PathQuery>,
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
                        Err(e) => {
                            return show(&p, &s, job, &pq.path, None, Some(e.body_text())).await;
                        }
                    }
                }
            }
            Ok(None) => break,
            Err(e) => return show(&p, &s, job, &pq.path, None, Some(e.body_text())).await,
        }
    }
    if !form_ok(&s, &csrf) {
        return csrf_refused(&p, &s);
    }
    let Some((fname, bytes)) = file.filter(|(n, _)| !n.is_empty()) else {
        return show(
            &p,
            &s,
            job,
            &pq.path,
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
    let dir = pq.path.trim_end_matches('/');
    let target = if dir.is_empty() || dir == "." {
        fname
    } else {
        format!("{dir}/{fname}")
    };
    match p
        .api_bytes(
            &s.token,
            Method::PUT,
            &format!("/api/v1/jobs/{job}/files/content?path={}", q(&target)),
            Some(bytes),
            1 << 20,
        )
        .await
    {
        Ok(_) => Redirect::to(&format!("/files/{job}?path={}", q(&pq.path))).into_response(),
        Err(f) => show(&p, &s, job, &pq.path, None, Some(f.message)).await,
    }
}
