//! `gigafab files`: the organisation's project space, or a job's working
//! directory (`--job`), as the account sees it: list, download, upload
//! (docs/sessions.md, "The project space" and "A job's files").

use super::fmt::Table;
use super::*;

/// `gigafab files ...`.
#[derive(Subcommand, Debug)]
pub enum FilesCmd {
    /// List a directory of the project space (or of a job's, with --job).
    Ls {
        /// The directory, inside the space or the job's directory.
        #[arg(default_value = ".")]
        path: String,
        #[command(flatten)]
        at: At,
        #[command(flatten)]
        g: Global,
    },
    /// Download a file.
    Get {
        /// The file, inside the space or the job's directory.
        path: String,
        /// Where to write it [default: its own name, here]; `-`: standard
        /// output.
        dest: Option<PathBuf>,
        #[command(flatten)]
        at: At,
        #[command(flatten)]
        g: Global,
    },
    /// Upload a file (at most 64 MiB; its directory must exist there).
    Put {
        /// The file to send.
        file: PathBuf,
        /// Its path there [default: its own name, at the top].
        dest: Option<String>,
        #[command(flatten)]
        at: At,
        #[command(flatten)]
        g: Global,
    },
}

/// Whose files.
#[derive(Args, Debug, Clone, Copy)]
pub struct At {
    /// A job's working directory instead of the project space.
    #[arg(long)]
    job: Option<i64>,
}

impl At {
    /// The API's path of the files (`["space", "files"]`, `["jobs", "3",
    /// "files"]`), and `content` after it for a file.
    fn segments(self, content: bool) -> Vec<String> {
        let mut s = match self.job {
            Some(j) => vec!["jobs".to_string(), j.to_string(), "files".into()],
            None => vec!["space".into(), "files".into()],
        };
        if content {
            s.push("content".into());
        }
        s
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub async fn run(cmd: FilesCmd) -> Result<()> {
    match cmd {
        FilesCmd::Ls { path, at, g } => {
            let seg = at.segments(false);
            let r = g
                .conn
                .api()?
                .get(&refs(&seg), &[("path", path.clone())])
                .await?;
            let entries: Vec<gigafab_api::FileEntry> = match at.job {
                Some(_) => typed::<gigafab_api::JobFiles>(&r.value)?.entries,
                None => {
                    let s: gigafab_api::SpaceFiles = typed(&r.value)?;
                    if g.output == Format::Table {
                        note(&format!(
                            "{}'s project space, at {} on the machines",
                            s.org, s.dir
                        ));
                    }
                    s.entries
                }
            };
            show_as(&g, &r, |_: &serde_json::Value| {
                let mut t = Table::new(&["NAME", "BYTES", "MODIFIED"]).right_align(&[1]);
                for e in &entries {
                    t.row([
                        if e.dir {
                            format!("{}/", e.name)
                        } else {
                            e.name.clone()
                        },
                        if e.dir {
                            String::new()
                        } else {
                            e.size.to_string()
                        },
                        e.modified.clone(),
                    ]);
                }
                t.render()
            })
        }
        FilesCmd::Get { path, dest, at, g } => {
            let seg = at.segments(true);
            let resp = g
                .conn
                .api()?
                .get_stream(&refs(&seg), &[("path", path.clone())])
                .await?;
            let bytes = resp
                .bytes()
                .await
                .with_context(|| format!("reading {path}"))?;
            let dest = dest.unwrap_or_else(|| {
                PathBuf::from(
                    path.rsplit('/')
                        .next()
                        .filter(|n| !n.is_empty())
                        .unwrap_or("file"),
                )
            });
            if dest.as_os_str() == "-" {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                out.flush()?;
            } else {
                std::fs::write(&dest, &bytes)
                    .with_context(|| format!("writing {}", dest.display()))?;
                note(&format!(
                    "{path}: {} bytes written to {}",
                    bytes.len(),
                    dest.display()
                ));
            }
            Ok(())
        }
        FilesCmd::Put { file, dest, at, g } => {
            let dest = match dest {
                Some(d) => d,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("{}: name its destination", file.display()))?,
            };
            let seg = at.segments(true);
            let r = g
                .conn
                .api()?
                .put_file(&refs(&seg), &[("path", dest.clone())], &file)
                .await?;
            if g.output == Format::Table {
                let e: gigafab_api::FileEntry = typed(&r.value)?;
                note(&format!(
                    "{}: {} bytes uploaded as {dest}",
                    file.display(),
                    e.size
                ));
                return Ok(());
            }
            show_as(&g, &r, |_: &serde_json::Value| String::new())
        }
    }
}
