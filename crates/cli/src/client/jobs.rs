//! `gigafab submit|jobs|job|cancel|logs`.

use super::*;

/// `NAME@REF` as `KIND:NAME@REF` (kept as given if it names its kind).
pub(super) fn with_kind(kind: &str, r: &str) -> String {
    if r.starts_with("dataset:") || r.starts_with("model:") {
        r.to_string()
    } else {
        format!("{kind}:{r}")
    }
}

/// The body of `POST /jobs`: the API contract's type, so that the CLI
/// and the server cannot disagree on it.
pub(super) fn submit_body(
    a: &SubmitArgs,
    allocation: i64,
    workdir: Option<String>,
) -> gigafab_api::SubmitJob {
    let (type_, types) = match a.types.as_slice() {
        [] => (None, None),
        [one] => (Some(one.clone()), None),
        several => (None, Some(several.to_vec())),
    };
    gigafab_api::SubmitJob {
        allocation: gigafab_api::IdRef::Num(allocation),
        gpus: match a.gpus {
            Some(super::directives::Gpus::Count(n)) => n as i64,
            _ => 1,
        },
        gpu_share: match a.gpus {
            Some(super::directives::Gpus::Share(x)) => Some(x),
            _ => None,
        },
        gpu_memory_gb: a.gpu_mem,
        gpu_profile: a.gpu_profile.clone(),
        command: a.command.clone(),
        name: a.name.clone(),
        project: a.project.clone(),
        type_,
        types,
        vendor: a.vendor.map(|v| name_of(&v)),
        min_memory_gb: a.min_mem.map(f64::from),
        time_limit_s: a.time.map(|t| t as i64),
        priority: a.priority,
        preemptible: a.preemptible.then_some(true),
        env: (!a.env.is_empty()).then(|| a.env.iter().cloned().collect()),
        workdir,
        memory_gb: a.memory,
        cpus: a.cpus,
        job_type: a.job_type.clone(),
        inputs: {
            let v: Vec<String> = a
                .inputs
                .iter()
                .map(|i| with_kind("dataset", i))
                .chain(a.models.iter().map(|m| with_kind("model", m)))
                .collect();
            (!v.is_empty()).then_some(v)
        },
        output_model: a.output_model.clone(),
        dependency: a.dependency.clone(),
        array: a.array.clone(),
    }
}

/// Submits a job; returns the server's answer and, when the allocation was
/// picked automatically, that allocation.
pub(super) async fn submit_job(
    api: &Api,
    a: &SubmitArgs,
) -> Result<(Reply, Option<gigafab_api::Allocation>)> {
    let (allocation, picked) = match a.allocation {
        Some(id) => (id as i64, None),
        None => {
            let r = api.get_list(&["allocations"], &[], true).await?;
            let page: gigafab_api::Page<gigafab_api::Allocation> = typed(&r.value)?;
            let one = pick_allocation(&page.items)?.clone();
            (one.id.0, Some(one))
        }
    };
    let workdir = match &a.workdir {
        None => None,
        Some(w) => {
            let abs = std::path::absolute(w)
                .with_context(|| format!("resolving --workdir {}", w.display()))?;
            let s = abs
                .to_str()
                .with_context(|| format!("--workdir {} is not valid UTF-8", abs.display()))?;
            Some(s.to_string())
        }
    };
    let body = submit_body(a, allocation, workdir);
    // retried with one Idempotency-Key: a lost answer never makes two jobs
    let r = api.post_idempotent(&["jobs"], &body).await?;
    Ok((r, picked))
}

/// The most of a script read for its directives, bytes.
const MAX_SCRIPT: u64 = 1 << 20;

