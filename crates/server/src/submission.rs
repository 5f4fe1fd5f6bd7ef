//! A submission's own fields, checked at the edge (the HTTP handler),
//! outside the controller's single-writer loop: a pure function of the
//! request, the caller's role and the factory. What the controller still
//! checks is what it alone knows: the allocation and its use, the project,
//! the job type's throughputs, whether the fleet can ever run it.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use gigafab_core::sched::DepKind;
use gigafab_core::spec::SliceReq;
use gigafab_core::{Factory, TypeFilter, Vendor};

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::model::SubmitReq;

/// Most accelerators one job may ask for.
pub const MAX_GPUS: i64 = 65_536;
/// Longest time limit, seconds (30 days).
pub const MAX_TIME_LIMIT_S: i64 = 30 * 86_400;
/// Default time limit, seconds.
pub const DEFAULT_TIME_LIMIT_S: i64 = 3_600;

/// Variables that change what the dynamic loader or the C library loads
/// into a process (glibc's list of unsafe variables for privileged
/// programs), refused in a job's `env`. `LD_LIBRARY_PATH` stays allowed:
/// GPU software needs it, and it reaches only the job's own processes.
const LOADER_ENV: &[&str] = &[
    "LD_PRELOAD",
    "LD_AUDIT",
    "LD_DEBUG",
    "LD_DEBUG_OUTPUT",
    "LD_DYNAMIC_WEAK",
    "LD_HWCAP_MASK",
    "LD_ORIGIN_PATH",
    "LD_PROFILE",
    "LD_PROFILE_OUTPUT",
    "LD_SHOW_AUXV",
    "LD_USE_LOAD_BIAS",
    "LD_BIND_NOT",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
];

/// A submission whose fields are valid; only [`validate`] makes one.
#[derive(Debug)]
pub struct ValidSubmit {
    /// The request as sent (its checked fields are below, normalised).
    pub(crate) req: SubmitReq,
    pub(crate) alloc_id: i64,
    /// Its name, else its program's.
    pub(crate) name: String,
    pub(crate) time_limit_s: i64,
    pub(crate) priority: i64,
    /// Accelerator types, lower case, each one the factory's catalog knows.
    pub(crate) types: Vec<String>,
    pub(crate) vendor: Option<String>,
    pub(crate) env: BTreeMap<String, String>,
    /// The endpoint it is a replica of (only the endpoints' manager makes
    /// such a submission, with [`ValidSubmit::replica_of`]).
    pub(crate) endpoint: Option<i64>,
    /// The jobs it waits for (`dependency`), each with its state when the
    /// submission was checked ([`ValidSubmit::resolve_after`]).
    pub(crate) after: Vec<After>,
    /// A job array: its task indexes (at least one) and how many may run
    /// at once.
    pub(crate) array: Option<(Vec<i64>, Option<u32>)>,
    /// A slice of one accelerator instead of whole ones.
    pub(crate) slice: Option<SliceReq>,
}

/// A job a submission waits for: how, which, and its state as the API saw
/// it (empty until resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct After {
    pub kind: DepKind,
    pub job: i64,
    pub state: String,
}

/// Most jobs one submission may wait for.
pub const MAX_AFTER: usize = 64;

/// Most tasks one array may have.
pub const MAX_ARRAY: usize = 1000;
/// The largest task index.
pub const MAX_TASK: i64 = 1_000_000;

