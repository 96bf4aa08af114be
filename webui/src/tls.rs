//! The server's certificate and the plain-HTTP redirect.
//!
//! The certificate is `<tls-dir>/cert.pem` (the chain) with
//! `<tls-dir>/key.pem` (PKCS#8, mode 0600). When neither exists a
//! self-signed one is made on first start, for `localhost`, the host name
//! and the loopback addresses (and whatever `--tls-name` adds), and kept:
//! an operator replaces both files with their own and restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::extract::Request;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate and key files in `dir`.
pub fn files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Makes a self-signed certificate in `dir` unless one is there; returns
/// whether it made one.
pub fn ensure_certificate(dir: &Path, names: &[String]) -> anyhow::Result<bool> {
    let (cert, key) = files(dir);
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (false, false) => {}
        _ => bail!(
            "{} and {} must both exist (the operator's certificate) or both be absent \
             (a self-signed one is made)",
            cert.display(),
            key.display()
        ),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut subject = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && !subject.iter().any(|s| s == host) {
            subject.push(host.to_owned());
        }
    }
    subject.extend(names.iter().cloned());
    let certified =
        rcgen::generate_simple_self_signed(subject).context("making a self-signed certificate")?;
    crate::auth::write_private(&key, &certified.key_pair.serialize_pem(), 0o600)
        .with_context(|| format!("writing {}", key.display()))?;
    crate::auth::write_private(&cert, &certified.cert.pem(), 0o644)
        .with_context(|| format!("writing {}", cert.display()))?;
    Ok(true)
}

/// The TLS settings of the server: the certificate in `dir`, TLS 1.2 and
/// 1.3 with rustls's safe defaults, HTTP/1.1 (and h2 by ALPN).
pub fn server_config(dir: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = files(dir);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where a plain-HTTP request is sent: the same host and path on HTTPS
/// at `https_port`.
pub fn redirect_target(request: &Request, https_port: u16) -> Option<String> {
    let host = match request.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => request.uri().authority()?.as_str(),
    };
    // The host without a port (an IPv6 literal keeps its brackets).
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    let name = authority.host();
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = format!("https://{name}{port}{path}");
    target.parse::<Uri>().ok().map(|_| target)
}

/// The plain-HTTP listener's only answer: 308 to HTTPS (or 400 without a
/// usable Host).
pub async fn redirect(https_port: u16, request: Request) -> Response {
    match redirect_target(&request, https_port) {
        Some(target) => {
            (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, target)]).into_response()
        }
        None => crate::problem::Problem::bad_request(
            "plain HTTP only redirects to HTTPS, and this request has no usable Host header",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_certificate(dir.path(), &["gazelle.example".into()]).unwrap());
        let first = std::fs::read(dir.path().join("cert.pem")).unwrap();
        assert!(!ensure_certificate(dir.path(), &[]).unwrap());
        assert_eq!(std::fs::read(dir.path().join("cert.pem")).unwrap(), first);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        server_config(dir.path()).unwrap();
    }

    #[test]
    fn half_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "x").unwrap();
        let err = ensure_certificate(dir.path(), &[]).unwrap_err();
        assert!(err.to_string().contains("must both exist"), "{err}");
    }
}
