//! `cargo run -p husk-spec --example check -- FILE…`: checks spec files and
//! prints their problems (or the parsed spec as JSON).

fn main() {
    let mut failed = false;
    for arg in std::env::args().skip(1) {
        match husk_spec::load_file(std::path::Path::new(&arg)) {
            Ok(spec) => match serde_json::to_string_pretty(&spec) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("{arg}: {e}");
                    failed = true;
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