/// A batch script submitted as the command (`gigafab submit train.sh`):
/// its directives fill what no flag set; it runs in the submit directory
/// unless told otherwise; it is named by its absolute path, and run by
/// the interpreter of its `#!` line when it is not executable. Not a
/// script (no such file here, or no `#!`): left as it is.
pub(super) fn apply_script(a: &mut SubmitArgs) -> Result<()> {
    use std::io::Read;
    let Some(first) = a.command.first().cloned() else {
        return Ok(());
    };
    let first = first.as_str();
    let path = std::path::Path::new(first);
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if !meta.is_file() {
        return Ok(());
    }
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SCRIPT).read_to_end(&mut text))
        .with_context(|| format!("reading the script {first}"))?;
    if !text.starts_with(b"#!") {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&text);
    let d = directives::parse(first, &text)?;
    for line in &d.ignored {
        note(line);
    }
    let abs = std::path::absolute(path).with_context(|| format!("resolving {first}"))?;
    let abs = abs
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", abs.display()))?
        .to_string();
    let executable = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    };
    let mut command = Vec::new();
    if !executable {
        let shebang = text.lines().next().unwrap_or("#!");
        let words: Vec<&str> = shebang[2..].split_whitespace().collect();
        if words.is_empty() {
            bail!("{first}:1: `#!` names no interpreter");
        }
        command.extend(words.iter().map(|w| w.to_string()));
    }
    command.push(abs);
    command.extend(a.command.drain(1..));
    // `--output`/`--error`: the job sends its own streams there (as its
    // account, relative to its working directory); `--output` alone takes
    // both, as sbatch's does
    if d.output.is_some() || d.error.is_some() {
        // its name: given, or its script's (the program is now a shell)
        let name = a.name.clone().or(d.name.clone()).unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "script".into())
        });
        a.name = Some(name.clone());
        let quoted = format!("'{}'", name.replace('\'', "'\\''"));
        let fill = |w: &String| w.replace("\"${GIGAFAB_JOB_NAME}\"", &quoted);
        let (out, err) = (d.output.as_ref().map(fill), d.error.as_ref().map(fill));
        let redirect = match (&out, &err) {
            (Some(o), Some(e)) => format!(">{o} 2>{e}"),
            (Some(o), None) => format!(">{o} 2>&1"),
            (None, Some(e)) => format!("2>{e}"),
            (None, None) => unreachable!(),
        };
        let mut wrapped = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("exec \"$@\" {redirect}"),
            "gigafab-output".to_string(),
        ];
        wrapped.append(&mut command);
        command = wrapped;
    }
    a.command = command;
    // flags win over directives
    a.gpus = a.gpus.or(d.gpus);
    a.gpu_mem = a.gpu_mem.or(d.gpu_mem);
    a.gpu_profile = a.gpu_profile.take().or(d.gpu_profile);
    if a.types.is_empty() {
        a.types = d.types;
    }
    a.time = a.time.or(d.time_s);
    a.memory = a.memory.or(d.memory_gb);
    a.cpus = a.cpus.or(d.cpus);
    a.name = a.name.take().or(d.name);
    a.project = a.project.take().or(d.project);
    a.dependency = a.dependency.take().or(d.dependency);
    a.array = a.array.take().or(d.array);
    a.priority = a.priority.or(d.priority);
    a.allocation = a.allocation.or(d.allocation);
    a.preemptible |= d.preemptible;
    if a.vendor.is_none()
        && let Some(v) = &d.vendor
    {
        a.vendor = Some(
            <Vendor as clap::ValueEnum>::from_str(v, true)
                .map_err(|_| anyhow::anyhow!("{first}: #GIGAFAB --vendor {v}: nvidia or amd"))?,
        );
    }
    // sbatch's rule: the script runs where it was submitted
    if a.workdir.is_none() {
        a.workdir = Some(match d.workdir {
            Some(w) => w,
            None => std::env::current_dir().context("the current directory")?,
        });
    }
    Ok(())
}

pub(super) async fn submit(mut a: SubmitArgs) -> Result<()> {
    apply_script(&mut a)?;
    let api = a.g.conn.api()?;
    let (r, picked) = submit_job(&api, &a).await?;
    if let Some(p) = picked
        && a.g.output == Format::Table
    {
        note(&format!(
            "charging allocation {}",
            render::allocation_brief(&p)
        ));
    }
    show_as(&a.g, &r, |j: &gigafab_api::Job| match j.array_task {
        Some(task) => format!(
            "submitted job array {} (its tasks are jobs {}.. from index {task}; `gigafab jobs` shows them as one line)\n",
            j.id, j.id
        ),
        None => format!("submitted job {} ({})\n", j.id, j.state),
    })
}

/// The query of `GET /jobs`.
pub(super) fn jobs_query(a: &JobsArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(s) = a.state {
        q.push(("state", name_of(&s)));
    }
    if let Some(al) = a.allocation {
        q.push(("allocation", al.to_string()));
    }
    if let Some(o) = &a.org {
        q.push(("org", o.clone()));
    }
    if let Some(u) = &a.user {
        q.push(("user", u.clone()));
    }
    match (a.limit, a.all) {
        (Some(l), _) => q.push(("limit", l.to_string())),
        (None, true) => q.push(("limit", "1000".to_string())),
        (None, false) => {}
    }
    q
}