/// Slurm's `--array` form: `0-99`, `1,3,5`, `0-30:10`, each part a
/// range or an index, then `%N` (at most N tasks at once). Indexes in
/// ascending order, each once.
pub fn parse_array(s: &str) -> Result<(Vec<i64>, Option<u32>), ApiError> {
    let bad = |why: String| ApiError::invalid(format!("array: {why}"));
    let (list, limit) = match s.split_once('%') {
        Some((l, n)) => {
            let n: u32 = n
                .trim()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(format!("`%{n}`: at most how many at once, a count")))?;
            (l, Some(n))
        }
        None => (s, None),
    };
    let index = |x: &str| -> Result<i64, ApiError> {
        x.trim()
            .parse::<i64>()
            .ok()
            .filter(|i| (0..=MAX_TASK).contains(i))
            .ok_or_else(|| bad(format!("`{x}` is not a task index (0 to {MAX_TASK})")))
    };
    let mut out = std::collections::BTreeSet::new();
    // every index named counts, repeated or not: the work is bounded
    let mut named = 0usize;
    for part in list.split(',') {
        let (range, step) = match part.split_once(':') {
            Some((r, st)) => (
                r,
                st.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|x| *x >= 1)
                    .ok_or_else(|| bad(format!("`{part}`: the step is not a count")))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (index(a)?, index(b)?),
            None => (index(range)?, index(range)?),
        };
        if lo > hi {
            return Err(bad(format!("`{part}` runs backwards")));
        }
        let mut i = lo;
        while i <= hi {
            out.insert(i);
            named += 1;
            if out.len() > MAX_ARRAY || named > 10 * MAX_ARRAY {
                return Err(bad(format!("more than {MAX_ARRAY} tasks")));
            }
            match i.checked_add(step) {
                Some(n) => i = n,
                None => break,
            }
        }
    }
    Ok((out.into_iter().collect(), limit))
}

/// Slurm's `--dependency` form: `KIND:ID[:ID...][,KIND:ID...]`, KIND one
/// of `afterok`, `afternotok`, `afterany`.
pub fn parse_dependency(s: &str) -> Result<Vec<(DepKind, i64)>, ApiError> {
    let bad = |why: String| ApiError::invalid(format!("dependency: {why}"));
    if s.contains('?') {
        return Err(bad(
            "`?` (any of) is not supported: `,` joins what must all hold".into(),
        ));
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let mut it = part.split(':');
        let kind = it.next().unwrap_or("");
        let k = DepKind::parse(kind).ok_or_else(|| {
            bad(format!(
                "`{kind}` is not one of afterok, afternotok, afterany (as in `afterok:12`)"
            ))
        })?;
        let mut any = false;
        for id in it {
            if out.len() >= MAX_AFTER {
                return Err(bad(format!("at most {MAX_AFTER} jobs")));
            }
            let id: i64 = id
                .trim()
                .parse()
                .ok()
                .filter(|i| *i >= 1)
                .ok_or_else(|| bad(format!("`{id}` in `{part}` is not a job id")))?;
            if !out.contains(&(k, id)) {
                out.push((k, id));
            }
            any = true;
        }
        if !any {
            return Err(bad(format!("`{part}` names no job (as in `{kind}:12`)")));
        }
    }
    if out.len() > MAX_AFTER {
        return Err(bad(format!("at most {MAX_AFTER} jobs")));
    }
    Ok(out)
}

impl ValidSubmit {
    /// The jobs it waits for, each with the state `state_of` finds (its
    /// error, a job not found among the caller's, stops the submission).
    pub(crate) async fn resolve_after<F, Fut>(&mut self, mut state_of: F) -> Result<(), ApiError>
    where
        F: FnMut(i64) -> Fut,
        Fut: std::future::Future<Output = Result<String, ApiError>>,
    {
        for a in &mut self.after {
            a.state = state_of(a.job).await?;
        }
        Ok(())
    }
}

/// The time limit a replica's job is recorded with: it has none of its
/// own (it runs until its endpoint stops it), ten years.
pub const SERVICE_LIMIT_S: i64 = 10 * 365 * 86_400;

impl ValidSubmit {
    /// The request as sent.
    pub fn request(&self) -> &SubmitReq {
        &self.req
    }

    /// This submission as a replica of endpoint `endpoint`: a service
    /// without a time limit, charged as it runs.
    pub(crate) fn replica_of(mut self, endpoint: i64) -> ValidSubmit {
        self.endpoint = Some(endpoint);
        self.time_limit_s = SERVICE_LIMIT_S;
        self
    }
}

