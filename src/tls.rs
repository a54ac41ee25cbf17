//! TLS for outgoing HTTPS (upstreams behind https URLs): rustls with the ring provider,
//! which builds with a C compiler alone.

use std::sync::Once;

/// Installs ring as the process-wide rustls provider; harmless to call again.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