pub(super) async fn jobs(a: JobsArgs) -> Result<()> {
    if a.all {
        return jobs_all(&a).await;
    }
    let r =
        a.g.conn
            .api()?
            .get_list(&["jobs"], &jobs_query(&a), a.all)
            .await?;
    show_as(&a.g, &r, |p: &gigafab_api::Page<gigafab_api::JobItem>| {
        render::jobs(&p.items)
    })?;
    if a.g.output == Format::Table && !a.all && http::next_cursor(&r.value).is_some() {
        note("more jobs: --all lists every page, --limit N lists more per page");
    }
    Ok(())
}

/// `gigafab jobs --all`: each page is shown as it comes (the table with
/// one header; the JSON as one `{"items": [...], "next": null}` document,
/// the server's text verbatim), so memory holds one page, not every job.
pub(super) async fn jobs_all(a: &JobsArgs) -> Result<()> {
    let api = a.g.conn.api()?;
    let mut first = true;
    // STATE as wide as its widest word from the start (later pages may
    // hold other states); other columns widen if a later page needs it
    let mut widths = vec![0, "completed".len()];
    let mut wrote_items = false;
    api.for_each_page(&["jobs"], &jobs_query(a), |page, last| {
        let out = match a.g.output {
            Format::Table => render::jobs_table(
                &typed::<gigafab_api::Page<gigafab_api::JobItem>>(&page.value)?.items,
            )
            .render_page(&mut widths, first),
            // a single page: the server's answer as it is
            Format::Json if first && last => format!("{}\n", fmt::pretty_json(&page.raw)),
            Format::Json => {
                let mut out = String::new();
                let text = fmt::items_text(&page.raw).map(str::trim).unwrap_or("");
                if !text.is_empty() {
                    out.push_str(if wrote_items {
                        ",\n    "
                    } else {
                        "{\n  \"items\": [\n    "
                    });
                    fmt::pretty_into(text, 2, &mut out);
                    wrote_items = true;
                }
                if last {
                    out.push_str(if wrote_items {
                        "\n  ],\n  \"next\": null\n}\n"
                    } else {
                        "{\n  \"items\": [],\n  \"next\": null\n}\n"
                    });
                }
                out
            }
        };
        first = false;
        emit(&out)
    })
    .await
}

pub(super) async fn job(a: JobArgs) -> Result<()> {
    let r =
        a.g.conn
            .api()?
            .get(&["jobs", &a.id.to_string()], &[])
            .await?;
    show_as(&a.g, &r, render::job_detail)
}

/// What `gigafab cancel` says about a job the server accepted to cancel.
pub(super) fn cancel_line(job: &gigafab_api::Job) -> String {
    match job.state.as_str() {
        "cancelled" => format!("cancelled job {}\n", job.id),
        state => format!(
            "cancelling job {} (still {state}; it stops shortly)\n",
            job.id
        ),
    }
}

/// Whether a job in `state` has ended.
fn ended(state: &str) -> bool {
    matches!(state, "completed" | "failed" | "timeout" | "cancelled")
}

/// The tasks of the job array `first` that have not ended (its tasks'
/// jobs have ids in a row from the first's).
async fn array_tasks(api: &Api, first: u64) -> Result<Vec<u64>> {
    let job = |r: Reply| typed::<gigafab_api::Job>(&r.value);
    let mut out = Vec::new();
    let mut id = first;
    loop {
        let j = match api.get(&["jobs", &id.to_string()], &[]).await {
            Ok(r) => job(r)?,
            Err(_) if id > first => break,
            Err(e) => return Err(e),
        };
        if j.array_job != Some(first as i64) {
            if id == first {
                bail!(
                    "job {first} is not the first task of a job array (--array takes an array's id)"
                );
            }
            break;
        }
        if !ended(&j.state) {
            out.push(id);
        }
        id += 1;
    }
    Ok(out)
}

