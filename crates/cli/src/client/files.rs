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
        /// Where to write it [default: its own name, here, never over a
        /// file that exists]; `-`: standard output.
        dest: Option<PathBuf>,
        /// Write over a file of its own name here.
        #[arg(long)]
        force: bool,
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

/// Most bytes of a file the server sends (its downloads' limit).
const MAX_FILE: usize = 64 << 20;

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
        FilesCmd::Get {
            path,
            dest,
            force,
            at,
            g,
        } => {
            let seg = at.segments(true);
            let mut resp = g
                .conn
                .api()?
                .get_stream(&refs(&seg), &[("path", path.clone())])
                .await?;
            // its own name, not over a file of that name unless told
            let named = dest.is_some();
            let dest = dest.unwrap_or_else(|| {
                PathBuf::from(
                    path.rsplit('/')
                        .next()
                        .filter(|n| !n.is_empty() && *n != "..")
                        .unwrap_or("file"),
                )
            });
            let mut out: Box<dyn std::io::Write> = if dest.as_os_str() == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                let mut o = std::fs::OpenOptions::new();
                o.write(true);
                if named || force {
                    o.create(true).truncate(true);
                } else {
                    o.create_new(true);
                }
                Box::new(o.open(&dest).with_context(|| {
                    format!(
                        "{}: cannot write it{}",
                        dest.display(),
                        if dest.exists() && !named {
                            " (it exists: --force to write over it, or name another)"
                        } else {
                            ""
                        }
                    )
                })?)
            };
            // as it comes, and no more than the server sends (64 MiB)
            let mut n = 0usize;
            while let Some(chunk) = resp
                .chunk()
                .await
                .with_context(|| format!("reading {path}"))?
            {
                n += chunk.len();
                if n > MAX_FILE {
                    bail!("{path}: more than the {MAX_FILE} bytes a download takes");
                }
                out.write_all(&chunk)?;
            }
            out.flush()?;
            if dest.as_os_str() != "-" {
                note(&format!("{path}: {n} bytes written to {}", dest.display()));
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
