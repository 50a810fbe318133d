//! Property-based checks of every generated message in every version: random values round-trip
//! byte for byte, truncated encodings fail cleanly, corrupted ones never panic.

use proptest::prelude::*;

fn check_all(seed: u64, adversarial: bool) -> Result<(), TestCaseError> {
    for (name, check) in crate::generated::ROUND_TRIPS {
        let result = std::panic::catch_unwind(|| check(seed, adversarial));
        prop_assert!(result.is_ok(), "{} failed for seed {}", name, seed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn every_message_round_trips_in_every_version(seed: u64) {
        check_all(seed, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn truncated_and_corrupted_messages_fail_cleanly(seed: u64) {
        check_all(seed, true)?;
    }
}

#[test]
fn every_message_is_covered() {
    // 150 broker requests/responses and headers plus the data structures.
    assert!(crate::generated::ROUND_TRIPS.len() >= 150);
    assert_eq!(crate::generated::ApiKey::ALL.len() * 2 + 2 + 8, crate::generated::ROUND_TRIPS.len());
}
