//! The OCSF schemas every line the daemon prints is checked against (`schemas/ocsf/`), and
//! the kind of each object, for coverage.
use std::{collections::BTreeMap, sync::OnceLock};

use serde_json::Value;

use crate::field;

/// The JSON Schema of each OCSF class guard emits, from `schemas/ocsf/`, compiled once.
pub(crate) fn ocsf_validators() -> &'static BTreeMap<u64, jsonschema::Validator> {
    static VALIDATORS: OnceLock<BTreeMap<u64, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let sources = [
            (1001, include_str!("../../schemas/ocsf/file_system_activity_1001.json")),
            (1007, include_str!("../../schemas/ocsf/process_activity_1007.json")),
            (4001, include_str!("../../schemas/ocsf/network_activity_4001.json")),
            (6002, include_str!("../../schemas/ocsf/application_lifecycle_6002.json")),
            (2004, include_str!("../../schemas/ocsf/detection_finding_2004.json")),
        ];
        sources
            .into_iter()
            .map(|(class, text)| {
                let schema: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("schema of class {class} is not JSON: {e}"));
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("schema of class {class} does not compile: {e}"));
                (class, validator)
            })
            .collect()
    })
}

/// What is wrong with `v` as an object guard emits: empty if it validates against the schema
/// of its `class_uid` (1001, 1007, 4001, 6002 or 2004); an unknown class is wrong.
pub fn ocsf_errors(v: &Value) -> Vec<String> {
    let Some(class) = v.get("class_uid").and_then(Value::as_u64) else {
        return vec!["no numeric class_uid".to_owned()];
    };
    let Some(validator) = ocsf_validators().get(&class) else {
        return vec![format!("class_uid {class} is not a class guard emits")];
    };
    validator.iter_errors(v).map(|e| format!("class {class} at `{}`: {e}", e.instance_path())).collect()
}

/// What kind of object `v` is, for coverage: `exec/killed`, `connect/denied`, `sendmsg/denied`,
/// `socket/denied`, `moved_out/audited`, `policy_load/allowed`..., and `finding/exec/killed`
/// for a Detection Finding about a killed exec.
pub fn kind(v: &Value) -> String {
    let verdict = field(v, "/unmapped/verdict");
    let operation = match v.pointer("/unmapped/operation").and_then(Value::as_str) {
        Some(op) => op.to_owned(),
        None => "exec".to_owned(),
    };
    if v["class_uid"] == 2004 { format!("finding/{operation}/{verdict}") } else { format!("{operation}/{verdict}") }
}
