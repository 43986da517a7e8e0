//! External key custody: HashiCorp Vault / OpenBao's transit secrets engine.
//!
//! With transit custody, key material never reaches Berth's database or
//! disk: each KMS key is the transit key `berth-<key id>` and the
//! server-managed `AES256` key is `berth-aes256`; wrapping and unwrapping are
//! transit `encrypt` / `decrypt` calls (derived keys, with Berth's
//! associated data as the derivation context, so a ciphertext only decrypts
//! for the data it was made for), rotation is transit's `rotate`, and
//! crypto-shredding deletes the transit key. An unreachable transit is
//! [`KmsError::Unavailable`], never a fallback to local keys.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::KmsError;

/// Where the transit engine is and how to authenticate.
#[derive(Clone)]
pub struct TransitSettings {
    /// Base URL, e.g. `http://127.0.0.1:8200`.
    pub url: String,
    /// The token (`X-Vault-Token`). Never printed.
    pub token: zeroize::Zeroizing<String>,
    /// The transit engine's mount path (default `transit`).
    pub mount: String,
}

impl std::fmt::Debug for TransitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitSettings")
            .field("url", &self.url)
            .field("token", &"***")
            .field("mount", &self.mount)
            .finish()
    }
}

/// A client of one transit engine.
#[derive(Clone, Debug)]
pub struct Transit {
    settings: TransitSettings,
    http: reqwest::Client,
}

/// The transit key that holds a KMS key's material.
pub fn key_name(key_id: &str) -> String {
    format!("berth-{key_id}")
}

/// The transit key of the server-managed (`AES256`) key.
pub const SERVER_KEY: &str = "berth-aes256";

impl Transit {
    pub fn new(settings: TransitSettings) -> Result<Transit, KmsError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| KmsError::Unavailable(format!("building the transit client: {e}")))?;
        Ok(Transit { settings, http })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/v1/{}/{path}",
            self.settings.url.trim_end_matches('/'),
            self.settings.mount.trim_matches('/')
        )
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), KmsError> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("X-Vault-Token", self.settings.token.as_str());
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| {
            KmsError::Unavailable(format!(
                "transit at {} cannot be reached: {}",
                self.settings.url,
                e.without_url()
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| {
            KmsError::Unavailable(format!("reading transit's answer: {}", e.without_url()))
        })?;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Ok((status, v))
    }

    fn failure(what: &str, status: u16, v: &Value) -> KmsError {
        let errors = v.get("errors").map(|e| e.to_string()).unwrap_or_default();
        KmsError::Unavailable(format!("transit {what} failed ({status}): {errors}"))
    }

    /// Check that the engine answers and the token is accepted (at
    /// startup), by making sure the server-managed key exists: it needs no
    /// right beyond those Berth uses anyway (no `list`).
    pub async fn check(&self) -> Result<(), KmsError> {
        self.create_key(SERVER_KEY).await.map_err(|e| match e {
            KmsError::Unavailable(m) => {
                KmsError::Unavailable(format!("{m} (mount '{}')", self.settings.mount))
            }
            e => e,
        })
    }

    /// Create a derived AES-256-GCM key (idempotent).
    pub async fn create_key(&self, name: &str) -> Result<(), KmsError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("keys/{name}"),
                Some(json!({"type": "aes256-gcm96", "derived": true})),
            )
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(Self::failure("key creation", status, &v))
        }
    }

    /// Encrypt under the newest version of `name`, with `context` as the
    /// derivation context: the ciphertext (`vault:vN:…`) and N.
    pub async fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<(String, u32), KmsError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("encrypt/{name}"),
                Some(json!({
                    "plaintext": STANDARD.encode(plaintext),
                    "context": STANDARD.encode(context),
                })),
            )
            .await?;
        if status != 200 {
            return Err(Self::failure("encrypt", status, &v));
        }
        let ct = v["data"]["ciphertext"]
            .as_str()
            .ok_or_else(|| Self::failure("encrypt", status, &v))?
            .to_string();
        let version =
            ciphertext_version(&ct).ok_or_else(|| Self::failure("encrypt", status, &v))?;
        Ok((ct, version))
    }

    /// Decrypt a transit ciphertext. `Ok(None)`: transit refused it (altered,
    /// wrong context, another key, a destroyed version).
    pub async fn decrypt(
        &self,
        name: &str,
        ciphertext: &str,
        context: &[u8],
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, KmsError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("decrypt/{name}"),
                Some(json!({
                    "ciphertext": ciphertext,
                    "context": STANDARD.encode(context),
                })),
            )
            .await?;
        match status {
            200 => {
                let b64 = v["data"]["plaintext"].as_str().unwrap_or("");
                Ok(STANDARD.decode(b64).ok().map(zeroize::Zeroizing::new))
            }
            // Bad ciphertext, wrong context, unknown key.
            400 | 404 => Ok(None),
            _ => Err(Self::failure("decrypt", status, &v)),
        }
    }

    /// Rotate `name`: its new newest version.
    pub async fn rotate(&self, name: &str) -> Result<u32, KmsError> {
        let (status, v) = self
            .call(reqwest::Method::POST, &format!("keys/{name}/rotate"), None)
            .await?;
        if !(200..300).contains(&status) {
            return Err(Self::failure("rotate", status, &v));
        }
        self.latest_version(name).await
    }

    pub async fn latest_version(&self, name: &str) -> Result<u32, KmsError> {
        let (status, v) = self
            .call(reqwest::Method::GET, &format!("keys/{name}"), None)
            .await?;
        if status != 200 {
            return Err(Self::failure("key read", status, &v));
        }
        v["data"]["latest_version"]
            .as_u64()
            .map(|n| n as u32)
            .ok_or_else(|| Self::failure("key read", status, &v))
    }

    /// Delete `name` for good (crypto-shredding); a key already gone is fine.
    pub async fn delete_key(&self, name: &str) -> Result<(), KmsError> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("keys/{name}/config"),
                Some(json!({"deletion_allowed": true})),
            )
            .await?;
        if status == 404 {
            return Ok(());
        }
        if !(200..300).contains(&status) {
            return Err(Self::failure("key configuration", status, &v));
        }
        let (status, v) = self
            .call(reqwest::Method::DELETE, &format!("keys/{name}"), None)
            .await?;
        if (200..300).contains(&status) || status == 404 {
            Ok(())
        } else {
            Err(Self::failure("key deletion", status, &v))
        }
    }
}

