//! TLS failures in words: what is wrong with a certificate, and what to do about it.
//!
//! rustls (under tonic) reports a refused server certificate as `invalid peer certificate:
//! Other(OtherError(CaUsedAsEndEntity))` inside `transport error`; users need the cause and the
//! fix. The server checks its own certificate the way a rustls client will, so that a
//! certificate every Rust client refuses is flagged when it is loaded, not at the first connect.

use std::error::Error as StdError;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{CertificateError, Error as TlsError};

const CA_AS_SERVER: &str = "is a CA certificate (basicConstraints CA:TRUE) used as the server's own certificate, \
     which TLS clients built on rustls (cohort sql, Rust gRPC clients) refuse";
const CA_AS_SERVER_FIX: &str = "issue a server certificate signed by that CA and serve that one (README: TLS, a certificate recipe)";

/// What a rustls client will find wrong with a server's certificate chain (PEM), if anything
/// that does not depend on the client: a CA certificate as the leaf, an expired or not yet valid
/// one. Names and trust are the client's business and are not judged here.
pub fn server_certificate_problem(pem: &[u8], path: &Path) -> anyhow::Result<Option<String>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("cannot read TLS certificate {}: {e}", path.display()))?;
    let Some(leaf) = chain.first() else {
        anyhow::bail!(
            "TLS certificate {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    };
    let Ok(end_entity) = webpki::EndEntityCert::try_from(leaf) else {
        // Not parseable as a leaf: tonic's own loading reports it.
        return Ok(None);
    };
    // Trusting the chain's last certificate (the leaf itself when self-signed) leaves only the
    // certificate's own faults to find.
    let Ok(anchor) = webpki::anchor_from_trusted_cert(chain.last().unwrap_or(leaf)) else {
        return Ok(None);
    };
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let anchors = [anchor];
    let verified = end_entity.verify_for_usage(
        algorithms,
        &anchors,
        chain.get(1..).unwrap_or_default(),
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    Ok(match verified {
        Err(webpki::Error::CaUsedAsEndEntity) => Some(format!(
            "{} {CA_AS_SERVER}; {CA_AS_SERVER_FIX}",
            path.display()
        )),
        Err(webpki::Error::CertExpired { not_after, .. }) => {
            Some(format!("{} expired at {}", path.display(), time(not_after)))
        }
        Err(webpki::Error::CertNotValidYet { not_before, .. }) => Some(format!(
            "{} is not valid before {}",
            path.display(),
            time(not_before)
        )),
        _ => None,
    })
}

/// Why connecting to `host` over TLS failed, with the fix, when the cause is a certificate or
/// TLS itself (`None` leaves the error as it is: refused, unreachable, ...).
pub fn describe_connect_failure(error: &(dyn StdError + 'static), host: &str) -> Option<String> {
    let tls = tls_error(error)?;
    Some(match tls {
        TlsError::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a CA this client trusts: pass that CA \
                 (or the server's self-signed certificate) with --tls-ca FILE"
                    .to_string()
            }
            CertificateError::NotValidForName => {
                format!("the server's certificate is not valid for the name {host}")
            }
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the server's certificate is not valid for the name {host} (it is for {}): connect \
                 with one of those names, or issue a certificate whose subjectAltName lists {host}",
                presented
                    .iter()
                    .map(|name| presented_name(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            CertificateError::Expired => "the server's certificate has expired".to_string(),
            CertificateError::ExpiredContext { not_after, .. } => {
                format!("the server's certificate expired at {}", time(*not_after))
            }
            CertificateError::NotValidYet => "the server's certificate is not valid yet".into(),
            CertificateError::NotValidYetContext { not_before, .. } => format!(
                "the server's certificate is not valid before {}",
                time(*not_before)
            ),
            CertificateError::Other(other)
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                format!("the server's certificate {CA_AS_SERVER}; {CA_AS_SERVER_FIX}")
            }
            other => format!("the server's certificate was refused: {other}"),
        },
        TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => format!(
            "the server at {host} did not answer in TLS ({tls}): is it serving without TLS? \
             then connect with grpc://"
        ),
        other => format!("TLS failed: {other}"),
    })
}

/// The rustls error somewhere in `error`'s chain. I/O errors hide theirs from `source()`: it is
/// their payload (`get_ref`).
fn tls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a TlsError> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<TlsError>() {
            return Some(tls);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = tls_error(inner)
        {
            return Some(tls);
        }
        current = error.source();
    }
    None
}

/// webpki describes a certificate's names in Debug form (`DnsName("localhost")`,
/// `IpAddress(127.0.0.1)`): the name alone reads better.
fn presented_name(described: &str) -> &str {
    described
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            described
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(described)
}

fn time(at: UnixTime) -> String {
    chrono::DateTime::from_timestamp(at.as_secs() as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{} s after 1970", at.as_secs()))
}
