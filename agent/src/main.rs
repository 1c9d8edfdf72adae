use clap::Parser as _;

fn main() {
    let cli = copyscope::cli::Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .format_timestamp_millis()
        .init();
    match copyscope::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("copyscope: {e:#}");
            std::process::exit(1);
        }
    }
}
