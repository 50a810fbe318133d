//! The compatibility table: per schema type, a set of changes (old → new) and for each the
//! verdict under every level. BACKWARD = new reads old, FORWARD = old reads new, FULL = both.

use super::*;
use crate::schema::{parse, SchemaContent, SchemaType};

fn p(t: SchemaType, text: &str) -> Parsed {
    let content = SchemaContent {
        schema_type: t,
        schema: text.to_string(),
        references: Vec::new(),
    };
    parse(&content, &[]).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// One row: old → new, whether BACKWARD holds and whether FORWARD holds.
struct Row {
    name: &'static str,
    old: &'static str,
    new: &'static str,
    backward: bool,
    forward: bool,
}

const LEVELS: [Level; 7] = [
    Level::None,
    Level::Backward,
    Level::BackwardTransitive,
    Level::Forward,
    Level::ForwardTransitive,
    Level::Full,
    Level::FullTransitive,
];

fn run_table(t: SchemaType, rows: &[Row]) {
    for row in rows {
        let old = p(t, row.old);
        let new = p(t, row.new);
        for level in LEVELS {
            let expected = match level {
                Level::None => true,
                Level::Backward | Level::BackwardTransitive => row.backward,
                Level::Forward | Level::ForwardTransitive => row.forward,
                Level::Full | Level::FullTransitive => row.backward && row.forward,
            };
            let messages = check(level, &new, &[&old]);
            assert_eq!(
                messages.is_empty(),
                expected,
                "{t:?} '{}' under {}: {messages:?}",
                row.name,
                level.as_str()
            );
            if !expected {
                assert!(messages.iter().all(|m| !m.is_empty()));
            }
        }
    }
}

#[test]
fn avro_table() {
    let base = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"}]}"#;
    let rows = [
        Row {
            name: "identical",
            old: base,
            new: base,
            backward: true,
            forward: true,
        },
        Row {
            name: "add optional field (with default)",
            old: base,
            new: r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"note","type":["null","string"],"default":null}]}"#,
            backward: true,
            forward: true,
        },
        Row {
            name: "add required field without default",
            old: base,
            new: r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"note","type":"string"}]}"#,
            backward: false,
            forward: true,
        },
        Row {
            name: "remove field without default",
            old: base,
            new: r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#,
            backward: true,
            forward: false,
        },
        Row {
            name: "promote int to long",
            old: base,
            new: r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"long"}]}"#,
            backward: true,
            forward: false,
        },
        Row {
            name: "change type int to string",
            old: base,
            new: r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"string"}]}"#,
            backward: false,
            forward: false,
        },
        Row {
            name: "widen enum",
            old: r#"{"type":"enum","name":"Color","symbols":["RED","GREEN"]}"#,
            new: r#"{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}"#,
            backward: true,
            forward: false,
        },
    ];
    run_table(SchemaType::Avro, &rows);
}

#[test]
fn json_table() {
    let open = r#"{"type":"object","properties":{"id":{"type":"string"},"qty":{"type":"integer","maximum":100}},"required":["id"]}"#;
    let closed = r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"],"additionalProperties":false}"#;
    let rows = [
        Row {
            name: "identical",
            old: open,
            new: open,
            backward: true,
            forward: true,
        },
        Row {
            name: "add optional property to closed model",
            old: closed,
            new: r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id"],"additionalProperties":false}"#,
            backward: true,
            forward: false,
        },
        Row {
            name: "add optional property to open model",
            old: open,
            new: r#"{"type":"object","properties":{"id":{"type":"string"},"qty":{"type":"integer","maximum":100},"note":{"type":"string"}},"required":["id"]}"#,
            backward: false,
            forward: true,
        },
        Row {
            name: "add required property",
            old: closed,
            new: r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id","note"],"additionalProperties":false}"#,
            backward: false,
            forward: false,
        },
        Row {
            name: "remove property from open model",
            old: open,
            new: r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}"#,
            backward: true,
            forward: false,
        },
        Row {
            name: "change property type",
            old: open,
            new: r#"{"type":"object","properties":{"id":{"type":"integer"},"qty":{"type":"integer","maximum":100}},"required":["id"]}"#,
            backward: false,
            forward: false,
        },
        Row {
            name: "tighten maximum",
            old: open,
            new: r#"{"type":"object","properties":{"id":{"type":"string"},"qty":{"type":"integer","maximum":10}},"required":["id"]}"#,
            backward: false,
            forward: true,
        },
        Row {
            name: "widen integer to number",
            old: r#"{"type":"integer"}"#,
            new: r#"{"type":"number"}"#,
            backward: true,
            forward: false,
        },
        Row {
            name: "widen enum",
            old: r#"{"type":"string","enum":["RED","GREEN"]}"#,
            new: r#"{"type":"string","enum":["RED","GREEN","BLUE"]}"#,
            backward: true,
            forward: false,
        },
        Row {
            name: "close an open model",
            old: r#"{"type":"object","properties":{"id":{"type":"string"}}}"#,
            new: r#"{"type":"object","properties":{"id":{"type":"string"}},"additionalProperties":false}"#,
            backward: false,
            forward: true,
        },
    ];
    run_table(SchemaType::Json, &rows);
}

