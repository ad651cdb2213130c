//! v1-style layer ids and `<id>/json` files, byte-compatible with what
//! `docker save` 20.10 writes (moby `image/tarexport/save.go` and
//! `image/v1/imagev1.go`: `CreateID` and the `V1Image` struct).
//!
//! Go marshals structs in field order, sorts map keys, and escapes `<`, `>`,
//! `&`, U+2028 and U+2029; this module re-encodes the image config the same
//! way so the ids match the daemon's.

use oci_spec::image::Digest;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::WriteError;

/// Computes the v1 layer ids `docker save` 20.10–24 uses as folder names,
/// one per diff ID, base layer first.
///
/// For a layer below the top, moby hashes a blank v1 image (created at the
/// Unix epoch); for the top layer, the image's own v1 fields.
pub fn v1_layer_ids(config_json: &[u8]) -> Result<Vec<String>, WriteError> {
    let config: Value = serde_json::from_slice(config_json).map_err(WriteError::BadConfig)?;
    let diff_ids = crate::config_diff_ids(&config)?;
    Ok(chain_ids(&diff_ids, Some(&config)))
}

/// The v1 layer ids of every layer but the top one, which alone depends
/// on the image config: what [`v1_layer_ids`] gives, without its last id.
pub fn v1_layer_ids_below_top(diff_ids: &[Digest]) -> Vec<String> {
    let below = diff_ids.len().saturating_sub(1);
    chain_ids(&diff_ids[..below], None)
}

/// Ids of the layers `diff_ids`; the last one is the top layer (hashed
/// with the image's own fields) when `config` is given.
fn chain_ids(diff_ids: &[Digest], config: Option<&Value>) -> Vec<String> {
    let mut ids = Vec::with_capacity(diff_ids.len());
    let mut parent: Option<String> = None;
    let mut chain: Option<String> = None;
    for (i, diff_id) in diff_ids.iter().enumerate() {
        chain = Some(match chain {
            None => diff_id.to_string(),
            Some(prev) => format!(
                "sha256:{}",
                sha256_hex(format!("{prev} {diff_id}").as_bytes())
            ),
        });
        let mut fields = match config {
            Some(config) if i + 1 == diff_ids.len() => top_fields(config),
            _ => blank_fields(),
        };
        // CreateID: the struct goes through a map, so keys come out sorted.
        fields.push((
            "layer_id".into(),
            go_string(chain.as_deref().unwrap_or_default()),
        ));
        if let Some(p) = &parent {
            fields.push(("parent".into(), go_string(&format!("sha256:{p}"))));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let id = sha256_hex(object(&fields).as_bytes());
        parent = Some(id.clone());
        ids.push(id);
    }
    ids
}

/// The `<id>/json` file of layer `index`, as `docker save` 20.10 writes it.
pub(crate) fn v1_layer_json(
    config_json: &[u8],
    index: usize,
    count: usize,
    id: &str,
    parent: Option<&str>,
) -> Result<Vec<u8>, WriteError> {
    let config: Value = serde_json::from_slice(config_json).map_err(WriteError::BadConfig)?;
    let top = index + 1 == count;
    let mut fields = if top {
        top_fields(&config)
    } else {
        blank_fields()
    };
    if !top
        && let Some(os) = config.get("os").and_then(Value::as_str)
        && !os.is_empty()
    {
        fields.push(("os".into(), go_string(os)));
    }
    let mut head = vec![("id".to_string(), go_string(id))];
    if let Some(p) = parent {
        head.push(("parent".into(), go_string(p)));
    }
    head.extend(fields);
    Ok(object(&head).into_bytes())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

type Fields = Vec<(String, String)>;

fn object(fields: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&go_string(k));
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

/// `image.V1Image{Created: time.Unix(0, 0)}` (daemon in UTC).
fn blank_fields() -> Fields {
    vec![
        ("created".into(), go_string("1970-01-01T00:00:00Z")),
        ("container_config".into(), container_config(None)),
    ]
}

/// The fields of `image.V1Image` decoded from the image config, in struct order,
/// without `id` and `parent`.
fn top_fields(c: &Value) -> Fields {
    let mut f = Fields::new();
    let s = |k: &str| c.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    if let Some(v) = s("comment") {
        f.push(("comment".into(), go_string(v)));
    }
    let created = c.get("created").and_then(Value::as_str).map(go_time);
    f.push((
        "created".into(),
        go_string(created.as_deref().unwrap_or("0001-01-01T00:00:00Z")),
    ));
    if let Some(v) = s("container") {
        f.push(("container".into(), go_string(v)));
    }
    f.push((
        "container_config".into(),
        container_config(c.get("container_config")),
    ));
    if let Some(v) = s("docker_version") {
        f.push(("docker_version".into(), go_string(v)));
    }
    if let Some(v) = s("author") {
        f.push(("author".into(), go_string(v)));
    }
    if let Some(cfg) = c.get("config").filter(|v| v.is_object()) {
        f.push(("config".into(), container_config(Some(cfg))));
    }
    for k in ["architecture", "variant", "os"] {
        if let Some(v) = s(k) {
            f.push((k.into(), go_string(v)));
        }
    }
    if let Some(n) = c.get("Size").and_then(Value::as_i64).filter(|n| *n != 0) {
        f.push(("Size".into(), n.to_string()));
    }
    f
}

/// Go's `container.Config` (API 1.41) marshalled from a JSON object.
fn container_config(v: Option<&Value>) -> String {
    let empty = Map::new();
    let m = v.and_then(Value::as_object).unwrap_or(&empty);
    let mut f = Fields::new();
    let string = |k: &str| go_string(m.get(k).and_then(Value::as_str).unwrap_or(""));
    let boolean = |k: &str| {
        m.get(k)
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()
    };
    let nonempty = |k: &str| match m.get(k) {
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        _ => false,
    };
    for k in ["Hostname", "Domainname", "User"] {
        f.push((k.into(), string(k)));
    }
    for k in ["AttachStdin", "AttachStdout", "AttachStderr"] {
        f.push((k.into(), boolean(k)));
    }
    if nonempty("ExposedPorts") {
        f.push(("ExposedPorts".into(), empty_struct_map(&m["ExposedPorts"])));
    }
    for k in ["Tty", "OpenStdin", "StdinOnce"] {
        f.push((k.into(), boolean(k)));
    }
    f.push(("Env".into(), string_list(m.get("Env"))));
    f.push(("Cmd".into(), string_list(m.get("Cmd"))));
    if let Some(h) = m.get("Healthcheck").filter(|h| h.is_object()) {
        f.push(("Healthcheck".into(), healthcheck(h)));
    }
    if nonempty("ArgsEscaped") {
        f.push(("ArgsEscaped".into(), "true".into()));
    }
    f.push(("Image".into(), string("Image")));
    f.push((
        "Volumes".into(),
        empty_struct_map(m.get("Volumes").unwrap_or(&Value::Null)),
    ));
    f.push(("WorkingDir".into(), string("WorkingDir")));
    f.push(("Entrypoint".into(), string_list(m.get("Entrypoint"))));
    if nonempty("NetworkDisabled") {
        f.push(("NetworkDisabled".into(), "true".into()));
    }
    if nonempty("MacAddress") {
        f.push(("MacAddress".into(), string("MacAddress")));
    }
    f.push(("OnBuild".into(), string_list(m.get("OnBuild"))));
    f.push(("Labels".into(), string_map(m.get("Labels"))));
    if nonempty("StopSignal") {
        f.push(("StopSignal".into(), string("StopSignal")));
    }
    if let Some(n) = m.get("StopTimeout").and_then(Value::as_i64) {
        f.push(("StopTimeout".into(), n.to_string()));
    }
    if nonempty("Shell") {
        f.push(("Shell".into(), string_list(m.get("Shell"))));
    }
    object(&f)
}

fn healthcheck(h: &Value) -> String {
    let mut f = Fields::new();
    if h.get("Test")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        f.push(("Test".into(), string_list(h.get("Test"))));
    }
    for k in ["Interval", "Timeout", "StartPeriod", "Retries"] {
        if let Some(n) = h.get(k).and_then(Value::as_i64).filter(|n| *n != 0) {
            f.push((k.into(), n.to_string()));
        }
    }
    object(&f)
}

/// `[]string` / `strslice.StrSlice` (a bare string decodes to one element).
fn string_list(v: Option<&Value>) -> String {
    match v {
        Some(Value::Array(a)) => {
            let items: Vec<String> = a
                .iter()
                .map(|x| go_string(x.as_str().unwrap_or_default()))
                .collect();
            format!("[{}]", items.join(","))
        }
        Some(Value::String(s)) => format!("[{}]", go_string(s)),
        _ => "null".into(),
    }
}

fn string_map(v: Option<&Value>) -> String {
    match v {
        Some(Value::Object(o)) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let f: Fields = keys
                .into_iter()
                .map(|k| (k.clone(), go_string(o[k].as_str().unwrap_or_default())))
                .collect();
            object(&f)
        }
        _ => "null".into(),
    }
}

