//! Reading Kafka's JSON message definitions: comment stripping, the serde model, version ranges.

use serde::Deserialize;

/// Removes `//` comments (to the end of the line), leaving string literals untouched.
pub fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        out.push(escaped);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '/' if chars.peek() == Some(&'/') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// An inclusive version range; `None` in a field means the empty range ("none").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub min: i16,
    pub max: i16,
}

impl Versions {
    /// Parses "0+", "1-3", "4" or "none" (empty: `Ok(None)`).
    pub fn parse(s: &str) -> Result<Option<Versions>, String> {
        let s = s.trim();
        if s == "none" {
            return Ok(None);
        }
        let num = |t: &str| {
            t.trim()
                .parse::<i16>()
                .map_err(|e| format!("bad version {s:?}: {e}"))
        };
        if let Some(min) = s.strip_suffix('+') {
            return Ok(Some(Versions {
                min: num(min)?,
                max: i16::MAX,
            }));
        }
        if let Some((a, b)) = s.split_once('-') {
            let (min, max) = (num(a)?, num(b)?);
            if min > max {
                return Err(format!("empty version range {s:?}"));
            }
            return Ok(Some(Versions { min, max }));
        }
        let v = num(s)?;
        Ok(Some(Versions { min: v, max: v }))
    }

    pub fn intersect(&self, other: &Versions) -> Option<Versions> {
        let min = self.min.max(other.min);
        let max = self.max.min(other.max);
        (min <= max).then_some(Versions { min, max })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSpec {
    pub api_key: Option<i16>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub listeners: Vec<String>,
    pub name: String,
    pub valid_versions: String,
    #[serde(default = "none")]
    pub flexible_versions: String,
    #[serde(default)]
    pub latest_version_unstable: bool,
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
    #[serde(default)]
    pub common_structs: Vec<StructSpec>,
}

fn none() -> String {
    "none".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default = "none")]
    pub versions: String,
    pub nullable_versions: Option<String>,
    pub tagged_versions: Option<String>,
    #[serde(default, deserialize_with = "tag_number")]
    pub tag: Option<u32>,
    pub default: Option<serde_json::Value>,
    pub flexible_versions: Option<String>,
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
    #[serde(default)]
    pub about: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StructSpec {
    pub name: String,
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
}

/// Tags appear both as numbers and as strings ("0") in the definitions.
fn tag_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom("bad tag")),
        Some(serde_json::Value::String(s)) => s.trim().parse().map(Some).map_err(D::Error::custom),
        Some(other) => Err(D::Error::custom(format!("bad tag {other}"))),
    }
}

pub fn parse_message(src: &str) -> Result<MessageSpec, String> {
    // Going through `Value` tolerates duplicate keys (some definitions repeat "versions").
    let value: serde_json::Value =
        serde_json::from_str(&strip_comments(src)).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_comments_but_not_inside_strings() {
        let src =
            "{ // comment\n \"a\": \"http://x//y\", // tail \"quoted\"\n \"b\": \"q\\\"//\" }";
        let out = strip_comments(src);
        assert_eq!(out, "{ \n \"a\": \"http://x//y\", \n \"b\": \"q\\\"//\" }");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"], "http://x//y");
        assert_eq!(v["b"], "q\"//");
    }

    #[test]
    fn parses_version_ranges() {
        assert_eq!(
            Versions::parse("0+").unwrap(),
            Some(Versions {
                min: 0,
                max: i16::MAX
            })
        );
        assert_eq!(
            Versions::parse("1-3").unwrap(),
            Some(Versions { min: 1, max: 3 })
        );
        assert_eq!(
            Versions::parse(" 7 ").unwrap(),
            Some(Versions { min: 7, max: 7 })
        );
        assert_eq!(Versions::parse("none").unwrap(), None);
        assert!(Versions::parse("3-1").is_err());
        assert!(Versions::parse("x+").is_err());
        let a = Versions { min: 2, max: 9 };
        assert_eq!(
            a.intersect(&Versions {
                min: 5,
                max: i16::MAX
            }),
            Some(Versions { min: 5, max: 9 })
        );
        assert_eq!(a.intersect(&Versions { min: 10, max: 12 }), None);
    }
}
