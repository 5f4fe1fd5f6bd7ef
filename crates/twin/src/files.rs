//! Reading what the core parses: embedded files (`builtin:NAME`) and the
//! file system. The scheduler core does no I/O; the twin and the command
//! line read through here.

use std::path::Path;

use gigafab_core::carbon::{CarbonError, CarbonSeries};
use gigafab_core::{Factory, FactoryError};

/// Reads `path`: the embedded file when it is `builtin:NAME`, else the file
/// system. An unknown embedded name is a `NotFound` error that lists the
/// known ones.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    gigafab_core::builtin::read(path).unwrap_or_else(|| std::fs::read_to_string(path))
}

/// Reads and validates a factory file (and the grid series it names).
pub fn load_factory(path: &Path) -> Result<Factory, FactoryError> {
    let text = read_to_string(path).map_err(|e| FactoryError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    Factory::parse_with(&text, &path.display().to_string(), &mut read_to_string)
}

/// Reads a grid carbon-intensity series (CSV).
pub fn load_carbon(path: &Path) -> Result<CarbonSeries, CarbonError> {
    CarbonSeries::load_with(path, &mut read_to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_embedded_names_read_alike() {
        let f = load_factory(Path::new("../../examples/factories/two-sites-fr-de.toml")).unwrap();
        assert!(f.sites.iter().all(|s| s.carbon.is_some()));
        let b = load_factory(Path::new("builtin:two-sites-fr-de")).unwrap();
        assert_eq!(f.accelerators(), b.accelerators());
        assert_eq!(
            load_carbon(Path::new("builtin:FR-2023")).unwrap().len(),
            8760
        );
        let e = load_factory(Path::new("no/such.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no/such.toml"), "{e}");
    }
}
