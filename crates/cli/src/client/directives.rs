//! `#SBATCH` and `#GIGAFAB` directives of a batch script, read as `sbatch`
//! reads them: from the lines at the top of the script, up to its first
//! command (a line that is neither blank nor a comment). `#GIGAFAB` lines
//! take `gigafab submit`'s own options; `#SBATCH` lines take the common
//! Slurm ones. What a directive asks is used where no flag on the command
//! line says otherwise (flags win).

use std::path::PathBuf;

use super::duration::parse_time_limit;

/// What a script's directives ask for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Directives {
    pub gpus: Option<Gpus>,
    /// A slice with at least this much memory, GB (`--gpu-mem`).
    pub gpu_mem: Option<f64>,
    /// A named slice (`--gpu-profile`, or Slurm's `--gres=gpu:1g.10gb:1`).
    pub gpu_profile: Option<String>,
    pub types: Vec<String>,
    pub time_s: Option<u64>,
    pub memory_gb: Option<f64>,
    pub cpus: Option<f64>,
    pub name: Option<String>,
    pub workdir: Option<PathBuf>,
    pub vendor: Option<String>,
    pub priority: Option<i64>,
    pub preemptible: bool,
    pub allocation: Option<u64>,
    pub project: Option<String>,
    pub dependency: Option<String>,
    pub array: Option<String>,
    /// Where the job's standard output goes (`--output`), as a shell word
    /// of the job's own (`%j` and the like become its variables).
    pub output: Option<String>,
    /// Where its standard error goes (`--error`).
    pub error: Option<String>,
    /// Directives read and not used, as `file:line: text: why`.
    pub ignored: Vec<String>,
}

/// A directive that cannot be read, as `file:line: why`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {why}")]
pub struct DirectiveError {
    pub file: String,
    pub line: usize,
    pub why: String,
}

/// Which family a directive line is of.
#[derive(Clone, Copy, PartialEq)]
enum Family {
    Sbatch,
    Gigafab,
}

