//! The CA certificates network sinks trust: the system's bundle (`SSL_CERT_FILE`, else the
//! usual distribution paths) plus the sink's `tls_ca`.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ureq::tls::{Certificate, PemItem};

const BUNDLES: [&str; 4] = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem"];

fn pem_certs(bytes: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(bytes)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// The first system bundle that holds certificates, plus `tls_ca` (an error if it cannot be
/// read or holds none). Empty when the host has no bundle and no `tls_ca` is given.
pub fn trusted(tls_ca: Option<&Path>) -> anyhow::Result<Vec<Certificate<'static>>> {
    let bundles = std::env::var_os("SSL_CERT_FILE").into_iter().map(PathBuf::from).chain(BUNDLES.map(PathBuf::from));
    let mut certs = bundles.filter_map(|p| std::fs::read(p).ok()).map(|b| pem_certs(&b)).find(|c| !c.is_empty()).unwrap_or_default();
    if let Some(path) = tls_ca {
        let bytes = std::fs::read(path).with_context(|| format!("reading tls_ca {}", path.display()))?;
        let ca = pem_certs(&bytes);
        if ca.is_empty() {
            anyhow::bail!("tls_ca {} holds no PEM certificate", path.display());
        }
        certs.extend(ca);
    }
    Ok(certs)
}
