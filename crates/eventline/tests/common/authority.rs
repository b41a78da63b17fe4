//! Certificates for the tests, made by the openssl CLI: a CA and what it issues.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Runs a tool the test needs; its absence is a failure that says how to install it.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program} is required for this test: {error}"))
}

fn openssl(args: &[&str]) {
    let output = run("openssl", args);
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A certificate authority and, signed by it, certificates for servers and clients.
pub struct Authority {
    directory: PathBuf,
    name: String,
}

impl Authority {
    pub fn new(directory: &Path, name: &str) -> Self {
        let authority = Self {
            directory: directory.to_path_buf(),
            name: name.to_owned(),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            authority.path("ca.key").to_str().unwrap(),
            "-out",
            authority.path("ca.pem").to_str().unwrap(),
        ]);
        authority
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.directory.join(format!("{}-{file}", self.name))
    }

    pub fn ca(&self) -> String {
        self.path("ca.pem").to_str().unwrap().to_owned()
    }

    /// Issues `subject` a certificate: returns (certificate, key) paths.
    pub fn issue(&self, subject: &str, extensions: &str) -> (String, String) {
        let key = self.path(&format!("{subject}.key"));
        let request = self.path(&format!("{subject}.csr"));
        let certificate = self.path(&format!("{subject}.pem"));
        let extensions_file = self.path(&format!("{subject}.ext"));
        std::fs::write(&extensions_file, extensions).unwrap();
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={subject}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            request.to_str().unwrap(),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            request.to_str().unwrap(),
            "-CA",
            &self.ca(),
            "-CAkey",
            self.path("ca.key").to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            extensions_file.to_str().unwrap(),
            "-out",
            certificate.to_str().unwrap(),
        ]);
        (
            certificate.to_str().unwrap().to_owned(),
            key.to_str().unwrap().to_owned(),
        )
    }

    pub fn server_certificate(&self) -> (String, String) {
        self.issue(
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
    }

    pub fn client_certificate(&self) -> (String, String) {
        self.issue("client", "extendedKeyUsage=clientAuth\n")
    }
}
