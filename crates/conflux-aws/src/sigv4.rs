//! AWS Signature Version 4 verification of `Authorization`-header signed requests. Only
//! enforced when credentials are configured; otherwise every request is accepted, as local
//! emulators do.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{AwsError, AwsResult};
use crate::message::hex;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn uri_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks the request's signature against `credentials` (access key id, secret).
pub fn verify(
    credentials: &[(String, String)],
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> AwsResult<()> {
    if credentials.is_empty() {
        return Ok(());
    }
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
    let auth = header("authorization")
        .ok_or_else(|| AwsError::invalid_client_token("Request is missing Authentication Token"))?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| AwsError::invalid_client_token("Unsupported authorization scheme."))?;
    let mut credential = "";
    let mut signed_headers = "";
    let mut signature = "";
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = v;
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let (akid, scope) = credential
        .split_once('/')
        .ok_or_else(|| AwsError::invalid_client_token("Malformed credential."))?;
    let secret = credentials
        .iter()
        .find(|(k, _)| k == akid)
        .map(|(_, s)| s)
        .ok_or_else(|| {
            AwsError::invalid_client_token("The security token included in the request is invalid.")
        })?;
    let scope_parts: Vec<&str> = scope.split('/').collect();
    if scope_parts.len() != 4 {
        return Err(AwsError::invalid_client_token(
            "Malformed credential scope.",
        ));
    }
    let amz_date = header("x-amz-date").unwrap_or("");
    let mut query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
                .collect()
        })
        .unwrap_or_default();
    query.sort();
    let canonical_query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload_hash = header("x-amz-content-sha256")
        .map(str::to_string)
        .unwrap_or_else(|| hex(&Sha256::digest(body)));
    let path = if parts.uri.path().is_empty() {
        "/"
    } else {
        parts.uri.path()
    };
    let canonical = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        parts.method,
        canonical_query.join("&")
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{secret}").as_bytes(),
        scope_parts[0].as_bytes(),
    );
    for p in &scope_parts[1..] {
        key = hmac(&key, p.as_bytes());
    }
    let expected = hex(&hmac(&key, to_sign.as_bytes()));
    if expected != signature {
        return Err(AwsError::signature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_matches_the_aws_documented_example() {
        // From the AWS SigV4 documentation ("Examples of how to derive a signing key").
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), b"20120215");
        for p in ["us-east-1", "iam", "aws4_request"] {
            key = hmac(&key, p.as_bytes());
        }
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
