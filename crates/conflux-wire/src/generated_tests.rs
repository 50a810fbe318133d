//! Property-based round trips of every generated message in every version.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_message_round_trips_in_every_version(seed: u64) {
        for (name, round_trip) in crate::generated::ROUND_TRIPS {
            let result = std::panic::catch_unwind(|| round_trip(seed));
            prop_assert!(result.is_ok(), "{} failed for seed {}", name, seed);
        }
    }
}
