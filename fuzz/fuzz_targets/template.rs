//! Path templates: the template text comes from descriptors, the path from a client. The input is
//! a template, a newline, then a path; a template that does not parse is still fuzzed as text,
//! and the path is then matched against a fixed template with every kind of segment.

#![no_main]

use dragoman::transcode::template::Template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, path) = text.split_once('\n').unwrap_or((text, text));
    let template = match Template::parse(template) {
        Ok(template) => {
            // Display writes what parses back to the same template.
            let shown = template.to_string();
            assert_eq!(Template::parse(&shown).as_ref(), Ok(&template), "{shown}");
            template
        }
        Err(_) => Template::parse("/v1/{id}/{name=shelves/*/books/*}/x/{rest=**}:verb").expect("valid"),
    };
    if let Some(bound) = template.matches(path) {
        // One value per variable, in order.
        assert!(bound.iter().map(|(i, _)| *i).eq(0..template.variables.len()));
    }
});