#[test]
fn protobuf_table() {
    let base =
        "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; int32 qty = 2; }\n";
    let rows = [
        Row { name: "identical", old: base, new: base, backward: true, forward: true },
        Row {
            name: "add field",
            old: base,
            new: "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; int32 qty = 2; string note = 3; }\n",
            backward: true,
            forward: true,
        },
        Row {
            name: "remove field",
            old: base,
            new: "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; }\n",
            backward: true,
            forward: true,
        },
        Row {
            name: "int32 to int64 (same wire type)",
            old: base,
            new: "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; int64 qty = 2; }\n",
            backward: true,
            forward: true,
        },
        Row {
            name: "change field type int32 to string",
            old: base,
            new: "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; string qty = 2; }\n",
            backward: false,
            forward: false,
        },
        Row {
            name: "remove message",
            old: "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; }\nmessage Line { string sku = 1; }\n",
            new: "syntax = \"proto3\";\npackage shop;\nmessage Order { string id = 1; }\n",
            backward: false,
            forward: true,
        },
        Row {
            name: "widen enum",
            old: "syntax = \"proto3\";\npackage shop;\nenum Color { RED = 0; GREEN = 1; }\nmessage Order { Color c = 1; }\n",
            new: "syntax = \"proto3\";\npackage shop;\nenum Color { RED = 0; GREEN = 1; BLUE = 2; }\nmessage Order { Color c = 1; }\n",
            backward: true,
            forward: true,
        },
        Row {
            name: "add proto2 required field",
            old: "syntax = \"proto2\";\npackage shop;\nmessage Order { optional string id = 1; }\n",
            new: "syntax = \"proto2\";\npackage shop;\nmessage Order { optional string id = 1; required int32 qty = 2; }\n",
            backward: false,
            forward: false,
        },
        Row {
            name: "change package",
            old: base,
            new: "syntax = \"proto3\";\npackage store;\nmessage Order { string id = 1; int32 qty = 2; }\n",
            backward: false,
            forward: false,
        },
    ];
    run_table(SchemaType::Protobuf, &rows);
}

#[test]
fn transitive_levels_check_every_earlier_version() {
    // v1 has no `note`; v2 adds it with a default; v3 drops the default. v3 reads v2 data
    // (v2 always writes note) but not v1 data.
    let v1 = p(
        SchemaType::Avro,
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
    );
    let v2 = p(
        SchemaType::Avro,
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"note","type":"string","default":""}]}"#,
    );
    let v3 = p(
        SchemaType::Avro,
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"note","type":"string"}]}"#,
    );
    assert!(check(Level::Backward, &v3, &[&v1, &v2]).is_empty());
    let messages = check(Level::BackwardTransitive, &v3, &[&v1, &v2]);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("note"),
        "the message names the field: {messages:?}"
    );
}

#[test]
fn messages_say_what_is_incompatible() {
    let old = p(
        SchemaType::Json,
        r#"{"type":"object","properties":{"qty":{"type":"integer"}}}"#,
    );
    let new = p(
        SchemaType::Json,
        r#"{"type":"object","properties":{"qty":{"type":"string"}}}"#,
    );
    let messages = check(Level::Backward, &new, &[&old]);
    assert!(
        messages
            .iter()
            .any(|m| m.contains("TYPE_CHANGED") && m.contains("qty")),
        "{messages:?}"
    );
    let a = p(SchemaType::Avro, r#""int""#);
    assert_eq!(
        check(Level::Full, &a, &[&p(SchemaType::Json, "{}")]).len(),
        2
    );
}