/// The directives of `text` (a script read from `file`).
pub fn parse(file: &str, text: &str) -> Result<Directives, DirectiveError> {
    let mut d = Directives::default();
    // --gpus-per-node is multiplied by --nodes, whichever comes first
    let mut per_node: Option<(u32, usize)> = None;
    let mut nodes: Option<(u32, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        let (family, rest) = if let Some(r) = t.strip_prefix("#SBATCH") {
            (Family::Sbatch, r)
        } else if let Some(r) = t.strip_prefix("#GIGAFAB") {
            (Family::Gigafab, r)
        } else if t.is_empty() || t.starts_with('#') {
            continue;
        } else {
            // the first command: no directive after it is read (sbatch's rule)
            break;
        };
        let err = |why: String| DirectiveError {
            file: file.to_string(),
            line,
            why,
        };
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            // `#SBATCHX`: not a directive, a comment
            continue;
        }
        // a comment after the directive's words ends it
        let rest = match rest.find(" #") {
            Some(k) => &rest[..k],
            None => rest,
        };
        let words = shlex::split(rest)
            .ok_or_else(|| err(format!("`{}`: unbalanced quotes", rest.trim())))?;
        let mut k = 0;
        while k < words.len() {
            let w = &words[k];
            let (opt, inline) = match w.split_once('=') {
                Some((o, v)) if o.starts_with("--") => (o.to_string(), Some(v.to_string())),
                _ => (w.clone(), None),
            };
            if !opt.starts_with('-') {
                return Err(err(format!(
                    "`{w}` is not an option (a directive takes options, as on the command line)"
                )));
            }
            let name = canonical(family, &opt);
            let takes_value = name.is_some_and(|n| n != "preemptible");
            let value = if takes_value {
                match inline {
                    Some(v) => Some(v),
                    None => {
                        k += 1;
                        Some(
                            words
                                .get(k)
                                .cloned()
                                .ok_or_else(|| err(format!("{opt} needs a value")))?,
                        )
                    }
                }
            } else {
                inline
            };
            k += 1;
            let shown = match &value {
                Some(v) => format!("{opt}={v}"),
                None => opt.clone(),
            };
            let Some(name) = name else {
                d.ignored.push(format!(
                    "{file}:{line}: {shown}: not an option gigafab reads (ignored)"
                ));
                continue;
            };
            let v = value.unwrap_or_default();
            let bad = |what: &str| err(format!("{shown}: {what}"));
            match name {
                "gpus" => {
                    if let Ok(Gpus::Share(x)) = parse_gpus(&v) {
                        d.gpus = Some(Gpus::Share(x));
                        continue;
                    }
                    let (ty, n) = typed_count(&v)
                        .ok_or_else(|| bad("a count, TYPE:COUNT, or a share below 1 (0.25)"))?;
                    d.gpus = Some(Gpus::Count(n));
                    if let Some(ty) = ty {
                        d.types = vec![ty];
                    }
                }
                "gpu-mem" => {
                    d.gpu_mem = Some(positive(&v).ok_or_else(|| bad("GB, a number above 0"))?);
                }
                "gpu-profile" => {
                    if v.is_empty() {
                        return Err(bad("a slice name (1g.10gb, cpx, mps-4)"));
                    }
                    d.gpu_profile = Some(v.to_string());
                }
                "gres" => {
                    for g in v.split(',') {
                        match g.strip_prefix("gpu") {
                            Some("") => d.gpus = Some(Gpus::Count(1)),
                            Some(r) if r.starts_with(':') => {
                                let (ty, n) = typed_count(&r[1..])
                                    .ok_or_else(|| bad("gpu:COUNT or gpu:TYPE:COUNT"))?;
                                d.gpus = Some(Gpus::Count(n));
                                match ty {
                                    // Slurm's MIG GRES: one slice of that profile
                                    Some(ty) if mig_profile(&ty) => {
                                        if n != 1 {
                                            return Err(bad("a MIG slice is one per job in gigafab: gpu:PROFILE:1"));
                                        }
                                        d.gpu_profile = Some(ty.to_ascii_lowercase());
                                    }
                                    Some(ty) => d.types = vec![ty],
                                    None => {}
                                }
                            }
                            _ => d.ignored.push(format!(
                                "{file}:{line}: {shown}: `{g}` is not a resource gigafab schedules (ignored)"
                            )),
                        }
                    }
                }
                "gpus-per-node" => {
                    let (ty, n) = typed_count(&v).ok_or_else(|| bad("a count, or TYPE:COUNT"))?;
                    per_node = Some((n, line));
                    if let Some(ty) = ty {
                        d.types = vec![ty];
                    }
                }
                "nodes" => {
                    // N or N-N (a range: its least)
                    let n = v
                        .split('-')
                        .next()
                        .and_then(|x| x.parse::<u32>().ok())
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("a count of nodes"))?;
                    nodes = Some((n, line));
                }
                "type" => d.types.push(v),
                "time" => d.time_s = Some(parse_time_limit(&v).map_err(|e| bad(&e))?),
                "mem" => {
                    let gb = slurm_mem_gb(&v).ok_or_else(|| bad(MEM_FORMS))?;
                    d.memory_gb = Some(gb);
                }
                "memory" => d.memory_gb = Some(positive(&v).ok_or_else(|| bad("GB, above 0"))?),
                "cpus" => d.cpus = Some(positive(&v).ok_or_else(|| bad("CPUs, above 0"))?),
                "name" => d.name = Some(v),
                "chdir" => d.workdir = Some(PathBuf::from(v)),
                "vendor" => d.vendor = Some(v),
                "priority" => d.priority = Some(v.parse().map_err(|_| bad("a whole number"))?),
                "preemptible" => d.preemptible = true,
                "allocation" => {
                    d.allocation = Some(v.parse().map_err(|_| bad("an allocation's id"))?)
                }
                "project" => d.project = Some(v),
                "dependency" => d.dependency = Some(v),
                "array" => d.array = Some(v),
                "output" => d.output = Some(output_word(&v).map_err(|e| bad(&e))?),
                "error" => d.error = Some(output_word(&v).map_err(|e| bad(&e))?),
                _ => unreachable!("every canonical name is handled"),
            }
        }
    }
    if let Some((n, line)) = per_node {
        let count = nodes.map_or(1, |x| x.0);
        d.gpus = Some(Gpus::Count(n.checked_mul(count).ok_or_else(|| {
            DirectiveError {
                file: file.to_string(),
                line,
                why: "--gpus-per-node times --nodes is too large".into(),
            }
        })?));
    } else if let Some((n, line)) = nodes
        && n > 1
        && d.gpus.is_none()
    {
        d.ignored.push(format!(
            "{file}:{line}: --nodes={n}: without --gpus-per-node, gigafab places accelerators, not nodes: ask for --gpus (ignored)"
        ));
    }
    Ok(d)
}

