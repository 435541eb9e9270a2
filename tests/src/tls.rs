//! Throw-away TLS material for the TLS and mutual-TLS tests, made in-process with `rcgen`: no
//! test depends on an `openssl` binary being installed, so none can skip for want of one.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// PEM files of a throw-away CA, a server certificate for `127.0.0.1`/`localhost` signed by
/// it, and a client certificate signed by it.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server's certificate.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate (for mutual TLS).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// Makes [`TlsFiles`] under `dir`. Panics, failing the test with the reason, when a key or a
/// certificate cannot be made or written.
pub fn tls_files(dir: &Path) -> TlsFiles {
    let mut ca = params(&[], "newsflow test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, key_pair("the test CA"))
        .unwrap_or_else(|e| panic!("self-signing the test CA: {e}"));
    let issuer: &Issuer<KeyPair> = &ca;

    let server_key = key_pair("the server");
    let mut server = params(&["127.0.0.1", "localhost"], "127.0.0.1");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = signed(server, &server_key, issuer, "the server");

    let client_key = key_pair("the client");
    let mut client = params(&[], "newsflow-client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = signed(client, &client_key, issuer, "the client");

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    for (path, pem) in [
        (&files.ca, ca.pem()),
        (&files.server_cert, server_cert.pem()),
        (&files.server_key, server_key.serialize_pem()),
        (&files.client_cert, client_cert.pem()),
        (&files.client_key, client_key.serialize_pem()),
    ] {
        std::fs::write(path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    files
}

fn key_pair(whose: &str) -> KeyPair {
    KeyPair::generate().unwrap_or_else(|e| panic!("generating a key for {whose}: {e}"))
}

/// Parameters for a certificate naming `subject_alt_names` (IP addresses or DNS names) with
/// `common_name` as its subject.
fn params(subject_alt_names: &[&str], common_name: &str) -> CertificateParams {
    let names: Vec<String> = subject_alt_names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names)
        .unwrap_or_else(|e| panic!("certificate names {subject_alt_names:?}: {e}"));
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

fn signed(
    params: CertificateParams,
    key: &KeyPair,
    issuer: &Issuer<KeyPair>,
    whose: &str,
) -> Certificate {
    params
        .signed_by(key, issuer)
        .unwrap_or_else(|e| panic!("signing the certificate of {whose} with the test CA: {e}"))
}
