//! PEM loading through rustls-pki-types, with errors that say what was being
//! loaded and from where.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::SetupError;

/// Where PEM comes from: a file, or bytes in memory.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    File(&'a Path),
    Data(&'a [u8]),
}

impl Source<'_> {
    /// The error for a failure while loading `what` from this source.
    fn error(self, what: &'static str, source: pem::Error) -> SetupError {
        match self {
            Self::File(path) => SetupError::Pem {
                what,
                path: path.to_path_buf(),
                source,
            },
            Self::Data(_) => SetupError::PemData { what, source },
        }
    }

    /// All `CERTIFICATE` sections, in order. Other sections are skipped; no
    /// certificate at all is an error.
    pub(super) fn certs(
        self,
        what: &'static str,
    ) -> Result<Vec<CertificateDer<'static>>, SetupError> {
        let certs = match self {
            Self::File(path) => CertificateDer::pem_file_iter(path)
                .map_err(|err| self.error(what, err))?
                .collect::<Result<Vec<_>, _>>(),
            Self::Data(data) => CertificateDer::pem_slice_iter(data).collect(),
        }
        .map_err(|err| self.error(what, err))?;
        if certs.is_empty() {
            return Err(self.error(what, pem::Error::NoItemsFound));
        }
        Ok(certs)
    }

    /// The first private key section (PKCS#8, PKCS#1 or SEC1).
    pub(super) fn private_key(self) -> Result<PrivateKeyDer<'static>, SetupError> {
        const WHAT: &str = "private key";
        match self {
            Self::File(path) => PrivateKeyDer::from_pem_file(path),
            Self::Data(data) => PrivateKeyDer::from_pem_slice(data),
        }
        .map_err(|err| self.error(WHAT, err))
    }

    /// The certificates as trust anchors.
    pub(super) fn roots(self, what: &'static str) -> Result<RootCertStore, SetupError> {
        let mut roots = RootCertStore::empty();
        self.add_roots(what, &mut roots)?;
        Ok(roots)
    }

    /// Adds the certificates to `roots` as trust anchors.
    pub(super) fn add_roots(
        self,
        what: &'static str,
        roots: &mut RootCertStore,
    ) -> Result<(), SetupError> {
        for cert in self.certs(what)? {
            roots.add(cert)?;
        }
        Ok(())
    }
}
