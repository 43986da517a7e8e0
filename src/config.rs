//! Server configuration: defaults, overridden by a TOML file, overridden by
//! `BERTH_*` environment variables, overridden by command-line flags.
//! `docs/configuration.md` lists every setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The settings of `berth serve`, fully resolved.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Upload sessions untouched for this long are removed with their bytes.
    pub upload_max_age: Duration,
    /// How often abandoned uploads are looked for.
    pub upload_reap_interval: Duration,
    /// Largest manifest accepted.
    pub max_manifest_bytes: usize,
    /// How often online garbage collection runs.
    pub gc_interval: Duration,
    /// Content younger than this (uploaded, mounted, or confirmed to a client
    /// by an existence check) is never collected; see `docs/gc.md`.
    pub gc_grace: Duration,
    /// How often each repository's lifecycle policy is evaluated (ECR: within 24 h).
    pub lifecycle_interval: Duration,
    /// `ecr` (default): `/v2/` needs a token from GetAuthorizationToken, every
    /// request is authorized, pushes need an existing repository.
    /// `none`: an open registry for development; repositories are created on push.
    pub auth: AuthMode,
    /// The region this registry is (ARNs, SigV4 scope).
    pub region: String,
    /// Host (and port) clients use to reach the registry, as shown in
    /// `repositoryUri` and `proxyEndpoint`; by default the request's `Host`.
    pub registry_host: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    Ecr,
    None,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".parse().expect("valid default address"),
            data_dir: PathBuf::from("./berth-data"),
            upload_max_age: Duration::from_secs(24 * 3600),
            upload_reap_interval: Duration::from_secs(600),
            max_manifest_bytes: 8 << 20,
            gc_interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(3600),
            lifecycle_interval: Duration::from_secs(24 * 3600),
            auth: AuthMode::Ecr,
            region: "us-east-1".into(),
            registry_host: None,
        }
    }
}

/// Settings as they appear in the config file (and, by the same names, as
/// flags and environment variables); every one optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub upload_max_age: Option<String>,
    pub upload_reap_interval: Option<String>,
    pub max_manifest_bytes: Option<usize>,
    pub gc_interval: Option<String>,
    pub gc_grace: Option<String>,
    pub lifecycle_interval: Option<String>,
    pub auth: Option<String>,
    pub region: Option<String>,
    pub registry_host: Option<String>,
}

impl Overrides {
    /// Read a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Overrides> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Layer `self` (higher priority) over `lower`.
    pub fn over(self, lower: Overrides) -> Overrides {
        Overrides {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            upload_max_age: self.upload_max_age.or(lower.upload_max_age),
            upload_reap_interval: self.upload_reap_interval.or(lower.upload_reap_interval),
            max_manifest_bytes: self.max_manifest_bytes.or(lower.max_manifest_bytes),
            gc_interval: self.gc_interval.or(lower.gc_interval),
            gc_grace: self.gc_grace.or(lower.gc_grace),
            lifecycle_interval: self.lifecycle_interval.or(lower.lifecycle_interval),
            auth: self.auth.or(lower.auth),
            region: self.region.or(lower.region),
            registry_host: self.registry_host.or(lower.registry_host),
        }
    }

    /// Apply to the defaults, validating each value.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let mut c = Config::default();
        if let Some(l) = self.listen {
            c.listen = l
                .parse()
                .with_context(|| format!("listen: {l:?} is not an address like 127.0.0.1:5000"))?;
        }
        if let Some(d) = self.data_dir {
            c.data_dir = d;
        }
        if let Some(a) = self.upload_max_age {
            c.upload_max_age = parse_duration(&a).context("upload_max_age")?;
        }
        if let Some(i) = self.upload_reap_interval {
            c.upload_reap_interval = parse_duration(&i).context("upload_reap_interval")?;
        }
        if let Some(m) = self.max_manifest_bytes {
            if m < 4 << 20 {
                bail!("max_manifest_bytes must be at least 4194304 (4 MiB), as the OCI spec asks");
            }
            c.max_manifest_bytes = m;
        }
        for (name, value, slot) in [
            ("gc_interval", self.gc_interval, &mut c.gc_interval),
            ("gc_grace", self.gc_grace, &mut c.gc_grace),
            (
                "lifecycle_interval",
                self.lifecycle_interval,
                &mut c.lifecycle_interval,
            ),
        ] {
            if let Some(v) = value {
                let d = parse_duration(&v).context(name)?;
                if d.is_zero() {
                    bail!("{name} must be longer than 0s");
                }
                *slot = d;
            }
        }
        if let Some(a) = self.auth {
            c.auth = match a.as_str() {
                "ecr" => AuthMode::Ecr,
                "none" => AuthMode::None,
                other => bail!("auth: {other:?} is neither \"ecr\" nor \"none\""),
            };
        }
        if let Some(r) = self.region {
            let ok = !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                bail!("region: {r:?} is not a region name like us-east-1");
            }
            c.region = r;
        }
        c.registry_host = self.registry_host.filter(|h| !h.is_empty());
        Ok(c)
    }
}

/// Parse `90s`, `15m`, `24h`, `7d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("{s:?} is not a duration like 90s, 15m, 24h or 7d"),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_and_parsing() {
        let file: Overrides =
            toml::from_str("listen = \"0.0.0.0:6000\"\ndata_dir = \"/f\"").unwrap();
        let env = Overrides {
            data_dir: Some("/e".into()),
            ..Default::default()
        };
        let flags = Overrides {
            upload_max_age: Some("2h".into()),
            ..Default::default()
        };
        let c = flags.over(env.over(file)).resolve().unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(c.data_dir, PathBuf::from("/e"));
        assert_eq!(c.upload_max_age, Duration::from_secs(7200));
        assert!(toml::from_str::<Overrides>("nonsense = 1").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        let small = Overrides {
            max_manifest_bytes: Some(1000),
            ..Default::default()
        };
        assert!(small.resolve().is_err());
    }
}
