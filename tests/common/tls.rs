//! Certificates for the HTTPS tests, made with `openssl` on the spot: a test
//! CA and server certificates it signs, with the SANs clients check (the
//! machine's non-loopback address, loopback, and ECR's host names); the
//! machine-wide trust settings some clients read only from `/etc` (Docker's
//! `certs.d`, `/etc/hosts`), each undone by a drop guard.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The host names of ECR in [`REGION`] a certificate for the credential helper covers.
pub const REGION: &str = "us-east-1";

/// The machine's first non-loopback IPv4 address: clients verify TLS there
/// (Docker treats every loopback registry as insecure and skips verification).
pub fn host_ip() -> String {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| a.parse::<Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .expect("this machine has no non-loopback IPv4 address")
        .to_string()
}

/// A port free on `ip` right now.
pub fn free_port_on(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(args: &[&str]) {
    super::require("openssl");
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` on a fresh EC P-256 key written to `key`, with `rest`.
fn request_with_new_key(key: &Path, rest: &[&str]) {
    let key = key.display().to_string();
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
    ];
    args.extend_from_slice(rest);
    openssl(&args);
}

/// A test CA in a temporary directory, and the certificates it issues.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

/// A server certificate and its key, as PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// `--tls-cert CERT --tls-key KEY`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Pki {
    /// A new CA (EC P-256, valid two days).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        request_with_new_key(
            &d.join("ca.key"),
            &[
                "-x509",
                "-out",
                &d.join("ca.crt").display().to_string(),
                "-days",
                "2",
                "-subj",
                "/CN=Berth test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Pki { dir }
    }

    /// The CA certificate (what clients are told to trust).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A directory holding only `ca.crt`, as containers/image's `--cert-dir` wants.
    pub fn cert_dir(&self) -> PathBuf {
        let d = self.dir.path().join("certs");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(self.ca(), d.join("ca.crt")).unwrap();
        d
    }

    /// The SANs of [`Pki::server`]: `ip`, loopback, and ECR's names in [`REGION`].
    pub fn default_sans(ip: &str) -> String {
        format!(
            "IP:{ip},IP:127.0.0.1,DNS:localhost,DNS:*.dkr.ecr.{REGION}.amazonaws.com,DNS:api.ecr.{REGION}.amazonaws.com"
        )
    }

    /// A server certificate with [`Pki::default_sans`] and serial `serial`,
    /// on a fresh key, written as `<name>.crt` / `<name>.key`.
    pub fn server(&self, name: &str, ip: &str, serial: u32) -> Issued {
        self.issue(name, &Pki::default_sans(ip), serial)
    }

    /// A server certificate for `sans` (`IP:…,DNS:…`) with serial `serial`.
    pub fn issue(&self, name: &str, sans: &str, serial: u32) -> Issued {
        let d = self.dir.path();
        let p = |ext: &str| d.join(format!("{name}.{ext}"));
        request_with_new_key(
            &p("key"),
            &[
                "-out",
                &p("csr").display().to_string(),
                "-subj",
                &format!("/CN=berth-test-{name}"),
            ],
        );
        std::fs::write(
            p("ext"),
            format!(
                "subjectAltName={sans}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            ),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("csr").display().to_string(),
            "-CA",
            &self.ca().display().to_string(),
            "-CAkey",
            &d.join("ca.key").display().to_string(),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &p("ext").display().to_string(),
            "-out",
            &p("crt").display().to_string(),
        ]);
        Issued {
            cert: p("crt"),
            key: p("key"),
        }
    }
}

/// A server on the machine's non-loopback address ([`host_ip`]) serving
/// HTTPS with a certificate of `pki` for it, on `data_dir`, with `args`
/// (see [`super::Server::start_at`]); its address is `server.addr`.
pub fn start_https(pki: &Pki, data_dir: &Path, args: &[&str], ecr_admin: bool) -> super::Server {
    let ip = host_ip();
    let cert = pki.server("registry", &ip, 1);
    let addr = format!("{ip}:{}", free_port_on(&ip));
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(cert.args());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    super::Server::start_at(&addr, data_dir, &all, ecr_admin)
}

/// The serial number (hex, as `openssl x509 -serial` prints it) of the
/// certificate a new TLS connection to `addr` is shown, for server name `sni`.
pub fn served_serial(addr: &str, sni: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 20 openssl s_client -connect {addr} -servername {sni} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

/// `/etc/docker/certs.d/<host>/ca.crt`: the Docker engine trusts the CA for
/// that registry (`host` with its port, unless it is 443). Removed on drop.
pub struct DockerTrust {
    dir: PathBuf,
}

impl DockerTrust {
    pub fn install(host: &str, ca: &Path) -> DockerTrust {
        let dir = Path::new("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        DockerTrust { dir }
    }
}

impl Drop for DockerTrust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lines added to `/etc/hosts` (marked, and removed on drop).
pub struct HostsEntries {
    marker: String,
}

const HOSTS: &str = "/etc/hosts";

impl HostsEntries {
    /// Map each of `names` to `ip`.
    pub fn add(ip: &str, names: &[&str]) -> HostsEntries {
        let marker = format!("# berth-test-{}", uuid::Uuid::new_v4().simple());
        let mut text = std::fs::read_to_string(HOSTS).unwrap();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{ip} {} {marker}\n", names.join(" ")));
        // Written in place: /etc/hosts may be a bind mount that a rename would not replace.
        std::fs::write(HOSTS, text).unwrap();
        HostsEntries { marker }
    }
}

impl Drop for HostsEntries {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(HOSTS) {
            let kept: String = text
                .lines()
                .filter(|l| !l.contains(&self.marker))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write(HOSTS, kept);
        }
    }
}
