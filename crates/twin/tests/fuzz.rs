//! Property tests of every workload reader: arbitrary input and input near
//! a valid file are a clear error or jobs, never a panic, and an error's
//! text is bounded however large the bad field.

use gigafab_twin::workload::{alibaba, gavel, native, sacct, swf, throughputs};
use proptest::prelude::*;

const NATIVE: &str = "id,submit_s,gpus,duration_s,types,tenant,category,priority,preemptible,checkpoint_s,deadline_s,job_type,steps,time_limit_s
a,0,8,3600,h100|h200;mem>=80,acme,startup,2,true,600,90000,,,7200
b,10.5,1,60,vendor:amd,,academia,,false,,,ResNet-18 (batch size 16),1000,
";
const SWF: &str = "; comment\n1 0 5 100 4 -1 -1 4 200 -1 1 3 1 -1 1 -1 -1 -1\n2 10 5 50 2 -1 -1 2 100 -1 1 4 1 -1 1 -1 -1 -1\n";
const ALIBABA: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
p0,8000,30000,1,1000,V100M16|V100M32,LS,Running,0,500,10
p1,8000,30000,2,500,,BE,Succeeded,20,900,30
";
const GAVEL: &str =
    "ResNet-18 (batch size 16)\tcmd\t-n\t1\t1000\t0.0\t1\nA3C\tcmd\t-n\t0\t5000\t60.5\t4\n";
const SACCT: &str = "JobID|Account|Submit|Start|End|State|AllocTRES|Timelimit
10|a|2026-11-21T10:00:00|2026-11-21T10:00:05|2026-11-21T10:01:05|COMPLETED|cpu=2,gres/gpu:h100=2,gres/gpu=2|01:00:00
11|b|2026-11-21T10:00:30|2026-11-21T10:02:00|2026-11-21T12:02:00|FAILED|gres/gpu=8|1-00:00:00
";
const TPUT_CSV: &str = "job_type,accelerator,gpus,steps_per_s\nA3C,v100,1,10.5\nA3C,k80,2,3\n";
const TPUT_JSON: &str = r#"{"V100": {"('a', 1)": {"null": 2.5, "('b', 1)": [1, 1]}}, "K80": {"('a', 1)": {"null": 1.0}}}"#;

fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    (0..base.len(), 0usize..30, "\\PC{0,30}").prop_map(move |(at, len, junk)| {
        let mut at = at;
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + len).min(base.len());
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{}{}", &base[..at], junk, &base[end..])
    })
}

/// An error's text stays bounded.
fn bounded<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        let n = e.to_string().len();
        prop_assert!(n < 2048, "{} bytes", n);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn native(s in mutated(NATIVE)) { bounded(native::parse(&s, "w.csv"))?; }
    #[test]
    fn swf(s in mutated(SWF)) { bounded(swf::parse(&s, "w.swf"))?; }
    #[test]
    fn alibaba(s in mutated(ALIBABA)) { bounded(alibaba::parse(&s, "p.csv"))?; }
    #[test]
    fn gavel(s in mutated(GAVEL)) { bounded(gavel::parse(&s, "g.trace"))?; }
    #[test]
    fn sacct(s in mutated(SACCT)) { bounded(sacct::parse(&s, "h.txt"))?; }
    #[test]
    fn throughputs_csv(s in mutated(TPUT_CSV)) { bounded(throughputs::parse_csv(&s, "t.csv"))?; }
    #[test]
    fn throughputs_json(s in mutated(TPUT_JSON)) { bounded(throughputs::parse_json(&s, "t.json"))?; }
    #[test]
    fn any_reader_on_arbitrary_text(s in "\\PC{0,300}") {
        bounded(native::parse(&s, "w"))?;
        bounded(swf::parse(&s, "w"))?;
        bounded(alibaba::parse(&s, "w"))?;
        bounded(gavel::parse(&s, "w"))?;
        bounded(sacct::parse(&s, "w"))?;
        bounded(throughputs::parse_csv(&s, "w"))?;
        bounded(throughputs::parse_json(&s, "w"))?;
    }
}

#[test]
fn a_huge_bad_field_gives_a_small_error() {
    // once: a 10-million-tab line made a 40 MB message
    let line = "x\t".repeat(500_000);
    for r in [
        native::parse(&format!("id,submit_s,gpus,duration_s\n{line}\n"), "w").map(|_| ()),
        native::parse(&format!("{line}\n"), "w").map(|_| ()),
        gavel::parse(&format!("{line}\n"), "w").map(|_| ()),
    ] {
        let e = r.unwrap_err().to_string();
        assert!(e.len() < 2048, "{} bytes", e.len());
    }
}
