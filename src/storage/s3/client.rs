//! A small S3 client: exactly the calls the S3 blob store makes, signed with
//! SigV4 (`sigv4::S3Signer`), over reqwest. Endpoint, region and
//! credentials come from where every AWS tool reads them ([`S3Settings::from_env`]).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};

use crate::sigv4::{S3Signer, format_amz_date, s3_encode_path};

/// Where and as whom to talk to S3.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// `https://s3.us-east-1.amazonaws.com`, `http://127.0.0.1:8333`, …
    pub endpoint: String,
    pub bucket: String,
    pub path_style: bool,
    pub signer: S3Signer,
}

/// Why an S3 call failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The object (or upload) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// S3 answered with an error: status, code and message.
    #[error("S3 {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// S3 could not be reached, or answered 5xx / throttled.
    #[error("S3 is unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected S3 answer: {0}")]
    Protocol(String),
}

impl S3Error {
    fn from_reqwest(e: reqwest::Error) -> S3Error {
        S3Error::Unavailable(e.to_string())
    }
}

/// The value of an environment variable, ignoring empty ones.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `key = value` pairs of section `[name]` of an AWS INI file.
fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.starts_with(';') || l.is_empty() {
            continue;
        }
        if let Some(sec) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let sec = sec.trim();
            inside = sec == name || sec == format!("profile {name}");
            continue;
        }
        if inside && let Some((k, v)) = l.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

impl S3Settings {
    /// Settings for `bucket` from the standard AWS sources: endpoint from
    /// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (else AWS's own for the
    /// region); region from `AWS_REGION`, `AWS_DEFAULT_REGION` or the
    /// profile's `region`; credentials from `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else the profile
    /// (`AWS_PROFILE`, default `default`) in `AWS_SHARED_CREDENTIALS_FILE`
    /// (`~/.aws/credentials`) and `AWS_CONFIG_FILE` (`~/.aws/config`).
    /// Path-style addressing is used when forced or when the endpoint host
    /// is an IP address or `localhost`.
    pub fn from_env(bucket: &str, force_path_style: bool) -> anyhow::Result<S3Settings> {
        let home = var("HOME").unwrap_or_default();
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let read = |v: &str, default: String| {
            std::fs::read_to_string(var(v).unwrap_or(default)).unwrap_or_default()
        };
        let creds_file = read(
            "AWS_SHARED_CREDENTIALS_FILE",
            format!("{home}/.aws/credentials"),
        );
        let config_file = read("AWS_CONFIG_FILE", format!("{home}/.aws/config"));
        let mut prof = ini_section(&config_file, &profile);
        prof.extend(ini_section(&creds_file, &profile));
        let from_profile = |k: &str| {
            prof.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| from_profile("region"))
            .unwrap_or_else(|| "us-east-1".into());
        let (key, secret, token) = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(k), Some(s)) => (k, s, var("AWS_SESSION_TOKEN")),
            _ => match (
                from_profile("aws_access_key_id"),
                from_profile("aws_secret_access_key"),
            ) {
                (Some(k), Some(s)) => (k, s, from_profile("aws_session_token")),
                _ => anyhow::bail!(
                    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials"
                ),
            },
        };
        let endpoint = var("AWS_ENDPOINT_URL_S3")
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| from_profile("endpoint_url"))
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        let host_is_ip = host.parse::<std::net::IpAddr>().is_ok()
            || host.starts_with('[')
            || host == "localhost";
        Ok(S3Settings {
            endpoint,
            bucket: bucket.to_string(),
            path_style: force_path_style || host_is_ip,
            signer: S3Signer {
                access_key_id: key,
                secret_access_key: secret,
                session_token: token,
                region,
            },
        })
    }
}

/// One object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// Epoch milliseconds.
    pub modified_ms: i64,
}

/// An S3 client bound to one bucket.
#[derive(Clone)]
pub struct S3Client {
    settings: S3Settings,
    http: reqwest::Client,
}

/// The body of a request.
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// A streamed body (a spooled part) whose length and SHA-256 (hex) are
    /// known in advance, as SigV4 needs them before the first byte is sent.
    Stream {
        body: reqwest::Body,
        len: u64,
        sha256: String,
    },
}