/// Checks `req` of `who` against `factory`: every field within its
/// bounds, accelerator types the catalog knows, an environment that does
/// not reach what gigafab sets or how programs load, a raised priority
/// only from an admin or operator.
pub fn validate(
    who: &Principal,
    req: SubmitReq,
    factory: &Factory,
) -> Result<ValidSubmit, ApiError> {
    if who.role == Role::Operator {
        return Err(ApiError::forbidden("operators do not submit jobs"));
    }
    let alloc_id = req
        .allocation
        .id()
        .ok_or_else(|| ApiError::invalid("allocation: expected an allocation id"))?;
    if !(1..=MAX_GPUS).contains(&req.gpus) {
        return Err(ApiError::invalid(format!(
            "gpus: {} is not within 1..={MAX_GPUS}",
            req.gpus
        )));
    }
    if req.command.is_empty() || req.command[0].is_empty() {
        return Err(ApiError::invalid(
            "command: needs a program (a non-empty array of strings)",
        ));
    }
    let total: usize = req.command.iter().map(String::len).sum();
    if req.command.len() > 4096 || total > 256 * 1024 {
        return Err(ApiError::invalid(
            "command: longer than 4096 arguments or 256 KiB",
        ));
    }
    if req.command.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid(
            "command: an argument contains a NUL byte",
        ));
    }
    let name = req.name.clone().unwrap_or_else(|| {
        let p = &req.command[0];
        p.rsplit('/').next().unwrap_or(p).chars().take(64).collect()
    });
    if name.len() > 128 || name.contains('\0') {
        return Err(ApiError::invalid("name: at most 128 bytes"));
    }
    if req
        .memory_gb
        .is_some_and(|m| !(m.is_finite() && (0.001..=1e6).contains(&m)))
    {
        return Err(ApiError::invalid(
            "memory_gb: must be within 0.001..=1000000",
        ));
    }
    if req
        .cpus
        .is_some_and(|c| !(c.is_finite() && (0.01..=100_000.0).contains(&c)))
    {
        return Err(ApiError::invalid("cpus: must be within 0.01..=100000"));
    }
    let limit = req.time_limit_s.unwrap_or(DEFAULT_TIME_LIMIT_S);
    if !(1..=MAX_TIME_LIMIT_S).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "time_limit_s: {limit} is not within 1..={MAX_TIME_LIMIT_S} (30 days)"
        )));
    }
    let priority = req.priority.unwrap_or(0);
    if !(-10_000..=10_000).contains(&priority) {
        return Err(ApiError::invalid("priority: must be within -10000..=10000"));
    }
    if priority > 0 && !who.global() {
        // a raised priority preempts other tenants' jobs: an
        // operator's decision (an allocation's QOS priority is the
        // tenant's lever); a tenant may lower its own jobs
        return Err(ApiError::forbidden(
            "priority: above 0 only an admin or operator sets it (ask for an allocation with a QOS priority); tenants may lower it",
        ));
    }
    let mut types: Vec<String> = req.types.clone().unwrap_or_default();
    if let Some(t) = &req.type_ {
        types.push(t.clone());
    }
    for t in &mut types {
        *t = t.trim().to_ascii_lowercase();
        if factory.catalog.index(t).is_none() {
            let fleet: std::collections::BTreeSet<&str> = factory
                .pools
                .iter()
                .map(|p| factory.catalog.get(p.accel).id.as_str())
                .collect();
            return Err(ApiError::invalid(format!(
                "type: unknown accelerator type `{t}` (this fleet has: {}; known types: {})",
                fleet.into_iter().collect::<Vec<_>>().join(", "),
                factory.catalog.ids()
            )));
        }
    }
    let vendor = match &req.vendor {
        Some(v) => Some(
            Vendor::parse(v)
                .ok_or_else(|| {
                    ApiError::invalid(format!("vendor: `{v}` is not nvidia, amd or other"))
                })?
                .to_string(),
        ),
        None => None,
    };
    if let Some(m) = req.min_memory_gb
        && !(m.is_finite() && m > 0.0 && m <= 100_000.0)
    {
        return Err(ApiError::invalid(
            "min_memory_gb: must be > 0 and at most 100000",
        ));
    }
    let slice = slice_of(&req, &types, vendor.as_deref(), factory)?;
    let env = req.env.clone().unwrap_or_default();
    if env.len() > 256 {
        return Err(ApiError::invalid("env: at most 256 variables"));
    }
    for (k, v) in &env {
        let okk = !k.is_empty()
            && k.len() <= 256
            && !k.as_bytes()[0].is_ascii_digit()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !okk || v.contains('\0') || v.len() > 64 * 1024 {
            return Err(ApiError::invalid(format!(
                "env: bad variable `{}`",
                k.chars().take(64).collect::<String>()
            )));
        }
        if k.starts_with("GIGAFAB_") || k == "CUDA_VISIBLE_DEVICES" || k == "ROCR_VISIBLE_DEVICES" {
            return Err(ApiError::invalid(format!("env: `{k}` is set by gigafab")));
        }
        if LOADER_ENV.contains(&k.as_str()) {
            // a second line: the job's environment never reaches a
            // privileged process anyway (its supervisor has its own)
            return Err(ApiError::invalid(format!(
                "env: `{k}` changes how programs load and is not accepted; set it in the command (`env {k}=... program`)"
            )));
        }
    }
    if let Some(w) = &req.workdir
        && (!w.starts_with('/') || w.contains('\0') || w.len() > 4096)
    {
        return Err(ApiError::invalid("workdir: must be an absolute path"));
    }
    let array = match req.array.as_deref().map(str::trim) {
        None => None,
        Some(a) => {
            if req.output_model.is_some() {
                return Err(ApiError::invalid(
                    "array: not with output_model (each task would make a version of the model)",
                ));
            }
            Some(parse_array(a)?)
        }
    };
    let after = match req.dependency.as_deref().map(str::trim) {
        None | Some("") => Vec::new(),
        Some(d) => parse_dependency(d)?
            .into_iter()
            .map(|(kind, job)| After {
                kind,
                job,
                state: String::new(),
            })
            .collect(),
    };
    Ok(ValidSubmit {
        req,
        alloc_id,
        name,
        time_limit_s: limit,
        priority,
        types,
        vendor,
        env,
        endpoint: None,
        after,
        array,
        slice,
    })
}

