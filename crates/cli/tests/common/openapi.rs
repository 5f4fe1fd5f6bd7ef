//! Checks answers against the server's own OpenAPI document: the schema
//! the document declares for (method, path, status) must accept the answer
//! (types, enums, required and undeclared properties, items, `$ref`s), so
//! the document and the answers cannot drift apart unnoticed.

use serde_json::Value;

/// The schema `doc` declares for an answer to `method path` with `status`
/// (the path's query left out; `{param}` segments match anything).
pub fn answer_schema<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    status: u16,
) -> Option<&'a Value> {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.split('/').collect();
    let (_, ops) = doc["paths"].as_object()?.iter().find(|(tpl, _)| {
        let t: Vec<&str> = tpl.split('/').collect();
        t.len() == segs.len()
            && t.iter()
                .zip(&segs)
                .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
    })?;
    let op = &ops[method.to_ascii_lowercase()];
    let responses = op.get("responses")?;
    let key = status.to_string();
    let r = responses
        .get(&key)
        .or_else(|| responses.get(format!("{}XX", key.chars().next()?)))?;
    r.get("content")?.get("application/json")?.get("schema")
}

/// Where `v` does not fit `schema` (`None`: it fits).
pub fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Option<String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next()?;
        return check(doc, &doc["components"]["schemas"][name], v, at);
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Some(format!(
            "{at}: {v} is not one of {}",
            Value::Array(e.clone())
        ));
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "string" => v.is_string(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => true,
        });
        if !ok {
            return Some(format!("{at}: {v} is not of type {t}"));
        }
    }
    if let Some(o) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !o.contains_key(r) {
                return Some(format!("{at}: `{r}` is required"));
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => {
                    if let Some(e) = check(doc, s, x, &format!("{at}.{k}")) {
                        return Some(e);
                    }
                }
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Some(format!("{at}: `{k}` is not in the document"));
                }
                None => {}
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            if let Some(e) = check(doc, items, x, &format!("{at}[{i}]")) {
                return Some(e);
            }
        }
    }
    None
}