/// Accelerators asked for: a whole number, or a share of one below 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gpus {
    Count(u32),
    Share(f64),
}

/// Parses `--gpus`: 1..=65536 accelerators, or a share of one (0 < x < 1).
pub fn parse_gpus(v: &str) -> Result<Gpus, String> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u32>() {
        return if (1..=65536).contains(&n) {
            Ok(Gpus::Count(n))
        } else {
            Err(format!("{n} is not within 1..=65536"))
        };
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x < 1.0 => Ok(Gpus::Share(x)),
        _ => Err(format!(
            "`{v}`: a whole number of accelerators (1..=65536) or a share of one (0.25)"
        )),
    }
}

/// Whether a Slurm GRES type names a MIG profile (`1g.10gb`) rather than
/// an accelerator type.
fn mig_profile(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    t.split_once("g.").is_some_and(|(c, m)| {
        !c.is_empty()
            && c.chars().all(|x| x.is_ascii_digit())
            && m.strip_suffix("gb")
                .is_some_and(|g| !g.is_empty() && g.chars().all(|x| x.is_ascii_digit()))
    })
}

/// The one name an option has, per family; None: not one gigafab reads.
fn canonical(family: Family, opt: &str) -> Option<&'static str> {
    let common = match opt {
        "--gpus" | "-G" => "gpus",
        "--time" | "-t" => "time",
        "--cpus-per-task" | "-c" => "cpus",
        "--job-name" | "-J" => "name",
        "--chdir" | "-D" => "chdir",
        "--dependency" | "-d" => "dependency",
        "--array" | "-a" => "array",
        _ => "",
    };
    let name = match family {
        Family::Sbatch => match opt {
            "--gres" => "gres",
            "--gpus-per-node" => "gpus-per-node",
            "--nodes" | "-N" => "nodes",
            "--mem" => "mem",
            "--output" | "-o" => "output",
            "--error" | "-e" => "error",
            _ => common,
        },
        Family::Gigafab => match opt {
            "--type" => "type",
            "--memory" => "memory",
            "--cpus" => "cpus",
            "--name" => "name",
            "--workdir" => "chdir",
            "--vendor" => "vendor",
            "--priority" => "priority",
            "--preemptible" => "preemptible",
            "--allocation" => "allocation",
            "--project" => "project",
            "--gpu-mem" => "gpu-mem",
            "--gpu-profile" => "gpu-profile",
            _ => common,
        },
    };
    (!name.is_empty()).then_some(name)
}

/// What `--mem` takes.
const MEM_FORMS: &str = "a size: MB, or with a unit K, M, G, T (`16G`)";

/// A finite number above 0.
fn positive(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0)
}

/// `N` or `TYPE:N` (a count at least 1).
fn typed_count(v: &str) -> Option<(Option<String>, u32)> {
    let (ty, n) = match v.rsplit_once(':') {
        Some((t, n)) if !t.is_empty() && !t.contains(':') => (Some(t.to_string()), n),
        Some(_) => return None,
        None => (None, v),
    };
    let n = n.parse::<u32>().ok().filter(|n| (1..=65536).contains(n))?;
    Some((ty, n))
}

/// Slurm's `--mem`: megabytes, or with a unit K, M, G or T; in GB.
fn slurm_mem_gb(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mult_mb) = match v.chars().last()?.to_ascii_uppercase() {
        'K' => (&v[..v.len() - 1], 1.0 / 1024.0),
        'M' => (&v[..v.len() - 1], 1.0),
        'G' => (&v[..v.len() - 1], 1024.0),
        'T' => (&v[..v.len() - 1], 1024.0 * 1024.0),
        _ => (v, 1.0),
    };
    let mb = num
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)?
        * mult_mb;
    Some(mb / 1024.0)
}

