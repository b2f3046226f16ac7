pub mod ca;
pub mod signer;