/// The slice a submission asks for (`gpu_share`, `gpu_memory_gb`,
/// `gpu_profile`), checked against the fleet: a slice no pool offers is
/// refused with the slices that would hold it.
fn slice_of(
    req: &SubmitReq,
    types: &[String],
    vendor: Option<&str>,
    factory: &Factory,
) -> Result<Option<SliceReq>, ApiError> {
    if req.gpu_share.is_none() && req.gpu_memory_gb.is_none() && req.gpu_profile.is_none() {
        return Ok(None);
    }
    if req.gpus != 1 {
        return Err(ApiError::invalid(format!(
            "gpus: a slice is one accelerator's; ask for gpus 1 with gpu_share, gpu_memory_gb or gpu_profile (got {})",
            req.gpus
        )));
    }
    let mut slice = SliceReq::default();
    if let Some(x) = req.gpu_share {
        slice = SliceReq::parse(&x.to_string())
            .map_err(|m| ApiError::invalid(format!("gpu_share: {m}")))?;
    }
    if let Some(p) = &req.gpu_profile {
        let named =
            SliceReq::parse(p).map_err(|m| ApiError::invalid(format!("gpu_profile: {m}")))?;
        if named.profile.is_none() {
            return Err(ApiError::invalid(format!(
                "gpu_profile: `{p}` is a share; give it as gpu_share"
            )));
        }
        slice.profile = named.profile;
    }
    let memory = req.gpu_memory_gb;
    if let Some(m) = memory
        && !(m.is_finite() && m > 0.0 && m <= 100_000.0)
    {
        return Err(ApiError::invalid(
            "gpu_memory_gb: must be > 0 and at most 100000",
        ));
    }
    let filter = TypeFilter {
        types: types.to_vec(),
        vendor: vendor.and_then(Vendor::parse),
        min_memory_gb: memory.into_iter().chain(req.min_memory_gb).reduce(f64::max),
        sites: Vec::new(),
        slice: Some(slice.clone()),
    };
    let fits = factory
        .pools
        .iter()
        .any(|p| filter.accepts(factory.catalog.get(p.accel)));
    if fits {
        return Ok(Some(slice));
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsatisfiable",
        slice_refusal(&filter, &slice, factory),
    ))
}

