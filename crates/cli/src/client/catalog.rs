//! `gigafab catalog ...`: the data and model catalog (docs/catalog.md).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::PathBuf;

use super::fmt::Table;
use gigafab_api as t;

use super::{Global, note, show_as};

/// `gigafab catalog ...` (parsed once per run: its size does not matter).
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum CatalogCmd {
    /// Hash a directory as a push would, without a server: its manifest
    /// hash, files, bytes and speed (GiB/s).
    Hash {
        /// The directory.
        path: PathBuf,
        /// Threads hashing [default: the machine's cores, at most 16].
        #[arg(long)]
        threads: Option<usize>,
        /// Print the JSON manifest (every file) instead.
        #[arg(long)]
        manifest: bool,
    },
    /// Hash a directory and push it as a new version of an entry (made
    /// first if it does not exist: then --kind and --licence are needed).
    Push {
        /// The directory: every file under it, hashed in parallel.
        path: PathBuf,
        /// The entry's name.
        #[arg(long)]
        name: String,
        /// `dataset` or `model` (for a new entry).
        #[arg(long)]
        kind: Option<String>,
        /// SPDX licence expression (for a new entry): Apache-2.0, CC-BY-4.0.
        #[arg(long)]
        licence: Option<String>,
        /// `public`, `org` or `gated` (for a new entry) [default: org].
        #[arg(long)]
        access: Option<String>,
        /// The owner organisation of a new entry (admins) [default: yours].
        #[arg(long)]
        org: Option<String>,
        /// A site where it may be stored and processed (for a new entry);
        /// repeatable [default: any].
        #[arg(long = "residency", value_name = "SITE")]
        residency: Vec<String>,
        /// The card's description (for a new entry).
        #[arg(long)]
        description: Option<String>,
        /// An alias to point at the new version; repeatable [default: latest].
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// The model it was trained from, NAME@VERSION.
        #[arg(long)]
        base: Option<String>,
        /// A dataset it was trained on, NAME@VERSION; repeatable.
        #[arg(long = "dataset")]
        datasets: Vec<String>,
        /// Register the directory where it lies on the server's file system
        /// (admins) instead of copying it into the site's store.
        #[arg(long)]
        in_place: bool,
        /// Threads hashing [default: the machine's cores, at most 16].
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        g: Global,
    },
    /// Create an entry without a version yet (a model that a job's output
    /// will fill, for one).
    Create {
        /// The entry's name.
        name: String,
        /// `dataset` or `model`.
        #[arg(long)]
        kind: String,
        /// SPDX licence expression: Apache-2.0, CC-BY-4.0.
        #[arg(long)]
        licence: String,
        /// `public`, `org` or `gated` [default: org].
        #[arg(long)]
        access: Option<String>,
        /// The owner organisation (admins) [default: yours].
        #[arg(long)]
        org: Option<String>,
        /// A site where it may be stored and processed; repeatable
        /// [default: any].
        #[arg(long = "residency", value_name = "SITE")]
        residency: Vec<String>,
        /// The card's description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        g: Global,
    },
    /// List the entries you may see.
    Ls {
        #[command(flatten)]
        g: Global,
    },
    /// Show an entry (NAME) or one version (NAME@VERSION, NAME@ALIAS).
    Show {
        /// NAME, NAME@VERSION or NAME@ALIAS.
        reference: String,
        /// With the version's files.
        #[arg(long)]
        files: bool,
        #[command(flatten)]
        g: Global,
    },
    /// Hash a version again where it lies: each corrupt, missing or extra
    /// file (exit status 1 if any).
    Verify {
        /// NAME@VERSION or NAME@ALIAS.
        reference: String,
        #[command(flatten)]
        g: Global,
    },
    /// A version's lineage: base models, datasets, the job that made it.
    Lineage {
        /// NAME@VERSION or NAME@ALIAS.
        reference: String,
        #[command(flatten)]
        g: Global,
    },
    /// Point an alias at a version.
    Alias {
        /// The entry.
        name: String,
        /// The alias (`prod`).
        alias: String,
        /// The version.
        version: i64,
        #[command(flatten)]
        g: Global,
    },
    /// Grant a gated entry to an organisation (its owners).
    Grant {
        /// The entry.
        name: String,
        /// The organisation.
        #[arg(long)]
        org: String,
        /// Days the grant lasts [default: until revoked].
        #[arg(long)]
        days: Option<f64>,
        #[command(flatten)]
        g: Global,
    },
    /// Revoke an organisation's grant.
    Revoke {
        /// The entry.
        name: String,
        /// The organisation.
        #[arg(long)]
        org: String,
        #[command(flatten)]
        g: Global,
    },
    /// Ask a gated entry's owners for access.
    RequestAccess {
        /// The entry.
        name: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        g: Global,
    },
}

