//! The fake Infisical server checked against the real recorded exchanges.

use crate::support::infisical::{FakeInfisical, Generation};

#[test]
fn starts() {
    let fake = FakeInfisical::start(Generation::Legacy2024);
    let reply = fake.send("GET", "/api/v4/secrets", &[], None);
    assert_eq!(reply.status, 404);
}
