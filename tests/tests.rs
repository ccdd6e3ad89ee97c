//! Integration tests: the gateway on ephemeral ports in front of real HTTP backends
//! (tests/support), driven by a real client over loopback. One binary, one module per
//! area, so the suite links once.

mod cases;
mod support;