fn split_ref(r: &str) -> Result<(&str, &str)> {
    match r.split_once('@') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n, v)),
        _ => bail!("`{r}`: expected NAME@VERSION or NAME@ALIAS"),
    }
}

pub async fn run(c: CatalogCmd) -> Result<()> {
    match c {
        CatalogCmd::Hash {
            path,
            threads,
            manifest,
        } => {
            let threads = threads.unwrap_or_else(gigafab_catalog::default_threads);
            let t0 = std::time::Instant::now();
            let m = gigafab_catalog::hash_tree(&path, threads)
                .with_context(|| format!("hashing {}", path.display()))?;
            let secs = t0.elapsed().as_secs_f64();
            if manifest {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!(
                    "{}  {} files  {} bytes  {:.3} s  {:.2} GiB/s  ({threads} threads)",
                    m.hash,
                    m.files.len(),
                    m.bytes,
                    secs,
                    m.bytes as f64 / secs.max(1e-9) / (1u64 << 30) as f64
                );
            }
            Ok(())
        }
        CatalogCmd::Push {
            path,
            name,
            kind,
            licence,
            access,
            org,
            residency,
            description,
            aliases,
            base,
            datasets,
            in_place,
            threads,
            g,
        } => {
            let api = g.conn.api()?;
            // the entry, made if it does not exist
            let exists = match api.get(&["catalog", &name], &[]).await {
                Ok(_) => true,
                // none that the caller may see
                Err(e) if super::http::ClientError::status(&e) == Some(404) => false,
                Err(e) => return Err(e),
            };
            if !exists {
                let (Some(kind), Some(licence)) = (kind, licence) else {
                    bail!(
                        "catalog entry `{name}` does not exist: give --kind and --licence to make it"
                    );
                };
                let body = entry_body(&name, &kind, &licence, access, org, &residency, description);
                api.post(&["catalog"], Some(&body)).await?;
                note(&format!("created catalog entry {name}"));
            }
            let aliases = if aliases.is_empty() {
                vec!["latest".to_string()]
            } else {
                aliases
            };
            let lineage = t::CommitUpload {
                aliases,
                base,
                datasets,
            };
            if in_place {
                let abs = std::path::absolute(&path)
                    .with_context(|| format!("resolving {}", path.display()))?;
                let body = t::RegisterInPlace {
                    path: abs.to_str().context("the path is not UTF-8")?.to_string(),
                    aliases: lineage.aliases,
                    base: lineage.base,
                    datasets: lineage.datasets,
                };
                let r = api
                    .post(&["catalog", &name, "versions"], Some(&body))
                    .await?;
                return show_as(&g, &r, version_line);
            }
            let threads = threads.unwrap_or_else(gigafab_catalog::default_threads);
            let t0 = std::time::Instant::now();
            let p = path.clone();
            let m = tokio::task::spawn_blocking(move || gigafab_catalog::hash_tree(&p, threads))
                .await?
                .with_context(|| format!("hashing {}", path.display()))?;
            let secs = t0.elapsed().as_secs_f64();
            note(&format!(
                "hashed {} files, {} bytes in {:.2} s ({:.2} GiB/s): manifest {}",
                m.files.len(),
                m.bytes,
                secs,
                m.bytes as f64 / secs.max(1e-9) / (1u64 << 30) as f64,
                m.hash
            ));
            let up = api
                .post(
                    &["catalog", &name, "uploads"],
                    Some(&t::StartUpload {
                        files: m
                            .files
                            .iter()
                            .map(|f| t::ManifestFile {
                                path: f.path.clone(),
                                size: f.size,
                                sha256: f.sha256.clone(),
                            })
                            .collect(),
                    }),
                )
                .await?;
            let id = super::typed::<t::Upload>(&up.value)?.id;
            // a few files in flight at once: the server hashes each as it
            // arrives
            use futures_util::StreamExt;
            let (api_ref, id_ref, path_ref) = (&api, id.as_str(), &path);
            let mut sent = futures_util::stream::iter(m.files.iter().map(|f| async move {
                let mut segs = vec!["catalog", "uploads", id_ref, "files"];
                segs.extend(f.path.split('/'));
                api_ref
                    .put_file(&segs, &[], &path_ref.join(&f.path))
                    .await
                    .with_context(|| format!("uploading {}", f.path))
            }))
            .buffer_unordered(4);
            while let Some(r) = sent.next().await {
                r?;
            }
            drop(sent);
            let r = api
                .post(&["catalog", "uploads", &id, "commit"], Some(&lineage))
                .await?;
            show_as(&g, &r, version_line)
        }
        CatalogCmd::Create {
            name,
            kind,
            licence,
            access,
            org,
            residency,
            description,
            g,
        } => {
            let body = entry_body(&name, &kind, &licence, access, org, &residency, description);
            let r = g.conn.api()?.post(&["catalog"], Some(&body)).await?;
            show_as(&g, &r, entry_text)
        }
        CatalogCmd::Ls { g } => {
            let r = g.conn.api()?.get(&["catalog"], &[]).await?;
            show_as(&g, &r, |p: &t::Page<t::CatalogEntry>| {
                let mut tb = Table::new(&[
                    "NAME",
                    "KIND",
                    "ORG",
                    "ACCESS",
                    "LICENCE",
                    "RESIDENCY",
                    "VERSIONS",
                    "READABLE",
                ]);
                for e in &p.items {
                    tb.row([
                        e.name.clone(),
                        e.kind.clone(),
                        e.org.clone(),
                        e.access.clone(),
                        e.licence.clone(),
                        list_or(&e.residency, "any"),
                        e.versions.len().to_string(),
                        if e.readable { "yes" } else { "no" }.into(),
                    ]);
                }
                tb.render()
            })
        }
        CatalogCmd::Show {
            reference,
            files,
            g,
        } => {
            let api = g.conn.api()?;
            match reference.split_once('@') {
                None => {
                    let r = api.get(&["catalog", &reference], &[]).await?;
                    show_as(&g, &r, entry_text)
                }
                Some(_) => {
                    let (n, v) = split_ref(&reference)?;
                    let q = [("files", files.to_string())];
                    let r = api.get(&["catalog", n, "versions", v], &q).await?;
                    show_as(&g, &r, |v: &t::CatalogVersion| {
                        let mut out = version_line(v);
                        out.push_str(&format!(
                            "lineage: {}\n",
                            serde_json::to_string(&v.lineage).unwrap_or_default()
                        ));
                        for f in v.manifest.iter().flatten() {
                            out.push_str(&format!("{}  {:>12}  {}\n", f.sha256, f.size, f.path));
                        }
                        out
                    })
                }
            }
        }
        CatalogCmd::Verify { reference, g } => {
            let (n, v) = split_ref(&reference)?;
            let r = g
                .conn
                .api()?
                .post(&["catalog", n, "verify", v], super::http::NO_BODY)
                .await?;
            show_as(&g, &r, |v: &t::VerifyReport| {
                let mut out = format!(
                    "{}@{}: {}\n",
                    v.entry,
                    v.version,
                    if v.intact { "intact" } else { "CORRUPT" }
                );
                for p in &v.problems {
                    out.push_str(&format!("  {:<10} {}  {}\n", p.kind, p.path, p.detail));
                }
                out
            })?;
            if !super::typed::<t::VerifyReport>(&r.value)?.intact {
                std::process::exit(1);
            }
            Ok(())
        }
        CatalogCmd::Lineage { reference, g } => {
            let (n, v) = split_ref(&reference)?;
            let r = g
                .conn
                .api()?
                .get(&["catalog", n, "lineage", v], &[])
                .await?;
            show_as(&g, &r, |v: &t::LineageGraph| {
                let mut out = String::new();
                for (from, to, how) in &v.edges {
                    out.push_str(&format!("{from} --{how}--> {to}\n"));
                }
                if out.is_empty() {
                    out = format!(
                        "{}: no recorded ancestors\n",
                        v.nodes.first().map_or("?", String::as_str)
                    );
                }
                out
            })
        }
        CatalogCmd::Alias {
            name,
            alias,
            version,
            g,
        } => {
            let r = g
                .conn
                .api()?
                .put(
                    &["catalog", &name, "aliases", &alias],
                    &t::SetAlias { version },
                )
                .await?;
            show_as(&g, &r, entry_text)
        }
        CatalogCmd::Grant { name, org, days, g } => {
            let body = t::GrantEntry { org, days };
            let r = g
                .conn
                .api()?
                .post(&["catalog", &name, "grants"], Some(&body))
                .await?;
            show_as(&g, &r, entry_text)
        }
        CatalogCmd::Revoke { name, org, g } => {
            let r = g
                .conn
                .api()?
                .delete(&["catalog", &name, "grants", &org])
                .await?;
            show_as(&g, &r, entry_text)
        }
        CatalogCmd::RequestAccess { name, reason, g } => {
            let r = g
                .conn
                .api()?
                .post(
                    &["catalog", &name, "access-requests"],
                    Some(&t::RequestEntryAccess { reason }),
                )
                .await?;
            show_as(&g, &r, |_: &t::CatalogEntry| {
                format!("asked the owners of {name} for access\n")
            })
        }
    }
}

