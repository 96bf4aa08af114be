//! The README's tables of configuration keys are generated from
//! `gazelle_config::support`; this test fails when they are stale and, with
//! `UPDATE_README=1`, rewrites them.

use gazelle_config::support::{self, Key};

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");

/// `text` with the block between the `which` markers replaced by `table`.
fn with_table(text: &str, which: &str, table: &str) -> String {
    let begin = format!("<!-- keys:{which} (generated) -->\n");
    let end = format!("<!-- /keys:{which} -->");
    let start = text
        .find(&begin)
        .unwrap_or_else(|| panic!("README has no {begin:?} marker"))
        + begin.len();
    let stop = start
        + text[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("README has no {end:?} marker"));
    format!("{}{table}{}", &text[..start], &text[stop..])
}

#[test]
fn readme_tables_match_the_classification() {
    let text = std::fs::read_to_string(README).expect("reading README.md");
    let tables: [(&str, &[Key]); 2] = [("lstack", support::LSTACK), ("ltran", support::LTRAN)];
    let mut want = text.clone();
    for (which, keys) in tables {
        want = with_table(&want, which, &support::markdown(keys));
    }
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(README, &want).expect("writing README.md");
        return;
    }
    assert!(
        text == want,
        "README.md's key tables are stale: run `UPDATE_README=1 cargo test -p gazelle-config --test readme_keys`"
    );
}

#[test]
fn every_refused_key_says_what_to_do() {
    for key in support::LSTACK.iter().chain(support::LTRAN) {
        if matches!(key.support, support::Support::Refused { .. }) {
            assert!(key.note.len() > 20, "{}: {:?}", key.name, key.note);
        }
    }
}
