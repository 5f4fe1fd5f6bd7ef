//! Checks answers against the server's own OpenAPI document: the schema
//! the document declares for (method, path, status) must accept the answer
//! (types, enums, required and undeclared properties, items, `$ref`s), so
//! the document and the answers cannot drift apart unnoticed.

use serde_json::Value;

/// Whether `doc` declares `status` for `method path` (None: no such
/// operation in the document).
pub fn declares(doc: &Value, method: &str, path: &str, status: u16) -> Option<bool> {
    let op = operation(doc, method, path)?;
    Some(op.get("responses")?.get(status.to_string()).is_some())
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.split('/').collect();
    let (_, ops) = doc["paths"].as_object()?.iter().find(|(tpl, _)| {
        let t: Vec<&str> = tpl.split('/').collect();
        t.len() == segs.len()
            && t.iter()
                .zip(&segs)
                .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
    })?;
    ops.get(method.to_ascii_lowercase())
}

/// The schema `doc` declares for an answer to `method path` with `status`
/// (the path's query left out; `{param}` segments match anything).
pub fn answer_schema<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    status: u16,
) -> Option<&'a Value> {
    let responses = operation(doc, method, path)?.get("responses")?;
    let key = status.to_string();
    let r = responses
        .get(&key)
        .or_else(|| responses.get(format!("{}XX", key.chars().next()?)))?;
    r.get("content")?.get("application/json")?.get("schema")
}

/// Where `v` does not fit `schema` (`None`: it fits), by the JSON Schema
/// 2020-12 rules of OpenAPI 3.1 (the `jsonschema` crate). The document's
/// objects are closed here: an answer with a property the document does
/// not declare fails, so the document cannot lag behind the answers.
pub fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Option<String> {
    let mut components = doc["components"].clone();
    close(&mut components);
    let mut root = schema.clone();
    close(&mut root);
    root["components"] = components;
    // formats too: a `date-time` must be one
    let validator = match jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
    {
        Ok(x) => x,
        Err(e) => return Some(format!("{at}: the document's schema is not valid: {e}")),
    };
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{at}{}: {e}", e.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// Adds `additionalProperties: false` to every object schema that
/// declares properties and says nothing of others.
fn close(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            m.values_mut().for_each(close);
        }
        Value::Array(a) => a.iter_mut().for_each(close),
        _ => {}
    }
}
