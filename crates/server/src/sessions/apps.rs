//! App definitions: one TOML file per app (`NAME.toml`), the server's
//! built-in ones (`crates/server/apps/`) and a site's (`--apps-dir`, whose
//! files add apps or replace a built-in one of the same name). A site adds
//! RStudio or a desktop with a file, without code.
//!
//! In a file's strings, `{port}` is the port the app must listen on,
//! `{host}` the address it listens on (127.0.0.1 where the server shares
//! the job's machine, all the node's addresses on a Slurm node: the
//! engine's, filled in when the job starts), `{base}` the path the browser
//! reaches it under
//! (`/sessions/{id}/`) and `{token}` the session's own secret, which only
//! `env` and `auth_header` may hold (a command line is readable by every
//! user of the node).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The built-in apps: (name, file).
const BUILT_IN: &[(&str, &str)] = &[
    ("jupyter", include_str!("../../apps/jupyter.toml")),
    ("terminal", include_str!("../../apps/terminal.toml")),
    ("vscode", include_str!("../../apps/vscode.toml")),
];

/// How a session's idleness is seen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case", deny_unknown_fields)]
pub enum IdleCheck {
    /// The app's own activity API: a GET of `path` answers a JSON object
    /// whose `field` is an RFC 3339 time.
    App { path: String, field: String },
    /// Requests through the proxy, WebSocket messages included.
    Traffic,
}

/// An app, as its file says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDef {
    #[serde(skip)]
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A path answering 2xx once the app is up.
    pub ready: String,
    /// An `Authorization` header the proxy sends with every request.
    #[serde(default)]
    pub auth_header: Option<String>,
    /// The proxy takes `/sessions/{id}` off the path (apps served at
    /// their root).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Runs only where each job has a network of its own (an app with no
    /// secret of its own).
    #[serde(default)]
    pub private_network: bool,
    pub idle: IdleCheck,
}

impl AppDef {
    /// `{port}`, `{base}`, `{token}` of `text` filled in.
    pub fn fill(text: &str, port: u16, base: &str, token: &str) -> String {
        text.replace("{port}", &port.to_string())
            .replace("{base}", base)
            .replace("{token}", token)
    }

    /// How its idleness is seen, as the API words it.
    pub fn idle_check(&self) -> &'static str {
        match self.idle {
            IdleCheck::App { .. } => "app",
            IdleCheck::Traffic => "traffic",
        }
    }
}

/// A valid app name: 1 to 32 of `a-z 0-9 -`, starting with a letter.
pub fn valid_name(n: &str) -> bool {
    (1..=32).contains(&n.len())
        && n.as_bytes()[0].is_ascii_lowercase()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Reads one app file's text; `origin` names it in errors.
pub fn parse(name: &str, text: &str, origin: &str) -> Result<AppDef, String> {
    if !valid_name(name) {
        return Err(format!(
            "{origin}: `{name}` is not an app name (1 to 32 of a-z 0-9 -, starting with a letter)"
        ));
    }
    let mut a: AppDef = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(":{line}")
            })
            .unwrap_or_default();
        format!("{origin}{at}: {}", e.message())
    })?;
    a.name = name.into();
    let bad = |m: &str| Err(format!("{origin}: {m}"));
    if a.command.is_empty() || a.command[0].is_empty() {
        return bad("command: a program is needed");
    }
    if a.command.iter().any(|c| c.contains("{token}")) {
        return bad(
            "command: `{token}` goes in env or auth_header: a command line is readable by every user of the node",
        );
    }
    for p in [
        Some(&a.ready),
        match &a.idle {
            IdleCheck::App { path, .. } => Some(path),
            IdleCheck::Traffic => None,
        },
    ]
    .into_iter()
    .flatten()
    {
        if !p.starts_with('/') && !p.starts_with("{base}") {
            return bad(&format!("`{p}`: a path starts with / or {{base}}"));
        }
    }
    for k in a.env.keys() {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return bad(&format!("env: `{k}` is not a variable name"));
        }
    }
    Ok(a)
}

/// The built-in apps, then the files of `dir` (`NAME.toml`; a name taken
/// replaces the built-in app), sorted by name.
pub fn load(dir: Option<&Path>) -> Result<Vec<AppDef>, String> {
    let mut apps = BTreeMap::new();
    for (name, text) in BUILT_IN {
        apps.insert(
            name.to_string(),
            parse(name, text, &format!("built-in app {name}"))?,
        );
    }
    if let Some(dir) = dir {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("--apps-dir {}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("--apps-dir {}: {e}", dir.display()))?;
            let path = e.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".toml"))
            else {
                continue;
            };
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            apps.insert(
                name.to_string(),
                parse(name, &text, &path.display().to_string())?,
            );
        }
    }
    Ok(apps.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_apps_read() {
        let apps = load(None).unwrap();
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["jupyter", "terminal", "vscode"]);
        let j = &apps[0];
        assert_eq!(j.env["JUPYTER_TOKEN"], "{token}");
        assert!(matches!(j.idle, IdleCheck::App { .. }));
        assert!(apps[2].private_network && apps[2].strip_prefix);
    }

    #[test]
    fn a_bad_file_says_where() {
        let e = parse(
            "x",
            "title = \"X\"\ncommand = [\"a\"]\nready = 3\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(e.starts_with("x.toml:3: "), "{e}");
        let e = parse(
            "x",
            "title = \"X\"\ncommand = [\"a\", \"--t={token}\"]\nready = \"/\"\n[idle]\ncheck = \"traffic\"\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(e.contains("readable by every user"), "{e}");
        let e = parse("X y", "", "f").unwrap_err();
        assert!(e.contains("not an app name"), "{e}");
        let e = parse(
            "x",
            "title = \"X\"\ncommand = [\"a\"]\nready = \"/\"\nsurprise = 1\n[idle]\ncheck = \"traffic\"\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(e.starts_with("x.toml:4: ") && e.contains("surprise"), "{e}");
    }

    #[test]
    fn a_site_file_adds_or_replaces() {
        let d = std::env::temp_dir().join(format!("gf-apps-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("rstudio.toml"),
            "title = \"RStudio\"\ncommand = [\"rserver\", \"--www-port={port}\"]\nready = \"/\"\nstrip_prefix = true\n[idle]\ncheck = \"traffic\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("jupyter.toml"),
            "title = \"Site Jupyter\"\ncommand = [\"/opt/j/bin/jupyter-lab\"]\nready = \"{base}api/status\"\n[idle]\ncheck = \"traffic\"\n",
        )
        .unwrap();
        std::fs::write(d.join("notes.txt"), "not an app").unwrap();
        let apps = load(Some(&d)).unwrap();
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["jupyter", "rstudio", "terminal", "vscode"]);
        assert_eq!(apps[0].title, "Site Jupyter");
        let _ = std::fs::remove_dir_all(&d);
    }
}
