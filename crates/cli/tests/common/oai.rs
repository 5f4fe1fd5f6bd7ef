//! A chat completion through a gateway, for the endpoint tests.

use std::time::Duration;

use serde_json::{Value, json};

/// `POST {base}/v1/endpoints/{endpoint}/chat/completions` with `key`: the
/// status and the answer (JSON, or null).
pub async fn chat(base: &str, endpoint: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/endpoints/{endpoint}/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}