pub(super) async fn cancel(mut a: CancelArgs) -> Result<()> {
    let api = a.g.conn.api()?;
    if a.array {
        let mut tasks = Vec::new();
        for &first in &a.ids {
            tasks.extend(array_tasks(&api, first).await?);
        }
        if tasks.is_empty() {
            note("every task of the array has ended: nothing to cancel");
            return Ok(());
        }
        // last first: a cancelled task satisfies the lane of the task
        // `%N` after it, which must not start before its own cancel
        tasks.sort_unstable_by(|x, y| y.cmp(x));
        a.ids = tasks;
    }
    if let [id] = a.ids.as_slice() {
        let r = api.delete(&["jobs", &id.to_string()]).await?;
        return show_as(&a.g, &r, cancel_line);
    }
    let mut raws = Vec::new();
    let mut failed = 0usize;
    for id in &a.ids {
        match api.delete(&["jobs", &id.to_string()]).await {
            Ok(r) => match a.g.output {
                Format::Table => emit(&cancel_line(&typed(&r.value)?))?,
                Format::Json => raws.push(r.raw),
            },
            Err(e) if http::ClientError::is_unreachable(&e) => return Err(e),
            Err(e) => {
                failed += 1;
                note(&format!("error: job {id}: {e:#}"));
            }
        }
    }
    if a.g.output == Format::Json {
        emit(&format!(
            "{}\n",
            fmt::pretty_json(&format!("[{}]", raws.join(",")))
        ))?;
    }
    if failed > 0 {
        bail!("{failed} of {} cancels failed", a.ids.len());
    }
    Ok(())
}

/// Consecutive stream failures after which `logs --follow` gives up.
pub(super) const LOG_RETRIES: u32 = 5;

/// What `logs` says of a job that has not started: why it waits.
fn waiting_line(j: &gigafab_api::Job, follow: bool) -> String {
    let why = j
        .reason
        .as_deref()
        .map_or(String::new(), |r| format!(" ({r})"));
    let then = if follow {
        "waiting for it to start"
    } else {
        "no output yet; `gigafab logs -f` waits for it"
    };
    format!("job {} is {}{why}: {then}", j.id, j.state)
}

/// The line `logs -f` ends with, and the exit status it ends with: the
/// job's own exit code; 1 for a job that ended otherwise (cancelled, timed
/// out, lost) without a code of its own.
fn ended_line(j: &gigafab_api::Job) -> (String, i32) {
    let code = match (j.state.as_str(), j.exit_code) {
        ("completed", c) => c.unwrap_or(0),
        (_, Some(c)) if c != 0 => c,
        _ => 1,
    };
    // an exit status is a byte; a code past it (or negative: a signal)
    // still says "failed"
    let status = if (0..=255).contains(&code) {
        code as i32
    } else {
        1
    };
    let mut line = format!("job {} {}", j.id, j.state);
    if let Some(c) = j.exit_code {
        line += &format!(" (exit code {c})");
    }
    if let Some(r) = j.reason.as_deref().filter(|r| !r.is_empty()) {
        line += &format!(": {r}");
    }
    (line, status)
}

/// The exit status a command ends with, without an error message (its
/// story was told on stderr already).
#[derive(Debug)]
pub struct ExitStatus(pub i32);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

pub(super) async fn logs(a: LogsArgs) -> Result<()> {
    let api = a.conn.api()?;
    let id = a.id.to_string();
    let job = |r: Reply| typed::<gigafab_api::Job>(&r.value);
    let before = job(api.get(&["jobs", &id], &[]).await?)?;
    if before.state != "running" && !ended(&before.state) {
        note(&waiting_line(&before, a.follow));
    }
    let stream = if a.stderr { "stderr" } else { "stdout" };
    let mut offset: u64 = 0;
    let mut failures: u32 = 0;
    loop {
        let mut q = vec![("stream", stream.to_string())];
        if offset > 0 {
            q.push(("offset", offset.to_string()));
        }
        if a.follow {
            q.push(("follow", "true".to_string()));
        }
        let err = match api.get_stream(&["jobs", &id, "logs"], &q).await {
            // A retry that cannot connect counts as a failure too.
            Err(e) if failures > 0 && http::ClientError::is_unreachable(&e) => e,
            Err(e) => return Err(e),
            Ok(resp) => {
                let mut body = resp.bytes_stream();
                let mut broke = None;
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(bytes) => {
                            failures = 0;
                            offset += bytes.len() as u64;
                            if !write_out(&bytes)? {
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            broke = Some(anyhow::Error::new(e));
                            break;
                        }
                    }
                }
                match broke {
                    None if !a.follow => return Ok(()),
                    None => {
                        // the stream ends with the job: say how it ended
                        let j = job(api.get(&["jobs", &id], &[]).await?)?;
                        let (line, status) = ended_line(&j);
                        note(&line);
                        return match status {
                            0 => Ok(()),
                            s => Err(ExitStatus(s).into()),
                        };
                    }
                    Some(e) => e,
                }
            }
        };
        if !a.follow || failures >= LOG_RETRIES {
            return Err(err.context(format!("reading the logs of job {id}")));
        }
        failures += 1;
        note(&format!(
            "log stream of job {id} interrupted ({err:#}); reconnecting ({failures}/{LOG_RETRIES})"
        ));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
