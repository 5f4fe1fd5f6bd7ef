//! Data embedded in the binary, named `builtin:NAME` wherever a file is
//! expected: the example factories, the 2023 grid carbon-intensity series,
//! Gavel's throughputs and one of its traces, the Philly job distribution,
//! Alibaba's 2023 GPU trace, Azure's 2023 LLM inference traces and an
//! example endpoints file. The files are the repository's `data/` and
//! `examples/factories/` (provenance and licences: `data/README.md`), so
//! every command works from any directory and after `cargo install`.

use std::path::Path;

/// What marks an embedded name.
pub const PREFIX: &str = "builtin:";

/// What an embedded file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Factory,
    Grid,
    Throughputs,
    Distribution,
    Trace,
    Requests,
    Endpoints,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Factory => "factory",
            Kind::Grid => "grid carbon-intensity series",
            Kind::Throughputs => "throughput matrix",
            Kind::Distribution => "job distribution",
            Kind::Trace => "workload trace",
            Kind::Requests => "request trace",
            Kind::Endpoints => "endpoints file",
        }
    }
}

/// One embedded file.
#[derive(Debug)]
pub struct Builtin {
    /// Its name after `builtin:`.
    pub name: &'static str,
    pub kind: Kind,
    /// Where it lives in the repository.
    pub source: &'static str,
    pub text: &'static str,
}

macro_rules! embed {
    ($name:literal, $kind:ident, $path:literal) => {
        Builtin {
            name: $name,
            kind: Kind::$kind,
            source: $path,
            text: include_str!(concat!("../../../", $path)),
        }
    };
}

/// Every embedded file.
pub static ALL: &[Builtin] = &[
    embed!(
        "mixed-small",
        Factory,
        "examples/factories/mixed-small.toml"
    ),
    embed!("local", Factory, "examples/factories/local.toml"),
    embed!("gavel-108", Factory, "examples/factories/gavel-108.toml"),
    embed!(
        "gigafactory-100k",
        Factory,
        "examples/factories/gigafactory-100k.toml"
    ),
    embed!(
        "campus-500k",
        Factory,
        "examples/factories/campus-500k.toml"
    ),
    embed!(
        "alibaba-openb",
        Factory,
        "examples/factories/alibaba-openb.toml"
    ),
    embed!(
        "two-sites-fr-de",
        Factory,
        "examples/factories/two-sites-fr-de.toml"
    ),
    embed!(
        "shared-h100",
        Factory,
        "examples/factories/shared-h100.toml"
    ),
    embed!("FR-2023", Grid, "data/grid/FR_2023_hourly.csv"),
    embed!("DE-2023", Grid, "data/grid/DE_2023_hourly.csv"),
    embed!("NO-2023", Grid, "data/grid/NO_2023_hourly.csv"),
    embed!(
        "gavel-throughputs",
        Throughputs,
        "data/gavel/simulation_throughputs.json"
    ),
    embed!("gavel-0e4a51", Trace, "data/gavel/msr_seed0/0e4a51.trace"),
    embed!(
        "philly",
        Distribution,
        "data/traces/philly_job_distribution.csv"
    ),
    embed!(
        "alibaba-openb-pods",
        Trace,
        "data/traces/alibaba_openb_pods_default.csv"
    ),
    embed!(
        "chat-and-code",
        Endpoints,
        "examples/endpoints/chat-and-code.toml"
    ),
    embed!(
        "azure-conv",
        Requests,
        "data/traces/AzureLLMInferenceTrace_conv.csv"
    ),
    embed!(
        "azure-code",
        Requests,
        "data/traces/AzureLLMInferenceTrace_code.csv"
    ),
    embed!(
        "alibaba-openb-nodes",
        Distribution,
        "data/traces/alibaba_openb_gpu_nodes.csv"
    ),
];

/// The embedded file `name` (without the prefix).
pub fn get(name: &str) -> Option<&'static Builtin> {
    ALL.iter().find(|b| b.name.eq_ignore_ascii_case(name))
}

/// The embedded names of one kind, `builtin:`-prefixed, comma separated.
pub fn names(kind: Option<Kind>) -> String {
    ALL.iter()
        .filter(|b| kind.is_none_or(|k| b.kind == k))
        .map(|b| format!("{PREFIX}{}", b.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name after `builtin:` when `path` is an embedded name.
pub fn name_of(path: &Path) -> Option<&str> {
    path.to_str()?.strip_prefix(PREFIX)
}

/// The embedded file `path` names when it is `builtin:NAME` (None when it
/// is not an embedded name: the caller reads the file system; the core
/// does no I/O). An unknown embedded name is a `NotFound` error that lists
/// the known ones.
pub fn read(path: &Path) -> Option<std::io::Result<String>> {
    let name = name_of(path)?;
    Some(get(name).map(|b| b.text.to_string()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no embedded file `{name}` (known: {})", names(None)),
        )
    }))
}

/// Reads only embedded files: `path` must be `builtin:NAME` (the reader of
/// [`crate::Factory::parse`]; readers of the file system are the twin's
/// and the command line's).
pub fn read_only_builtin(path: &Path) -> std::io::Result<String> {
    read(path).unwrap_or_else(|| {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "{}: a file, and this reader takes only embedded (builtin:) ones",
                path.display()
            ),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_there_and_unknown_names_list_the_known_ones() {
        for b in ALL {
            assert!(!b.text.is_empty(), "{}", b.name);
            let p = format!("{PREFIX}{}", b.name);
            assert_eq!(read(Path::new(&p)).unwrap().unwrap().len(), b.text.len());
        }
        assert!(get("fr-2023").is_some(), "names are case-insensitive");
        let e = read(Path::new("builtin:FR-2024")).unwrap().unwrap_err();
        assert!(
            read(Path::new("fr.csv")).is_none(),
            "a file is not the core's to read"
        );
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains("builtin:FR-2023"), "{e}");
        assert!(names(Some(Kind::Grid)).contains("builtin:NO-2023"));
        assert!(!names(Some(Kind::Grid)).contains("builtin:philly"));
    }

    #[test]
    fn every_embedded_factory_parses_and_grids_load() {
        for b in ALL.iter().filter(|b| b.kind == Kind::Factory) {
            crate::Factory::parse(b.text, &format!("{PREFIX}{}", b.name))
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        }
        for b in ALL.iter().filter(|b| b.kind == Kind::Grid) {
            let s = crate::carbon::CarbonSeries::parse(b.text, b.name).unwrap();
            assert_eq!(s.len(), 8760, "{}", b.name);
        }
    }
}