/// The body of `POST /catalog`.
fn entry_body(
    name: &str,
    kind: &str,
    licence: &str,
    access: Option<String>,
    org: Option<String>,
    residency: &[String],
    description: Option<String>,
) -> t::CreateEntry {
    t::CreateEntry {
        name: name.to_string(),
        kind: kind.to_string(),
        org,
        access,
        licence: licence.to_string(),
        card: description.map(|d| t::Card {
            description: d,
            ..t::Card::default()
        }),
        residency: (!residency.is_empty()).then(|| residency.to_vec()),
    }
}

fn list_or<T: std::fmt::Display>(v: &[T], none: &str) -> String {
    if v.is_empty() {
        none.to_string()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn version_line(v: &t::CatalogVersion) -> String {
    format!(
        "{}@{}: {} files, {} bytes, manifest {}{}\n",
        v.entry,
        v.version,
        v.files,
        v.bytes,
        v.manifest_hash,
        if v.in_place { " (in place)" } else { "" }
    )
}

fn entry_text(e: &t::CatalogEntry) -> String {
    let mut out = format!(
        "{} ({} of {}, {} access, {})\nresidency: {}\n",
        e.name,
        e.kind,
        e.org,
        e.access,
        e.licence,
        list_or(&e.residency, "any site"),
    );
    if !e.card.description.is_empty() {
        out.push_str(&format!("{}\n", e.card.description));
    }
    out.push_str(&format!(
        "versions: {}\n",
        list_or(
            &e.versions,
            if e.readable {
                "none yet"
            } else {
                "(not readable by you)"
            }
        )
    ));
    if !e.aliases.is_empty() {
        let l: Vec<String> = e.aliases.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("aliases: {}\n", l.join(", ")));
    }
    for gr in &e.grants {
        out.push_str(&format!(
            "granted to {} until {}\n",
            gr.org,
            gr.expires_at.as_deref().unwrap_or("-")
        ));
    }
    for r in &e.access_requests {
        out.push_str(&format!(
            "access asked by {} ({}): {}\n",
            r.org, r.user, r.reason
        ));
    }
    out
}
