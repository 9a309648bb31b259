//! Unit tests of the Kafka sink.
use super::*;

#[test]
fn records_must_be_json_objects_and_keep_their_time() {
    assert_eq!(check(r#"{"time":1700000000123,"a":1}"#), Ok(Some(1_700_000_000_123)));
    assert_eq!(check(r#"{"a":1}"#), Ok(None));
    assert!(check("[1]").unwrap_err().contains("not a JSON object"));
    assert!(check("{").unwrap_err().contains("not JSON"));
    assert!(for_good(RDKafkaErrorCode::MessageSizeTooLarge));
    assert!(!for_good(RDKafkaErrorCode::TopicAuthorizationFailed));
    assert!(!for_good(RDKafkaErrorCode::BrokerTransportFailure));
}
