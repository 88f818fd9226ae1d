//! Logging in and out at an OAuth2 authorization server: discovery (RFC 8414), the device
//! flow (RFC 8628) and revocation (RFC 7009).

mod device;
mod discovery;
mod revoke;

pub use device::{DeviceAuthorization, DeviceError, DeviceFlow};
pub use discovery::{Discovery, DiscoveryError, ServerMetadata};
pub(crate) use revoke::revoke;
pub use revoke::{RevocationError, REVOCATION_TIMEOUT};
