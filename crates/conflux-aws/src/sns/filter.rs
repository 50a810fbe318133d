//! SNS subscription filter policies, over message attributes (`MessageAttributes` scope) or
//! the JSON message body (`MessageBody` scope): exact strings and numbers, `prefix`,
//! `suffix`, `equals-ignore-case`, `anything-but`, `numeric` ranges, `exists`, and `$or`.

use serde_json::{Map, Value};

/// Limits on what a client may send as a policy.
pub const POLICY_BYTES_MAX: usize = 256 * 1024;
pub const DEPTH_MAX: usize = 8;

/// Checks a policy is a JSON object of the supported shape.
pub fn validate(policy: &str) -> Result<Value, String> {
    if policy.len() > POLICY_BYTES_MAX {
        return Err("Filter policy is too long".into());
    }
    let v: Value = serde_json::from_str(policy)
        .map_err(|e| format!("Filter policy is not valid JSON: {e}"))?;
    if !v.is_object() {
        return Err("Filter policy must be a JSON object".into());
    }
    check_shape(&v, 0)?;
    Ok(v)
}

fn check_shape(v: &Value, depth: usize) -> Result<(), String> {
    if depth > DEPTH_MAX {
        return Err("Filter policy is nested too deeply".into());
    }
    let Some(m) = v.as_object() else {
        return Err("Filter policy must be a JSON object".into());
    };
    for (k, v) in m {
        match v {
            Value::Array(items) if k == "$or" => {
                for i in items {
                    check_shape(i, depth + 1)?;
                }
            }
            Value::Array(_) => {}
            Value::Object(_) => check_shape(v, depth + 1)?,
            _ => return Err(format!("Match value for key {k} must be an array")),
        }
    }
    Ok(())
}

/// A value a condition is tested against.
#[derive(Debug, Clone, PartialEq)]
pub enum FVal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

impl FVal {
    pub fn from_json(v: &Value) -> Vec<FVal> {
        match v {
            Value::String(s) => vec![FVal::Str(s.clone())],
            Value::Number(n) => vec![FVal::Num(n.as_f64().unwrap_or(f64::NAN))],
            Value::Bool(b) => vec![FVal::Bool(*b)],
            Value::Null => vec![FVal::Null],
            Value::Array(a) => a.iter().flat_map(FVal::from_json).collect(),
            Value::Object(_) => Vec::new(),
        }
    }
}

/// Matches `policy` where `lookup(path)` gives the values at a path (None: absent).
pub fn matches(policy: &Value, lookup: &dyn Fn(&[String]) -> Option<Vec<FVal>>) -> bool {
    match_at(policy, &mut Vec::new(), lookup)
}

fn match_at(
    policy: &Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&[String]) -> Option<Vec<FVal>>,
) -> bool {
    let Some(m) = policy.as_object() else {
        return false;
    };
    m.iter().all(|(k, v)| {
        if k == "$or" {
            return v
                .as_array()
                .is_some_and(|alts| alts.iter().any(|a| match_at(a, path, lookup)));
        }
        path.push(k.clone());
        let ok = match v {
            Value::Array(conds) => {
                let vals = lookup(path);
                conds.iter().any(|c| condition(c, vals.as_deref()))
            }
            Value::Object(_) => match_at(v, path, lookup),
            _ => false,
        };
        path.pop();
        ok
    })
}

fn condition(c: &Value, vals: Option<&[FVal]>) -> bool {
    match c {
        Value::Object(op) => operator(op, vals),
        literal => {
            let want = FVal::from_json(literal);
            vals.is_some_and(|vs| vs.iter().any(|v| want.iter().any(|w| eq(v, w))))
        }
    }
}

fn eq(a: &FVal, b: &FVal) -> bool {
    match (a, b) {
        (FVal::Num(x), FVal::Num(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

fn operator(op: &Map<String, Value>, vals: Option<&[FVal]>) -> bool {
    let Some((name, arg)) = op.iter().next() else {
        return false;
    };
    if name == "exists" {
        return arg.as_bool() == Some(vals.is_some());
    }
    let Some(vals) = vals else { return false };
    let strs = || {
        vals.iter().filter_map(|v| match v {
            FVal::Str(s) => Some(s.as_str()),
            _ => None,
        })
    };
    match name.as_str() {
        "prefix" => arg
            .as_str()
            .is_some_and(|p| strs().any(|s| s.starts_with(p))),
        "suffix" => arg.as_str().is_some_and(|p| strs().any(|s| s.ends_with(p))),
        "equals-ignore-case" => arg
            .as_str()
            .is_some_and(|p| strs().any(|s| s.eq_ignore_ascii_case(p))),
        "anything-but" => {
            let excluded = match arg {
                Value::Object(inner) => return !operator(inner, Some(vals)),
                other => FVal::from_json(other),
            };
            !vals.iter().any(|v| excluded.iter().any(|x| eq(v, x)))
        }
        "numeric" => {
            let Some(a) = arg.as_array() else {
                return false;
            };
            vals.iter().any(|v| match v {
                FVal::Num(n) => numeric(a, *n),
                _ => false,
            })
        }
        _ => false,
    }
}

fn numeric(ops: &[Value], n: f64) -> bool {
    ops.chunks(2).all(|pair| {
        let (Some(op), Some(x)) = (pair[0].as_str(), pair.get(1).and_then(Value::as_f64)) else {
            return false;
        };
        match op {
            "=" => (n - x).abs() < 1e-9,
            "<" => n < x,
            "<=" => n <= x,
            ">" => n > x,
            ">=" => n >= x,
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(pairs: &[(&str, FVal)]) -> impl Fn(&[String]) -> Option<Vec<FVal>> {
        let pairs: Vec<(String, FVal)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |path: &[String]| {
            pairs
                .iter()
                .find(|(k, _)| path.len() == 1 && path[0] == *k)
                .map(|(_, v)| vec![v.clone()])
        }
    }

    #[test]
    fn operators() {
        let p =
            json!({"color": ["red", {"prefix": "bl"}], "size": [{"numeric": [">", 2, "<=", 10]}]});
        let l = attrs(&[
            ("color", FVal::Str("blue".into())),
            ("size", FVal::Num(5.0)),
        ]);
        assert!(matches(&p, &l));
        let l = attrs(&[
            ("color", FVal::Str("green".into())),
            ("size", FVal::Num(5.0)),
        ]);
        assert!(!matches(&p, &l));
        let p = json!({"color": [{"anything-but": ["red"]}], "x": [{"exists": false}]});
        assert!(matches(&p, &attrs(&[("color", FVal::Str("blue".into()))])));
        assert!(!matches(&p, &attrs(&[("color", FVal::Str("red".into()))])));
        let p = json!({"$or": [{"a": ["1"]}, {"b": ["2"]}]});
        assert!(matches(&p, &attrs(&[("b", FVal::Str("2".into()))])));
        assert!(validate("[1]").is_err() && validate(r#"{"a": 1}"#).is_err());
    }
}