/// Why no pool holds a slice request, with the slices that would: the
/// fleet's own, then the named slices of its accelerator types.
fn slice_refusal(filter: &TypeFilter, slice: &SliceReq, factory: &Factory) -> String {
    let gb = filter.min_memory_gb.unwrap_or(0.0);
    let mut asked = Vec::new();
    if let Some(p) = &slice.profile {
        asked.push(format!("slice {p}"));
    }
    if slice.milli > 0 {
        asked.push(format!("{} of an accelerator", slice.milli as f64 / 1000.0));
    }
    if gb > 0.0 {
        asked.push(format!("{gb} GB"));
    }
    let mut offered = Vec::new();
    let mut would = Vec::new();
    let mut parents = std::collections::BTreeSet::new();
    for p in &factory.pools {
        let t = factory.catalog.get(p.accel);
        match &t.slice {
            Some(s) => {
                let line = format!(
                    "{} ({}, {} GB, {} of an accelerator)",
                    t.id,
                    s.name,
                    t.memory_gb,
                    s.milli as f64 / 1000.0
                );
                if !offered.contains(&line) {
                    offered.push(line);
                }
                parents.insert(s.parent.clone());
            }
            None => {
                parents.insert(t.id.clone());
            }
        }
    }
    for parent in &parents {
        let names: Vec<&str> = gigafab_core::share::profiles::fitting(parent, gb, slice.milli)
            .iter()
            .map(|p| p.name)
            .collect();
        if !names.is_empty() {
            would.push(format!("{parent}: {}", names.join(", ")));
        }
    }
    let mut msg = format!(
        "no slice of this fleet holds {}; its slices: {}",
        asked.join(" with "),
        if offered.is_empty() {
            "none (no pool is shared)".to_string()
        } else {
            offered.join("; ")
        }
    );
    if !would.is_empty() {
        msg += &format!(
            "; the slices that would fit it, smallest first: {}",
            would.join("; ")
        );
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_and_dependencies_are_read_in_slurms_forms() {
        assert_eq!(parse_array("0-3").unwrap(), (vec![0, 1, 2, 3], None));
        assert_eq!(
            parse_array("1,3,0-30:10%2").unwrap(),
            (vec![0, 1, 3, 10, 20, 30], Some(2))
        );
        assert_eq!(parse_array("7").unwrap(), (vec![7], None));
        // a step past i64's end: no overflow, no panic
        assert_eq!(
            parse_array("1-2:9223372036854775807").unwrap(),
            (vec![1], None)
        );
        // the same indexes named again and again: bounded work, refused
        let repeated = vec!["0-999"; 20].join(",");
        assert!(parse_array(&repeated).is_err());
        let many: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        assert!(
            parse_dependency(&format!("afterok:{}", many.join(":")))
                .unwrap_err()
                .to_string()
                .contains("at most 64 jobs")
        );
        for (bad, needle) in [
            ("5-1", "runs backwards"),
            ("0-2000", "more than 1000 tasks"),
            ("x", "not a task index"),
            ("-1", "not a task index"),
            ("0-9%0", "at most how many"),
            ("0-9:0", "the step"),
            ("1,,2", "not a task index"),
        ] {
            let e = parse_array(bad).unwrap_err().to_string();
            assert!(e.contains("array: ") && e.contains(needle), "{bad}: {e}");
        }
        assert_eq!(
            parse_dependency("afterok:4:5,afterany:6").unwrap(),
            vec![
                (DepKind::AfterOk, 4),
                (DepKind::AfterOk, 5),
                (DepKind::AfterAny, 6)
            ]
        );
        for (bad, needle) in [
            ("after:1", "not one of afterok"),
            ("afterok", "names no job"),
            ("afterok:x", "not a job id"),
            ("afterok:1?afterany:2", "not supported"),
        ] {
            let e = parse_dependency(bad).unwrap_err().to_string();
            assert!(
                e.contains("dependency: ") && e.contains(needle),
                "{bad}: {e}"
            );
        }
    }

    fn factory() -> Factory {
        Factory::parse(
            "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4\n",
            "t.toml",
        )
        .unwrap()
    }

    fn who(role: Role) -> Principal {
        Principal {
            user_id: 2,
            name: "ada".into(),
            login: "acme/ada".into(),
            role,
            org_id: Some(1),
            token_id: 1,
            expires_ms: None,
        }
    }

    fn check(req: SubmitReq) -> Result<ValidSubmit, ApiError> {
        validate(&who(Role::Member), req, &factory())
    }

    #[test]
    fn a_plain_submission_gets_its_defaults() {
        let v = check(SubmitReq::new(
            3,
            2,
            vec!["/usr/bin/python3".into(), "x.py".into()],
        ))
        .unwrap();
        assert_eq!(v.alloc_id, 3);
        assert_eq!(v.name, "python3");
        assert_eq!(v.time_limit_s, DEFAULT_TIME_LIMIT_S);
        assert_eq!(v.priority, 0);
        assert!(v.types.is_empty() && v.env.is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = || SubmitReq::new(1, 1, vec!["x".into()]);
        let cases: Vec<(SubmitReq, &str)> = vec![
            (SubmitReq::new(1, 0, vec!["x".into()]), "gpus:"),
            (SubmitReq::new(1, 1, vec![]), "command:"),
            (SubmitReq::new(1, 1, vec!["a\0b".into()]), "NUL"),
            (
                SubmitReq {
                    time_limit_s: Some(0),
                    ..base()
                },
                "time_limit_s:",
            ),
            (
                SubmitReq {
                    priority: Some(20_000),
                    ..base()
                },
                "priority:",
            ),
            (
                SubmitReq {
                    memory_gb: Some(f64::NAN),
                    ..base()
                },
                "memory_gb:",
            ),
            (
                SubmitReq {
                    cpus: Some(0.0),
                    ..base()
                },
                "cpus:",
            ),
            (
                SubmitReq {
                    vendor: Some("intel".into()),
                    ..base()
                },
                "vendor:",
            ),
            (
                SubmitReq {
                    min_memory_gb: Some(-1.0),
                    ..base()
                },
                "min_memory_gb:",
            ),
            (
                SubmitReq {
                    workdir: Some("rel/dir".into()),
                    ..base()
                },
                "workdir:",
            ),
            (
                SubmitReq {
                    env: Some([("LD_PRELOAD".to_string(), "/x.so".to_string())].into()),
                    ..base()
                },
                "LD_PRELOAD",
            ),
            (
                SubmitReq {
                    env: Some([("CUDA_VISIBLE_DEVICES".to_string(), "0".to_string())].into()),
                    ..base()
                },
                "set by gigafab",
            ),
        ];
        for (req, want) in cases {
            let e = check(req).expect_err(want);
            assert!(e.message.contains(want), "{want}: {}", e.message);
        }
        let e = check(SubmitReq {
            type_: Some("zz9".into()),
            ..base()
        })
        .unwrap_err();
        assert!(e.message.contains("this fleet has: h100"), "{}", e.message);
        let v = check(SubmitReq {
            type_: Some(" H100 ".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(v.types, vec!["h100"]);
    }

    #[test]
    fn roles() {
        let req = || SubmitReq {
            priority: Some(5),
            ..SubmitReq::new(1, 1, vec!["x".into()])
        };
        assert_eq!(check(req()).unwrap_err().code, "forbidden");
        assert!(validate(&who(Role::Admin), req(), &factory()).is_ok());
        let e = validate(
            &who(Role::Operator),
            SubmitReq::new(1, 1, vec!["x".into()]),
            &factory(),
        )
        .unwrap_err();
        assert!(
            e.message.contains("operators do not submit"),
            "{}",
            e.message
        );
        let lowered = SubmitReq {
            priority: Some(-5),
            ..SubmitReq::new(1, 1, vec!["x".into()])
        };
        assert_eq!(check(lowered).unwrap().priority, -5);
    }
}
