//! Zed extension for pie-lsp: local code completion over the Language Server Protocol.
//!
//! The extension does not ship or download the server. It finds the `pie-lsp` command
//! and starts `pie-lsp serve` (LSP on stdio):
//!
//! 1. `lsp.pie-lsp.binary.path` (and `binary.arguments`, `binary.env`) from Zed's settings;
//! 2. else `pie-lsp` on the PATH of the worktree's shell environment;
//! 3. else an error that says how to install it.
//!
//! `lsp.pie-lsp.initialization_options` is sent as the server's `initializationOptions`.

use zed_extension_api::{
    self as zed, serde_json,
    settings::{CommandSettings, LspSettings},
    LanguageServerId, Result, Worktree,
};

/// The server's name in `extension.toml` and the key under `lsp` in Zed's settings.
const SERVER_NAME: &str = "pie-lsp";

/// Arguments used when the settings give none: serve LSP on stdio.
const DEFAULT_ARGS: &[&str] = &["serve"];

struct PieLspExtension;

fn not_found_message() -> String {
    format!(
        "{SERVER_NAME}: the `{SERVER_NAME}` command was not found on the PATH Zed uses. \
         Install pie-lsp (in a clone of https://github.com/pie-lsp/pie-lsp, `make setup` \
         creates .venv/bin/pie-lsp) and put it on your PATH, or set its full path in \
         Zed's settings.json: \"lsp\": {{\"{SERVER_NAME}\": {{\"binary\": {{\"path\": \
         \"/path/to/pie-lsp/.venv/bin/pie-lsp\"}}}}}}"
    )
}

/// The command that starts the server, from the user's `binary` settings and a PATH
/// lookup (only made when the settings give no path).
fn resolve_command(
    binary: Option<CommandSettings>,
    find_on_path: impl FnOnce() -> Option<String>,
) -> Result<zed::Command> {
    let CommandSettings {
        path,
        arguments,
        env,
    } = binary.unwrap_or_default();
    let command = match path.filter(|p| !p.trim().is_empty()) {
        Some(path) => path,
        None => find_on_path().ok_or_else(not_found_message)?,
    };
    let args = arguments.unwrap_or_else(|| DEFAULT_ARGS.iter().map(|a| a.to_string()).collect());
    let mut env: Vec<(String, String)> = env.unwrap_or_default().into_iter().collect();
    env.sort();
    Ok(zed::Command { command, args, env })
}

fn lsp_settings(language_server_id: &LanguageServerId, worktree: &Worktree) -> Result<LspSettings> {
    LspSettings::for_worktree(language_server_id.as_ref(), worktree)
        .map_err(|err| format!("{SERVER_NAME}: cannot read lsp.{SERVER_NAME} settings: {err}"))
}

impl zed::Extension for PieLspExtension {
    fn new() -> Self {
        PieLspExtension
    }

    fn language_server_command(
        &mut self,
        language_server_id: &LanguageServerId,
        worktree: &Worktree,
    ) -> Result<zed::Command> {
        let settings = lsp_settings(language_server_id, worktree)?;
        resolve_command(settings.binary, || worktree.which(SERVER_NAME))
    }

    fn language_server_initialization_options(
        &mut self,
        language_server_id: &LanguageServerId,
        worktree: &Worktree,
    ) -> Result<Option<serde_json::Value>> {
        Ok(lsp_settings(language_server_id, worktree)?.initialization_options)
    }
}

zed::register_extension!(PieLspExtension);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(path: Option<&str>, arguments: Option<&[&str]>) -> Option<CommandSettings> {
        Some(CommandSettings {
            path: path.map(str::to_string),
            arguments: arguments.map(|a| a.iter().map(|s| s.to_string()).collect()),
            env: None,
        })
    }

    #[test]
    fn setting_path_wins_and_path_is_not_searched() {
        let cmd = resolve_command(settings(Some("/opt/pie/bin/pie-lsp"), None), || {
            panic!("PATH must not be searched when binary.path is set")
        })
        .unwrap();
        assert_eq!(cmd.command, "/opt/pie/bin/pie-lsp");
        assert_eq!(cmd.args, vec!["serve".to_string()]);
        assert!(cmd.env.is_empty());
    }

    #[test]
    fn setting_arguments_and_env_are_used() {
        let mut binary = settings(Some("/x/pie-lsp"), Some(&["serve", "-v"])).unwrap();
        binary.env = Some(HashMap::from([("PIE".to_string(), "1".to_string())]));
        let cmd = resolve_command(Some(binary), || None).unwrap();
        assert_eq!(cmd.args, vec!["serve".to_string(), "-v".to_string()]);
        assert_eq!(cmd.env, vec![("PIE".to_string(), "1".to_string())]);
    }

    #[test]
    fn falls_back_to_path_lookup() {
        let cmd = resolve_command(None, || Some("/usr/local/bin/pie-lsp".into())).unwrap();
        assert_eq!(cmd.command, "/usr/local/bin/pie-lsp");
        assert_eq!(cmd.args, vec!["serve".to_string()]);

        let cmd = resolve_command(settings(Some("  "), Some(&[])), || {
            Some("/p/pie-lsp".into())
        })
        .unwrap();
        assert_eq!(cmd.command, "/p/pie-lsp");
        assert!(cmd.args.is_empty());
    }

    #[test]
    fn not_found_says_how_to_install() {
        let err = resolve_command(None, || None).unwrap_err();
        assert!(err.contains("make setup"), "{err}");
        assert!(err.contains(".venv/bin/pie-lsp"), "{err}");
        assert!(err.contains("binary"), "{err}");
    }
}
