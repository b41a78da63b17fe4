//! `eventline serve`'s flags, made from the settings table of the server's config
//! (`eventline_server::config::SETTINGS_HELP`): one flag per dotted key (`grpc.addr` is
//! `--grpc-addr`), with its environment variable and default in the help, and a value
//! parsed exactly as the environment variable's would be. `database.url` and `data.dir`
//! are the global `--database-url` and `--data-dir` of every database command.

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use eventline_server::config::{SETTINGS_HELP, default_values, env_name, flag_name};
use figment::{Figment, providers::Serialized};

/// Settings given as global flags of every database command instead.
const GLOBAL_SETTINGS: [&str; 2] = ["database.url", "data.dir"];

/// Shorter names kept for the TLS flags, as the README shows them.
const ALIASES: [(&str, &str); 3] = [
    ("tls.cert_path", "tls-cert"),
    ("tls.key_path", "tls-key"),
    ("tls.client_ca_path", "tls-client-ca"),
];

/// The settings given on the command line, as `(dotted key, raw value)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SettingFlags(Vec<(String, String)>);

impl SettingFlags {
    /// The flags as the highest-priority configuration layer. Values parse as
    /// environment values do: `5000` is a number, `[a, b]` a list, anything else text.
    pub(crate) fn figment(&self) -> Figment {
        self.0.iter().fold(Figment::new(), |figment, (key, raw)| {
            let value: figment::value::Value = raw
                .parse()
                .unwrap_or_else(|_| figment::value::Value::from(raw.clone()));
            figment.merge(Serialized::default(key, value))
        })
    }
}

fn flag_settings() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    SETTINGS_HELP
        .iter()
        .filter(|(key, _)| !GLOBAL_SETTINGS.contains(key))
}

impl Args for SettingFlags {
    fn augment_args(command: Command) -> Command {
        let defaults = default_values();
        flag_settings().fold(command, |command, (key, help)| {
            let default = defaults
                .iter()
                .find(|(name, _)| name == key)
                .and_then(|(_, value)| value.clone());
            let default = match default {
                Some(value) => format!(" [default: {value}]"),
                None => String::new(),
            };
            let mut arg = Arg::new(*key)
                .long(flag_name(key))
                .value_name("VALUE")
                .help(format!("{help} [env: {}]{default}", env_name(key)));
            if let Some((_, alias)) = ALIASES.iter().find(|(name, _)| name == key) {
                arg = arg.visible_alias(*alias);
            }
            command.arg(arg)
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(
            flag_settings()
                .filter_map(|(key, _)| {
                    matches
                        .get_one::<String>(key)
                        .map(|value| ((*key).to_owned(), value.clone()))
                })
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}
