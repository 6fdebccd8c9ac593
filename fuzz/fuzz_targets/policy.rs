//! Any policy text: compiling it against a fixed schema returns, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SCHEMA: &str = r#"
[tables.t]
columns.id = { type = "uuid", primary_key = true }
columns.owner = { type = "uuid" }
columns.n = { type = "integer" }
columns.s = { type = "text" }
"#;

fuzz_target!(|data: &[u8]| {
    let using = String::from_utf8_lossy(data).replace('"', "'").replace('\\', "");
    let text = format!(
        "{SCHEMA}\n[[tables.t.policies]]\nname = \"p\"\nfor = \"select\"\nto = \"anon\"\nusing = \"\"\"{using}\"\"\"\n"
    );
    if let Ok(declaration) = gatehouse_schema::declaration::parse(&text)
        && let Ok(schema) = gatehouse_schema::Schema::from_declaration(&declaration)
    {
        let _ = gatehouse_policy::Policies::compile(&declaration, &schema);
    }
});
