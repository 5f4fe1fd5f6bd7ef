//! `gigafab session`: interactive sessions (JupyterLab, a terminal, a
//! site's apps) run as jobs and opened in the browser through the server
//! (docs/sessions.md).

use super::duration::{format_duration, parse_duration, parse_time_limit};
use super::fmt::Table;
use super::*;

/// `gigafab session ...`.
#[derive(Subcommand, Debug)]
pub enum SessionCmd {
    /// Start a session: `gigafab session start --app jupyter --gpus 1 --time 2h`.
    Start(StartArgs),
    /// List your sessions, newest first.
    Ls(ListArgs),
    /// Show one session.
    Show {
        /// The session's id.
        id: i64,
        #[command(flatten)]
        g: Global,
    },
    /// Extend a session's time limit (within the server's longest session
    /// and what the allocation has left).
    Extend {
        /// The session's id.
        id: i64,
        /// Time added: 30m, 1h, 1h30m, HH:MM:SS.
        #[arg(long, value_parser = parse_time_limit)]
        by: u64,
        #[command(flatten)]
        g: Global,
    },
    /// Stop a session (its job is cancelled).
    Stop {
        /// The session's id.
        id: i64,
        #[command(flatten)]
        g: Global,
    },
    /// The apps sessions may run.
    Apps(ListArgs),
}

/// `gigafab session start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// The app (`gigafab session apps`).
    #[arg(long, default_value = "jupyter")]
    app: String,
    /// Accelerators, or a share of one below 1 (`0.25`): a slice of a
    /// shared pool.
    #[arg(long, default_value = "1", value_parser = super::directives::parse_gpus)]
    gpus: super::directives::Gpus,
    /// A named slice of one accelerator: 1g.10gb, cpx, mps-4.
    #[arg(long = "gpu-profile", value_name = "NAME")]
    gpu_profile: Option<String>,
    /// Its time limit: 30m, 2h, HH:MM:SS [default: 2h].
    #[arg(long, value_parser = parse_time_limit)]
    time: Option<u64>,
    /// Ended after this long without activity: 10m, 1h [default: 1h].
    #[arg(long, value_parser = parse_duration)]
    idle: Option<u64>,
    /// Allocation charged [default: your only active one].
    #[arg(long)]
    allocation: Option<i64>,
    /// Accelerator type it may use (repeatable).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Project charged.
    #[arg(long)]
    project: Option<String>,
    #[command(flatten)]
    g: Global,
}

pub(super) async fn run(c: SessionCmd) -> Result<()> {
    match c {
        SessionCmd::Start(a) => start(a).await,
        SessionCmd::Ls(a) => {
            let r = a.g.conn.api()?.get(&["sessions"], &[]).await?;
            show_as(&a.g, &r, |p: &gigafab_api::Page<gigafab_api::Session>| {
                sessions(&p.items)
            })
        }
        SessionCmd::Show { id, g } => {
            let r = g
                .conn
                .api()?
                .get(&["sessions", &id.to_string()], &[])
                .await?;
            let base = g.conn.server();
            show_as(&g, &r, |s: &gigafab_api::Session| session(s, &base))
        }
        SessionCmd::Extend { id, by, g } => {
            let body = gigafab_api::ExtendSession { by_s: by as i64 };
            let r = g
                .conn
                .api()?
                .post(&["sessions", &id.to_string(), "extend"], Some(&body))
                .await?;
            if g.output == Format::Table {
                let s: gigafab_api::Session = typed(&r.value)?;
                note(&format!(
                    "session {id}: time limit now {}{}",
                    format_duration(s.time_limit_s.max(0) as u64),
                    s.ends_at
                        .map(|e| format!(", ends at {e}"))
                        .unwrap_or_default()
                ));
            }
            let base = g.conn.server();
            show_as(&g, &r, |s: &gigafab_api::Session| session(s, &base))
        }
        SessionCmd::Stop { id, g } => {
            let r = g
                .conn
                .api()?
                .post(&["sessions", &id.to_string(), "stop"], None::<&()>)
                .await?;
            let base = g.conn.server();
            show_as(&g, &r, |s: &gigafab_api::Session| session(s, &base))
        }
        SessionCmd::Apps(a) => {
            let r = a.g.conn.api()?.get(&["apps"], &[]).await?;
            show_as(&a.g, &r, |p: &gigafab_api::Page<gigafab_api::App>| {
                let mut t = Table::new(&["NAME", "TITLE", "IDLE CHECK", "DESCRIPTION"]);
                for x in &p.items {
                    t.row([
                        x.name.clone(),
                        x.title.clone(),
                        x.idle_check.clone(),
                        x.description.clone(),
                    ]);
                }
                t.render()
            })
        }
    }
}