impl S3Client {
    pub fn new(settings: S3Settings) -> anyhow::Result<S3Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(30));
        if settings.endpoint.starts_with("http://") {
            // No TLS: do not ask the system for CA certificates (a
            // `FROM scratch` image has none).
            builder = builder.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        let http = builder.build().map_err(|e| {
            anyhow::anyhow!(
                "{e}: an https:// S3 endpoint needs the system's CA certificates (e.g. /etc/ssl/certs)"
            )
        })?;
        Ok(S3Client { settings, http })
    }

    pub fn bucket(&self) -> &str {
        &self.settings.bucket
    }

    /// The URL parts of `key`: scheme+authority, host header, encoded path.
    fn location(&self, key: &str) -> (String, String, String) {
        let (scheme, rest) = self
            .settings
            .endpoint
            .split_once("://")
            .unwrap_or(("https", &self.settings.endpoint));
        let (authority, base_path) = match rest.split_once('/') {
            Some((a, p)) => (a.to_string(), format!("/{p}")),
            None => (rest.to_string(), String::new()),
        };
        let key_path = s3_encode_path(key);
        if self.settings.path_style {
            let path = format!("{base_path}/{}/{key_path}", self.settings.bucket);
            (format!("{scheme}://{authority}"), authority, path)
        } else {
            let host = format!("{}.{authority}", self.settings.bucket);
            (
                format!("{scheme}://{host}"),
                host,
                format!("{base_path}/{key_path}"),
            )
        }
    }

    /// Send a signed request; the response, whatever its status.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        extra_headers: &[(&str, String)],
        body: Body,
    ) -> Result<reqwest::Response, S3Error> {
        let (base, host, path) = self.location(key);
        let now = unix_secs();
        let amz_date = format_amz_date(now);
        let payload_hash = match &body {
            Body::Empty => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"")),
            Body::Bytes(b) => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b)),
            Body::Stream { sha256, .. } => sha256.clone(),
        };
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-amz-date".into(), amz_date.clone()),
            ("x-amz-content-sha256".into(), payload_hash.clone()),
        ];
        if let Some(t) = &self.settings.signer.session_token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        for (k, v) in extra_headers {
            headers.push((k.to_string(), v.clone()));
        }
        let q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let auth = self.settings.signer.authorization(
            method.as_str(),
            &path,
            &q,
            &headers,
            &payload_hash,
            &amz_date,
        );
        let query_string = q
            .iter()
            .map(|(k, v)| {
                if v.is_empty() && (k == "uploads" || k == "delete") {
                    crate::sigv4::s3_encode_query(k)
                } else {
                    format!(
                        "{}={}",
                        crate::sigv4::s3_encode_query(k),
                        crate::sigv4::s3_encode_query(v)
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        let url = if query_string.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query_string}")
        };
        let mut req = self.http.request(method, url).header("authorization", auth);
        for (k, v) in &headers {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        req = match body {
            Body::Empty => req.header("content-length", "0"),
            Body::Bytes(b) => req.body(b),
            Body::Stream { body, len, .. } => {
                req.header("content-length", len.to_string()).body(body)
            }
        };
        req.send().await.map_err(S3Error::from_reqwest)
    }

    /// Check a response's status; read the S3 error document when it failed.
    async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, S3Error> {
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let code = xml_first(&text, "Code").unwrap_or_default();
        let message = xml_first(&text, "Message").unwrap_or_default();
        Err(match (status, code.as_str()) {
            (404, _) | (_, "NoSuchKey") | (_, "NoSuchUpload") => {
                S3Error::NotFound(what.to_string())
            }
            (500.., _) | (429, _) | (_, "SlowDown") | (_, "ServiceUnavailable") => {
                S3Error::Unavailable(format!("{status} {code}: {message}"))
            }
            _ => S3Error::Api {
                status,
                code,
                message,
            },
        })
    }

    /// The text of a successful answer. S3 may answer `200 OK` and still
    /// report an error in the body (CompleteMultipartUpload, CopyObject).
    async fn text(resp: reqwest::Response, what: &str) -> Result<String, S3Error> {
        let text = Self::check(resp, what)
            .await?
            .text()
            .await
            .map_err(S3Error::from_reqwest)?;
        if text.contains("<Error>") {
            return Err(S3Error::Api {
                status: 200,
                code: xml_first(&text, "Code").unwrap_or_default(),
                message: xml_first(&text, "Message").unwrap_or_default(),
            });
        }
        Ok(text)
    }

    pub async fn put_object(&self, key: &str, body: Body) -> Result<(), S3Error> {
        let resp = self.send(reqwest::Method::PUT, key, &[], &[], body).await?;
        Self::check(resp, key).await?;
        Ok(())
    }

    /// `GET` an object (or a byte range of it): its bytes as a stream.
    pub async fn get_object(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, S3Error> {
        let headers: Vec<(&str, String)> = match range {
            Some((first, last)) => vec![("range", format!("bytes={first}-{last}"))],
            None => vec![],
        };
        let resp = self
            .send(reqwest::Method::GET, key, &[], &headers, Body::Empty)
            .await?;
        let resp = Self::check(resp, key).await?;
        Ok(resp.bytes_stream().map_err(std::io::Error::other))
    }

    /// The whole of a (small) object.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, S3Error> {
        let resp = self
            .send(reqwest::Method::GET, key, &[], &[], Body::Empty)
            .await?;
        Self::check(resp, key)
            .await?
            .bytes()
            .await
            .map_err(S3Error::from_reqwest)
    }

    /// The size of an object, or `None` when there is none.
    pub async fn head_object(&self, key: &str) -> Result<Option<u64>, S3Error> {
        let resp = self
            .send(reqwest::Method::HEAD, key, &[], &[], Body::Empty)
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = Self::check(resp, key).await?;
        Ok(resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    /// Delete an object; a missing one is not an error.
    pub async fn delete_object(&self, key: &str) -> Result<(), S3Error> {
        let resp = self
            .send(reqwest::Method::DELETE, key, &[], &[], Body::Empty)
            .await?;
        match Self::check(resp, key).await {
            Ok(_) | Err(S3Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every object whose key starts with `prefix` (ListObjectsV2, all pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("list-type", "2"), ("prefix", prefix), ("max-keys", "1000")];
            if let Some(t) = &token {
                q.push(("continuation-token", t.as_str()));
            }
            let resp = self
                .send(reqwest::Method::GET, "", &q, &[], Body::Empty)
                .await?;
            let text = Self::text(resp, prefix).await?;
            for item in xml_blocks(&text, "Contents") {
                let key = xml_first(item, "Key").unwrap_or_default();
                let size = xml_first(item, "Size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let modified_ms = xml_first(item, "LastModified")
                    .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                out.push(Listed {
                    key,
                    size,
                    modified_ms,
                });
            }
            let truncated = xml_first(&text, "IsTruncated").is_some_and(|v| v == "true");
            token = xml_first(&text, "NextContinuationToken");
            if !truncated || token.is_none() {
                return Ok(out);
            }
        }
    }

    pub async fn create_multipart_upload(&self, key: &str) -> Result<String, S3Error> {
        let resp = self
            .send(
                reqwest::Method::POST,
                key,
                &[("uploads", "")],
                &[],
                Body::Empty,
            )
            .await?;
        let text = Self::text(resp, key).await?;
        xml_first(&text, "UploadId")
            .ok_or_else(|| S3Error::Protocol(format!("no UploadId in {text:.200}")))
    }

    /// Upload part `number` of a multipart upload; its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Body,
    ) -> Result<String, S3Error> {
        let n = number.to_string();
        let resp = self
            .send(
                reqwest::Method::PUT,
                key,
                &[("partNumber", &n), ("uploadId", upload_id)],
                &[],
                body,
            )
            .await?;
        let resp = Self::check(resp, key).await?;
        etag(&resp)
    }

    /// Copy `range` (inclusive) of object `source` into part `number`; its ETag.
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        source: &str,
        range: (u64, u64),
    ) -> Result<String, S3Error> {
        let n = number.to_string();
        let headers = [
            ("x-amz-copy-source", self.copy_source(source)),
            (
                "x-amz-copy-source-range",
                format!("bytes={}-{}", range.0, range.1),
            ),
        ];
        let resp = self
            .send(
                reqwest::Method::PUT,
                key,
                &[("partNumber", &n), ("uploadId", upload_id)],
                &headers,
                Body::Empty,
            )
            .await?;
        let text = Self::text(resp, key).await?;
        xml_first(&text, "ETag").ok_or_else(|| S3Error::Protocol(format!("no ETag in {text:.200}")))
    }

    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), S3Error> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let resp = self
            .send(
                reqwest::Method::POST,
                key,
                &[("uploadId", upload_id)],
                &[],
                Body::Bytes(Bytes::from(xml)),
            )
            .await?;
        Self::text(resp, key).await?;
        Ok(())
    }

    pub async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let resp = self
            .send(
                reqwest::Method::DELETE,
                key,
                &[("uploadId", upload_id)],
                &[],
                Body::Empty,
            )
            .await?;
        match Self::check(resp, key).await {
            Ok(_) | Err(S3Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Multipart uploads in progress under `prefix`: (key, upload id, initiated ms).
    pub async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, i64)>, S3Error> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut q = vec![("uploads", ""), ("prefix", prefix)];
            if !key_marker.is_empty() {
                q.push(("key-marker", key_marker.as_str()));
                q.push(("upload-id-marker", id_marker.as_str()));
            }
            let resp = self
                .send(reqwest::Method::GET, "", &q, &[], Body::Empty)
                .await?;
            let text = Self::text(resp, prefix).await?;
            for u in xml_blocks(&text, "Upload") {
                let key = xml_first(u, "Key").unwrap_or_default();
                let id = xml_first(u, "UploadId").unwrap_or_default();
                let initiated = xml_first(u, "Initiated")
                    .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                out.push((key, id, initiated));
            }
            let truncated = xml_first(&text, "IsTruncated").is_some_and(|v| v == "true");
            key_marker = xml_first(&text, "NextKeyMarker").unwrap_or_default();
            id_marker = xml_first(&text, "NextUploadIdMarker").unwrap_or_default();
            if !truncated || key_marker.is_empty() {
                return Ok(out);
            }
        }
    }

    fn copy_source(&self, source: &str) -> String {
        format!("/{}/{}", self.settings.bucket, s3_encode_path(source))
    }

    /// Server-side copy of a whole object (at most 5 GiB).
    pub async fn copy_object(&self, source: &str, key: &str) -> Result<(), S3Error> {
        let headers = [("x-amz-copy-source", self.copy_source(source))];
        let resp = self
            .send(reqwest::Method::PUT, key, &[], &headers, Body::Empty)
            .await?;
        Self::text(resp, key).await?;
        Ok(())
    }

    /// A presigned `GET` URL of `key`, valid for `expires_secs`.
    pub fn presigned_get(&self, key: &str, expires_secs: u64) -> String {
        let (base, host, path) = self.location(key);
        let now = unix_secs();
        let q = self
            .settings
            .signer
            .presigned_query("GET", &host, &path, expires_secs, now);
        format!("{base}{path}?{q}")
    }

    /// Whether the bucket answers (for start-up checks and health).
    pub async fn check_bucket(&self) -> Result<(), S3Error> {
        let resp = self
            .send(
                reqwest::Method::GET,
                "",
                &[("list-type", "2"), ("max-keys", "1")],
                &[],
                Body::Empty,
            )
            .await?;
        Self::check(resp, &self.settings.bucket).await.map(|_| ())
    }
}

fn etag(resp: &reqwest::Response) -> Result<String, S3Error> {
    resp.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| S3Error::Protocol("no ETag header".into()))
}

/// The text of the first `<tag>…</tag>` in `xml`, entities decoded.
fn xml_first(xml: &str, tag: &str) -> Option<String> {
    xml_blocks(xml, tag).first().map(|b| xml_unescape(b))
}

/// The inner text of every `<tag>…</tag>` in `xml`, as written.
fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Seconds since the Unix epoch, for request dates and presigned URLs.
fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_and_profiles() {
        let doc = "<R><Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>4</Size></Contents><IsTruncated>false</IsTruncated></R>";
        let items = xml_blocks(doc, "Contents");
        assert_eq!(items.len(), 2);
        assert_eq!(xml_first(items[0], "Key").unwrap(), "a&b");
        let ini = "[default]\nregion = eu-west-1\n[profile ci]\nregion=us-east-2\naws_access_key_id = K\n";
        assert_eq!(
            ini_section(ini, "ci")[1],
            ("aws_access_key_id".into(), "K".into())
        );
        assert_eq!(
            ini_section(ini, "default"),
            [("region".into(), "eu-west-1".into())]
        );
    }
}
