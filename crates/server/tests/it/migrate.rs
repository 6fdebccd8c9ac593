//! The declared schema through the real binary: `migrate` and `serve`.

use crate::kit::{Process, gatehouse};

const NOTES: &str = r#"
[tables.notes]
columns.id = { type = "uuid", primary_key = true }
columns.owner = { type = "uuid", server_set = "auth.uid()" }
columns.body = { type = "text", not_null = true, check = { max_length = 2000 } }
columns.archived = { type = "boolean", not_null = true, default = false }
"#;

fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = gatehouse(dir, args, &[]).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn dry_run_prints_the_sql_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gatehouse.toml"), NOTES).unwrap();
    for _ in 0..2 {
        let (ok, stdout, stderr) = run(dir.path(), &["migrate", "--dry-run"]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains("Would apply schema version 1"), "{stdout}");
        assert!(stdout.contains("+ create table notes"), "{stdout}");
        assert!(stdout.contains(r#"CREATE TABLE "notes""#), "{stdout}");
        assert!(
            stdout.contains(r#""archived" INTEGER NOT NULL DEFAULT 0"#),
            "{stdout}"
        );
    }
    let (ok, stdout, _) = run(dir.path(), &["migrate"]);
    assert!(ok);
    assert!(stdout.contains("Applied schema version 1"), "{stdout}");
    let (_, stdout, _) = run(dir.path(), &["migrate"]);
    assert!(stdout.contains("up to date (schema version 1)"), "{stdout}");
}

#[test]
fn serve_applies_safe_changes_and_refuses_destructive_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(&config, NOTES).unwrap();
    Process::serve(dir.path(), &[], &[]).terminate();
    let (_, stdout, _) = run(dir.path(), &["migrate", "--dry-run"]);
    assert!(
        stdout.contains("up to date (schema version 1)"),
        "serve applied it: {stdout}"
    );

    let without_archived = NOTES.replace(
        "columns.archived = { type = \"boolean\", not_null = true, default = false }\n",
        "",
    );
    std::fs::write(&config, without_archived).unwrap();
    let refused = gatehouse(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("drop column notes.archived") && stderr.contains("--allow-destructive"),
        "{stderr}"
    );

    let (ok, stdout, stderr) = run(dir.path(), &["migrate"]);
    assert!(
        !ok && stderr.contains("--allow-destructive"),
        "{stdout}{stderr}"
    );
    let (ok, stdout, _) = run(dir.path(), &["migrate", "--allow-destructive"]);
    assert!(ok);
    assert!(stdout.contains("! drop column notes.archived"), "{stdout}");
    Process::serve(dir.path(), &[], &[]).terminate();
}

#[test]
fn auto_migrate_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        format!("[database]\nauto_migrate = false\n{NOTES}"),
    )
    .unwrap();
    Process::serve(dir.path(), &[], &[]).terminate();
    let (_, stdout, _) = run(dir.path(), &["migrate", "--dry-run"]);
    assert!(stdout.contains("Would apply schema version 1"), "{stdout}");
}

#[test]
fn a_bad_declaration_stops_start_up_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        NOTES.replace(
            "columns.owner = { type = \"uuid\"",
            "columns.owner = { type = \"uuid\", references = \"users\"",
        ),
    )
    .unwrap();
    let output = gatehouse(dir.path(), &["serve"], &[]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "gatehouse.toml:4:1: table notes, column owner: references unknown table \"users\""
        ),
        "{stderr}"
    );
}

#[test]
fn policy_test_runs_the_shop_fixture_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/shop/policies.test.toml"
    );
    let (ok, stdout, stderr) = run(dir.path(), &["policy", "test", fixture]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("ok    bob cannot select orders"),
        "{stdout}"
    );
    assert!(stdout.contains("14 expectations, 0 failed"), "{stdout}");

    let shop = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/shop/gatehouse.toml"
    );
    let wrong = format!(
        "config = {shop:?}\n[users]\nbob = {{ id = \"0190c2a4-7e5b-7000-8000-000000000b0b\" }}\n\
         [[expect]]\nas = \"bob\"\ncan = \"select\"\ntable = \"orders\"\n\
         [[expect]]\nas = \"anon\"\ncan = \"insert\"\ntable = \"products\"\nbody = {{ name = \"x\", price_cents = 1 }}\n"
    );
    let file = dir.path().join("wrong.test.toml");
    std::fs::write(&file, wrong).unwrap();
    let (ok, stdout, stderr) = run(dir.path(), &["policy", "test", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stdout.contains("FAIL  bob can select orders: 0 row(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  anon can insert products: refused: permission denied"),
        "{stdout}"
    );
    assert!(
        stderr.contains("2 policy expectation(s) failed"),
        "{stderr}"
    );
}

#[test]
fn tables_can_live_in_files_the_config_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tables")).unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        "schema_files = [\"tables/notes.toml\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("tables/notes.toml"), NOTES).unwrap();
    let (ok, stdout, stderr) = run(dir.path(), &["migrate", "--dry-run"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("+ create table notes"), "{stdout}");

    std::fs::write(
        dir.path().join("tables/notes.toml"),
        NOTES.replace(
            "type = \"text\", not_null = true",
            "type = \"txt\", not_null = true",
        ),
    )
    .unwrap();
    let (ok, _, stderr) = run(dir.path(), &["migrate", "--dry-run"]);
    assert!(!ok);
    assert!(
        stderr.contains("tables/notes.toml:5:1: table notes, column body: unknown type"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("tables/notes.toml"), NOTES).unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        format!("schema_files = [\"tables/notes.toml\"]\n{NOTES}"),
    )
    .unwrap();
    let (ok, _, stderr) = run(dir.path(), &["migrate", "--dry-run"]);
    assert!(!ok);
    assert!(
        stderr.contains("tables/notes.toml:2:1: table notes is declared twice"),
        "{stderr}"
    );
}