fn empty_struct_map(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let f: Fields = keys
                .into_iter()
                .map(|k| (k.clone(), "{}".to_string()))
                .collect();
            object(&f)
        }
        _ => "null".into(),
    }
}

/// Re-formats an RFC 3339 time as Go's `time.Time.MarshalJSON` does
/// (RFC 3339 with nanoseconds, trailing zeros trimmed, `Z` for UTC).
fn go_time(t: &str) -> String {
    let (main, zone) = match t.find(['Z', 'z']) {
        Some(p) => (&t[..p], "Z".to_string()),
        None => match t.rfind(['+', '-']).filter(|p| *p > 10) {
            Some(p) if &t[p..] == "+00:00" || &t[p..] == "-00:00" => (&t[..p], "Z".into()),
            Some(p) => (&t[..p], t[p..].to_string()),
            None => (t, String::new()),
        },
    };
    let main = match main.split_once('.') {
        Some((secs, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                secs.to_string()
            } else {
                format!("{secs}.{frac}")
            }
        }
        None => main.to_string(),
    };
    format!("{main}{zone}")
}

/// A JSON string as Go's `encoding/json` (1.19) writes it, HTML-escaped.
fn go_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", ch as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_formats() {
        assert_eq!(
            go_time("2026-11-26T14:23:06.222909934Z"),
            "2026-11-26T14:23:06.222909934Z"
        );
        assert_eq!(
            go_time("2026-11-26T14:23:06.200Z"),
            "2026-11-26T14:23:06.2Z"
        );
        assert_eq!(
            go_time("2026-11-26T14:23:06.000+00:00"),
            "2026-11-26T14:23:06Z"
        );
        assert_eq!(
            go_time("2026-11-26T14:23:06+02:00"),
            "2026-11-26T14:23:06+02:00"
        );
    }

    #[test]
    fn go_strings_escape_html() {
        assert_eq!(
            go_string("a<b>&\"\n\u{1}"),
            r#""a\u003cb\u003e\u0026\"\n\u0001""#
        );
    }
}
