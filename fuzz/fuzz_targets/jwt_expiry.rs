//! Fuzzes `tokengate::__fuzz::jwt_expiry`; see that function for the input format and what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tokengate::__fuzz::jwt_expiry(data));
