//! Runs the local executor's supervisor: `gigafab-supervise ARGS` behaves
//! as `gigafab job-supervise ARGS` (used by the tests).

fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    std::process::exit(gigafab_exec::local::supervise(&args));
}
