//! `graph-mailer check`: the configuration, validated and shown with secrets redacted.

use std::process::ExitCode;

use crate::settings::Settings;

/// What `check` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub json: bool,
    pub send_test: Option<String>,
    pub from: Option<String>,
}

/// Runs the checks and prints the results; exit 0 only when all pass.
pub async fn run(settings: Result<Settings, String>, options: Options) -> ExitCode {
    let settings = match settings {
        Ok(settings) => settings,
        Err(errors) => {
            println!("FAIL settings\n{errors}");
            return ExitCode::FAILURE;
        }
    };
    let _ = options;
    for (name, value) in settings.describe() {
        println!("{name:40} {value}");
    }
    for warning in &settings.warnings {
        println!("WARN {warning}");
    }
    ExitCode::SUCCESS
}
