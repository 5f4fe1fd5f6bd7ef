//! The portal's words: one file of `key = text` lines per language
//! (`crates/server/portal-en.txt`), so that a translation is one new file
//! with the same keys. Templates ask for a key with `t.get("key")`; a key
//! missing from the file shows as itself (and a test checks that every
//! key a template asks for is in the English file).

use std::collections::HashMap;

/// The words of one language.
pub struct Words {
    map: HashMap<&'static str, &'static str>,
}

/// The English file, built into the binary.
pub const ENGLISH: &str = include_str!("../../portal-en.txt");

impl Words {
    /// Parses a words file: `key = text` lines, `#` comments, blank lines.
    pub fn parse(text: &'static str) -> Result<Words, String> {
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once(" = ")
                .ok_or_else(|| format!("line {}: expected `key = text`", i + 1))?;
            if map.insert(k.trim(), v.trim()).is_some() {
                return Err(format!("line {}: `{}` given twice", i + 1, k.trim()));
            }
        }
        Ok(Words { map })
    }

    pub fn english() -> Words {
        Words::parse(ENGLISH).expect("portal-en.txt is well formed (tested)")
    }

    /// The text of `key` (the key itself when missing).
    pub fn get<'a>(&'a self, key: &'a str) -> &'a str {
        self.map.get(key).copied().unwrap_or(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_a_template_asks_for_is_in_the_english_file() {
        let w = Words::parse(ENGLISH).unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
        let mut asked = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split("t.get(\"").skip(1) {
                let key = part.split('"').next().unwrap();
                assert!(
                    w.has(key),
                    "{}: `{key}` is not in portal-en.txt",
                    path.display()
                );
                asked += 1;
            }
        }
        assert!(asked > 50, "only {asked} keys found");
    }

    #[test]
    fn a_malformed_words_file_is_refused_with_its_line() {
        let e = Words::parse("a = b\nnot a pair\n").err().unwrap();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = Words::parse("a = b\na = c\n").err().unwrap();
        assert!(e.contains("given twice"), "{e}");
    }
}