/// N of a `vault:vN:…` ciphertext.
pub fn ciphertext_version(ct: &str) -> Option<u32> {
    ct.strip_prefix("vault:v")?.split(':').next()?.parse().ok()
}

/// The derivation context of the master key's transit ciphertext.
const MASTER_CONTEXT: &[u8] = b"berth/master-key";

/// The master key sealed by transit key `key_name`: `file` holds its
/// transit ciphertext; a file that does not exist yet is created (mode 0600)
/// with a fresh random key. The data directory then holds nothing that
/// opens the secrets without the transit engine.
pub async fn load_master_key(
    transit: &Transit,
    key_name: &str,
    file: &std::path::Path,
) -> anyhow::Result<crate::secrets::MasterKey> {
    use anyhow::Context;
    use std::io::Write;
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let ct = text.trim();
            if !ct.starts_with("vault:") {
                anyhow::bail!(
                    "{} does not hold a transit ciphertext (vault:v…); it is not a master key sealed by {key_name}",
                    file.display()
                );
            }
            let plain = transit
                .decrypt(key_name, ct, MASTER_CONTEXT)
                .await?
                .with_context(|| {
                    format!(
                        "transit key {key_name} refused to unseal the master key in {}",
                        file.display()
                    )
                })?;
            let key: [u8; 32] = plain[..]
                .try_into()
                .map_err(|_| anyhow::anyhow!("the unsealed master key is not 32 bytes"))?;
            Ok(crate::secrets::MasterKey::from_bytes(&key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            transit.create_key(key_name).await?;
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            crate::secrets::random_bytes(&mut key[..]);
            let (ct, _) = transit.encrypt(key_name, &key[..], MASTER_CONTEXT).await?;
            let mut f = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(file)
                    .with_context(|| format!("creating {}", file.display()))?
            };
            f.write_all(ct.as_bytes())?;
            f.sync_all()?;
            Ok(crate::secrets::MasterKey::from_bytes(&key))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}