/// Slurm's `--output`/`--error` file name pattern as a shell word the
/// job expands itself (it runs as the job's account: nothing is written
/// with anyone else's rights): `%j` the job's id, `%A` its array's first
/// job, `%a` its task index (4294967294 outside an array, as Slurm's), `%x`
/// its name, `%u` its account, `%N` its node, `%%` a `%`. Other `%`
/// letters are refused.
pub fn output_word(pattern: &str) -> Result<String, String> {
    if pattern.is_empty() || pattern.contains('\0') || pattern.len() > 1024 {
        return Err("a file name pattern (slurm-%j.out)".into());
    }
    let mut out = String::new();
    let mut lit = String::new();
    let flush = |lit: &mut String, out: &mut String| {
        if !lit.is_empty() {
            out.push('\'');
            out.push_str(&lit.replace('\'', "'\\''"));
            out.push('\'');
            lit.clear();
        }
    };
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        let var = match chars.next() {
            Some('%') => {
                lit.push('%');
                continue;
            }
            Some('j') => "${GIGAFAB_JOB_ID}",
            Some('A') => "${GIGAFAB_ARRAY_JOB_ID:-$GIGAFAB_JOB_ID}",
            Some('a') => "${GIGAFAB_ARRAY_TASK_ID:-4294967294}",
            Some('x') => "${GIGAFAB_JOB_NAME}",
            Some('u') => "$(id -un)",
            Some('N') => "$(hostname)",
            Some(o) => {
                return Err(format!(
                    "`%{o}` is not a pattern gigafab fills (%j %A %a %x %u %N %%)"
                ));
            }
            None => return Err("a `%` ends the pattern".into()),
        };
        flush(&mut lit, &mut out);
        out.push('"');
        out.push_str(var);
        out.push('"');
    }
    flush(&mut lit, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_directives_are_read_up_to_the_first_command() {
        let s = "#!/bin/bash\n\
                 # a comment\n\
                 #SBATCH --job-name=train\n\
                 #SBATCH -G 2 # two of them\n\
                 #SBATCH --time=1-02:00:00\n\
                 #SBATCH --mem=16G\n\
                 #SBATCH --cpus-per-task 8\n\
                 #SBATCH --partition=gpu\n\
                 #SBATCH --output=slurm-%j.out\n\
                 \n\
                 echo start\n\
                 #SBATCH --gpus=7\n";
        let d = parse("train.sh", s).unwrap();
        assert_eq!(d.name.as_deref(), Some("train"));
        assert_eq!(d.gpus, Some(Gpus::Count(2)));
        assert_eq!(d.time_s, Some(26 * 3600));
        assert_eq!(d.memory_gb, Some(16.0));
        assert_eq!(d.cpus, Some(8.0));
        assert_eq!(d.ignored.len(), 1, "{:?}", d.ignored);
        assert!(d.ignored[0].starts_with("train.sh:8: --partition=gpu"));
        assert_eq!(
            d.output.as_deref(),
            Some("'slurm-'\"${GIGAFAB_JOB_ID}\"'.out'")
        );
    }

    #[test]
    fn output_patterns_become_the_jobs_own_shell_words() {
        assert_eq!(output_word("out.txt").unwrap(), "'out.txt'");
        assert_eq!(
            output_word("logs/%x-%A_%a.%%").unwrap(),
            "'logs/'\"${GIGAFAB_JOB_NAME}\"'-'\"${GIGAFAB_ARRAY_JOB_ID:-$GIGAFAB_JOB_ID}\"'_'\"${GIGAFAB_ARRAY_TASK_ID:-4294967294}\"'.%'"
        );
        // a quote or a $ of the pattern stays literal
        assert_eq!(output_word("it's$HOME").unwrap(), "'it'\\''s$HOME'");
        assert!(output_word("%q").unwrap_err().contains("`%q`"));
        let e = parse("a.sh", "#SBATCH --output=x%\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.sh:1:"), "{e}");
    }

    #[test]
    fn gres_types_nodes_and_gigafab_lines() {
        let d = parse("a.sh", "#SBATCH --gres=gpu:h100:4\n").unwrap();
        assert_eq!(
            (d.gpus, d.types.clone()),
            (Some(Gpus::Count(4)), vec!["h100".into()])
        );
        let d = parse("a.sh", "#SBATCH --nodes=2\n#SBATCH --gpus-per-node=8\n").unwrap();
        assert_eq!(d.gpus, Some(Gpus::Count(16)));
        let d = parse(
            "a.sh",
            "#SBATCH -d afterok:4:5,afterany:6\n#SBATCH --array=0-9%2\n",
        )
        .unwrap();
        assert_eq!(d.array.as_deref(), Some("0-9%2"));
        assert_eq!(d.dependency.as_deref(), Some("afterok:4:5,afterany:6"));
        let d = parse(
            "a.sh",
            "#GIGAFAB --type mi300x --gpus 2 --memory 64 --preemptible\n#GIGAFAB --name=x --vendor amd\n",
        )
        .unwrap();
        assert_eq!(d.types, vec!["mi300x".to_string()]);
        assert_eq!(
            (d.gpus, d.memory_gb, d.preemptible),
            (Some(Gpus::Count(2)), Some(64.0), true)
        );
        assert_eq!(
            (d.name.as_deref(), d.vendor.as_deref()),
            (Some("x"), Some("amd"))
        );
        assert_eq!(
            parse("a.sh", "#SBATCH --mem=2048\n").unwrap().memory_gb,
            Some(2.0)
        );
        // not a directive: a longer word, or a different case
        assert_eq!(
            parse("a.sh", "#SBATCHED --gpus=3\n#sbatch --gpus=3\n").unwrap(),
            Directives::default()
        );
    }

    #[test]
    fn bad_directives_name_their_file_and_line() {
        for (text, line, needle) in [
            ("#!/bin/sh\n#SBATCH --gpus=zero\n", 2, "--gpus=zero"),
            ("#SBATCH --time=forever\n", 1, "--time=forever"),
            ("#SBATCH --mem=lots\n", 1, "--mem=lots"),
            ("\n\n#SBATCH --nodes=x\n", 3, "a count of nodes"),
            ("#SBATCH --job-name\n", 1, "needs a value"),
            ("#SBATCH gpus=2\n", 1, "not an option"),
            ("#SBATCH --job-name='x\n", 1, "unbalanced quotes"),
            ("#GIGAFAB --cpus -1\n", 1, "above 0"),
        ] {
            let e = parse("job.sh", text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(
                e.to_string().starts_with(&format!("job.sh:{line}: ")),
                "{e}"
            );
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn slices_come_as_shares_profiles_and_slurm_mig_gres() {
        let d = parse("a.sh", "#GIGAFAB --gpus=0.25 --gpu-mem 10\n").unwrap();
        assert_eq!((d.gpus, d.gpu_mem), (Some(Gpus::Share(0.25)), Some(10.0)));
        let d = parse("a.sh", "#GIGAFAB --gpu-profile 1g.10gb\n").unwrap();
        assert_eq!(d.gpu_profile.as_deref(), Some("1g.10gb"));
        let d = parse("a.sh", "#SBATCH --gres=gpu:1g.10gb:1\n").unwrap();
        assert_eq!(d.gpu_profile.as_deref(), Some("1g.10gb"));
        assert!(d.types.is_empty(), "a profile is not a type");
        let e = parse("a.sh", "#SBATCH --gres=gpu:3g.40gb:2\n").unwrap_err();
        assert!(
            e.to_string().contains("a.sh:1") && e.to_string().contains("one per job"),
            "{e}"
        );
        let e = parse("a.sh", "#GIGAFAB --gpus=1.5\n").unwrap_err();
        assert!(e.to_string().contains("share below 1"), "{e}");
        assert_eq!(parse_gpus("3"), Ok(Gpus::Count(3)));
        assert!(
            parse_gpus("0").is_err() && parse_gpus("-0.5").is_err() && parse_gpus("nan").is_err()
        );
    }
}
