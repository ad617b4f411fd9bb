//! Certificates for TLS tests, made with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private CA and a server certificate it signed for `127.0.0.1`, with
/// the server's key, in a temporary directory removed on drop.
///
/// # Examples
///
/// ```no_run
/// use ratelimit_redis_harness::{free_port, RedisServer, TestCertificates};
///
/// let certs = TestCertificates::generate();
/// let tls_port = free_port();
/// let args = certs.redis_server_args(tls_port);
/// let server = RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
/// assert_eq!(server.cli(&["PING"]), "PONG"); // the plain port still answers
/// ```
#[derive(Debug)]
pub struct TestCertificates {
    dir: tempfile::TempDir,
}

impl TestCertificates {
    /// Generates a CA and a one-day server certificate whose subject
    /// alternative name is the IP address `127.0.0.1` (2048-bit RSA keys).
    ///
    /// # Panics
    ///
    /// When `openssl` cannot be run or fails, saying how to install it.
    #[must_use]
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ratelimit-tls-")
            .tempdir()
            .expect("a temporary directory for the certificates");
        let d = dir.path();
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
        .expect("the extensions file is written");
        let p = |name: &str| d.join(name).to_string_lossy().into_owned();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=ratelimit test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("key.pem"),
            "-out",
            &p("server.csr"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-days",
            "1",
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &p("server.ext"),
            "-out",
            &p("cert.pem"),
        ]);
        Self { dir }
    }

    /// The CA's certificate (PEM): what a client trusts.
    #[must_use]
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate (PEM).
    #[must_use]
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The private key (PEM).
    #[must_use]
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// `redis-server` arguments serving TLS on `tls_port` with this
    /// certificate, without asking clients for one. The plain port stays
    /// open (the harness and `redis-cli` use it).
    #[must_use]
    pub fn redis_server_args(&self, tls_port: u16) -> Vec<String> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&self.cert()),
            "--tls-key-file".into(),
            path(&self.key()),
            "--tls-ca-cert-file".into(),
            path(&self.ca()),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}

/// Runs `openssl` with `args`.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); install it with `apt-get install -y openssl`")
        });
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
}
