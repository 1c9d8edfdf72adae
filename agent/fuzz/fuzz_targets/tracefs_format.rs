//! tracefs `format` files (copyscope::loader::tracefs::parse_format).
#![no_main]

use copyscope::loader::tracefs::parse_format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(fields) = parse_format(&text) else {
        return;
    };
    assert!(!fields.is_empty());
    // A field's name is one word of a declaration in the input.
    for name in fields.keys() {
        assert!(!name.is_empty());
        assert!(
            !name.contains(|c: char| c.is_whitespace() || matches!(c, '*' | '[' | ';' | ':')),
            "{name:?}"
        );
        assert!(text.contains(name.as_str()), "{name:?} is not in the input");
    }
    // The layout written back as a format file reads back the same.
    let mut again = String::from("name: fuzz\nformat:\n");
    for (name, f) in &fields {
        again += &format!(
            "\tfield:unsigned long {name};\toffset:{};\tsize:{};\tsigned:0;\n",
            f.offset, f.size
        );
    }
    assert_eq!(parse_format(&again).unwrap(), fields, "{again}");
});