async fn start(a: StartArgs) -> Result<()> {
    let api = a.g.conn.api()?;
    let allocation = match a.allocation {
        Some(x) => x,
        None => {
            let r = api.get_list(&["allocations"], &[], true).await?;
            let page: gigafab_api::Page<gigafab_api::Allocation> = typed(&r.value)?;
            pick_allocation(&page.items)?.id.0
        }
    };
    let body = gigafab_api::StartSession {
        app: a.app,
        allocation: gigafab_api::IdRef::Num(allocation),
        project: a.project,
        gpus: Some(match a.gpus {
            super::directives::Gpus::Count(n) => n as i64,
            super::directives::Gpus::Share(_) => 1,
        }),
        gpu_share: match a.gpus {
            super::directives::Gpus::Share(x) => Some(x),
            super::directives::Gpus::Count(_) => None,
        },
        gpu_profile: a.gpu_profile,
        types: (!a.types.is_empty()).then_some(a.types),
        time_limit_s: a.time.map(|t| t as i64),
        idle_timeout_s: a.idle.map(|t| t as i64),
    };
    let r = api.post(&["sessions"], Some(&body)).await?;
    let base = a.g.conn.server();
    if a.g.output == Format::Table {
        let s: gigafab_api::Session = typed(&r.value)?;
        note(&format!(
            "session {} ({}) is job {}; open {}{} in the browser, signed in to the portal, once `gigafab session show {}` says ready",
            s.id,
            s.app,
            s.job,
            base.trim_end_matches('/'),
            s.url,
            s.id
        ));
    }
    show_as(&a.g, &r, |s: &gigafab_api::Session| session(s, &base))
}

fn state(s: &gigafab_api::Session) -> &'static str {
    use gigafab_api::SessionState as S;
    match s.state {
        S::Queued => "queued",
        S::Starting => "starting",
        S::Ready => "ready",
        S::Ended => "ended",
    }
}

fn sessions(items: &[gigafab_api::Session]) -> String {
    let mut t = Table::new(&["ID", "APP", "JOB", "STATE", "GPUS", "LIMIT", "ENDS", "URL"])
        .right_align(&[0, 2, 4]);
    for s in items {
        t.row([
            s.id.to_string(),
            s.app.clone(),
            s.job.to_string(),
            state(s).to_string(),
            s.gpus.to_string(),
            format_duration(s.time_limit_s.max(0) as u64),
            s.ends_at.clone().unwrap_or_else(|| "-".into()),
            s.url.clone(),
        ]);
    }
    t.render()
}

fn session(s: &gigafab_api::Session, base: &str) -> String {
    let mut t = Table::bare();
    let mut row = |k: &str, v: String| t.row([k.to_string(), v]);
    row("id", s.id.to_string());
    row("app", s.app.clone());
    row("job", s.job.to_string());
    row("state", state(s).to_string());
    row("url", format!("{}{}", base.trim_end_matches('/'), s.url));
    row("gpus", s.gpus.to_string());
    row("time limit", format_duration(s.time_limit_s.max(0) as u64));
    if let Some(e) = &s.ends_at {
        row("ends at", e.clone());
    }
    row(
        "idle timeout",
        format_duration(s.idle_timeout_s.max(0) as u64),
    );
    if let Some(l) = &s.last_activity {
        row("last activity", l.clone());
    }
    row(
        "extendable by",
        format_duration(s.extendable_s.max(0) as u64),
    );
    if let Some(r) = &s.reason {
        row("reason", r.clone());
    }
    t.render()
}
