//! The bot's commands as values: what an agent wrote (`!assign @ana:example.org`) parsed into a
//! [`Command`], or the usage it got wrong.
//!
//! Names, help lines and usages come from one table ([`Name`]), and every match over names
//! and commands is exhaustive: a command cannot be listed without being parsed and run, or
//! run without being listed.

use ruma::{OwnedUserId, UserId};

use crate::support::conversation::{Priority, Status, valid_label, valid_language};

/// Declares [`Name`] from the table: variant, name, help line, usage shown for bad arguments.
macro_rules! names {
    ($($variant:ident = $name:literal, help $help:literal, usage $usage:literal;)*) => {
        /// A command's name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Name {
            $($variant),*
        }

        impl Name {
            /// Every command, in the order the help lists them.
            pub(crate) const ALL: &'static [Name] = &[$(Name::$variant),*];

            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Name::$variant => $name),*
                }
            }

            /// How the help shows the command.
            fn help(self) -> &'static str {
                match self {
                    $(Name::$variant => $help),*
                }
            }

            /// How to write it, for an answer to bad arguments.
            fn usage(self) -> &'static str {
                match self {
                    $(Name::$variant => $usage),*
                }
            }

            fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

names! {
    Assign = "assign", help "!assign @user", usage "!assign @user:server";
    Unassign = "unassign", help "!unassign", usage "!unassign";
    Status = "status", help "!status open|pending|closed", usage "!status open|pending|closed";
    Close = "close", help "!close", usage "!close";
    Reopen = "reopen", help "!reopen", usage "!reopen";
    Label = "label", help "!label add|remove LABEL", usage "!label add|remove LABEL";
    Priority = "priority",
        help "!priority low|medium|high|urgent", usage "!priority low|medium|high|urgent";
    Language = "language", help "!language es|en|…", usage "!language TAG (es, en, pt-BR…)";
    Ticket = "ticket", help "!ticket TITLE", usage "!ticket TITLE";
    Template = "template", help "!template NAME", usage "!template NAME";
    Note = "note", help "!note (the staff-only notes room)", usage "!note";
    Suggest = "suggest", help "!suggest", usage "!suggest";
    Help = "help", help "!help", usage "!help";
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Assign(OwnedUserId),
    Unassign,
    /// `!status`, `!close` and `!reopen`.
    Status(Status),
    Label {
        add: bool,
        label: String,
    },
    Priority(Priority),
    /// A language tag as stored.
    Language(String),
    /// The ticket's title.
    Ticket(String),
    /// The template's name.
    Template(String),
    /// The note's text; empty: only the link to the notes room.
    Note(String),
    Suggest,
    Help,
}

/// Arguments a command cannot take: how to write it instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage(Name);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "usage: {}", self.0.usage())
    }
}

/// A message that is one of the bot's commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call<'a> {
    pub(crate) name: Name,
    /// The arguments as written, trimmed.
    pub(crate) args: &'a str,
    pub(crate) command: Result<Command, Usage>,
}

impl<'a> Call<'a> {
    /// The command `body` is, if it is one: `!` and a command's name, then its arguments.
    pub(crate) fn parse(body: &'a str) -> Option<Self> {
        let rest = body.strip_prefix('!')?;
        let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let name = Name::parse(name)?;
        let args = args.trim();
        let command = parse_args(name, args).ok_or(Usage(name));
        Some(Call {
            name,
            args,
            command,
        })
    }
}

/// The command `name` with these arguments means, if they fit it. Commands without arguments
/// ignore what follows them.
fn parse_args(name: Name, args: &str) -> Option<Command> {
    Some(match name {
        Name::Assign => Command::Assign(UserId::parse(args).ok()?),
        Name::Unassign => Command::Unassign,
        Name::Status => Command::Status(Status::parse(args)?),
        Name::Close => Command::Status(Status::Closed),
        Name::Reopen => Command::Status(Status::Open),
        Name::Label => {
            let (op, label) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            let label = valid_label(label)?;
            let add = match op {
                "add" => true,
                "remove" => false,
                _ => return None,
            };
            Command::Label { add, label }
        }
        Name::Priority => Command::Priority(Priority::parse(args)?),
        Name::Language => Command::Language(valid_language(args)?),
        Name::Ticket => Command::Ticket((!args.is_empty()).then(|| args.to_owned())?),
        Name::Template => Command::Template(args.to_owned()),
        Name::Note => Command::Note(args.to_owned()),
        Name::Suggest => Command::Suggest,
        Name::Help => Command::Help,
    })
}

/// The help: every command, in order.
pub(crate) fn help() -> String {
    let lines: Vec<&str> = Name::ALL.iter().map(|n| n.help()).collect();
    format!("Commands: {}", lines.join(" · "))
}

#[cfg(test)]
mod tests {
    use ruma::owned_user_id;

    use super::*;

    fn command(body: &str) -> Result<Command, Usage> {
        Call::parse(body).expect("a command").command
    }

    #[test]
    fn every_command_parses_into_what_it_asks_for() {
        let cases = [
            ("!assign @ana:x", Command::Assign(owned_user_id!("@ana:x"))),
            ("!unassign", Command::Unassign),
            ("!status pending", Command::Status(Status::Pending)),
            ("!close", Command::Status(Status::Closed)),
            ("!reopen", Command::Status(Status::Open)),
            (
                "!label add  VIP client ",
                Command::Label {
                    add: true,
                    label: "VIP client".into(),
                },
            ),
            (
                "!label remove vip",
                Command::Label {
                    add: false,
                    label: "vip".into(),
                },
            ),
            ("!priority urgent", Command::Priority(Priority::Urgent)),
            ("!language PT-BR", Command::Language("pt-BR".into())),
            (
                "!ticket Broken  screen",
                Command::Ticket("Broken  screen".into()),
            ),
            ("!template thanks", Command::Template("thanks".into())),
            ("!note", Command::Note(String::new())),
            ("!note call\nback", Command::Note("call\nback".into())),
            ("!suggest", Command::Suggest),
            ("!help", Command::Help),
        ];
        for (body, expected) in &cases {
            assert_eq!(command(body).as_ref(), Ok(expected), "{body:?}");
        }
        // Every name of the table is among them.
        for name in Name::ALL {
            assert!(
                cases
                    .iter()
                    .any(|(body, _)| Call::parse(body).unwrap().name == *name),
                "{name:?} untested"
            );
        }
        let call = Call::parse("!status   closed  ").unwrap();
        assert_eq!((call.name, call.args), (Name::Status, "closed"));
        // Commands without arguments ignore what follows.
        assert_eq!(command("!close now"), Ok(Command::Status(Status::Closed)));
    }

    #[test]
    fn bad_arguments_answer_the_usage() {
        let cases = [
            ("!assign ana", "usage: !assign @user:server"),
            ("!assign", "usage: !assign @user:server"),
            ("!status done", "usage: !status open|pending|closed"),
            ("!status", "usage: !status open|pending|closed"),
            ("!label vip", "usage: !label add|remove LABEL"),
            ("!label add", "usage: !label add|remove LABEL"),
            ("!label push vip", "usage: !label add|remove LABEL"),
            ("!priority asap", "usage: !priority low|medium|high|urgent"),
            ("!language klingon", "usage: !language TAG (es, en, pt-BR…)"),
            ("!ticket", "usage: !ticket TITLE"),
            ("!ticket   ", "usage: !ticket TITLE"),
        ];
        for (body, usage) in cases {
            let error = command(body).expect_err(body);
            assert_eq!(error.to_string(), usage, "{body:?}");
        }
    }

    #[test]
    fn only_known_names_after_a_bang_are_commands() {
        for not in [
            "assign @ana:x",
            "!nope",
            "!",
            "! help",
            "!Help",
            "!helpme",
            " !help",
            "",
        ] {
            assert_eq!(Call::parse(not), None, "{not:?}");
        }
        assert!(Call::parse("!help\tplease").is_some());
    }

    #[test]
    fn the_help_lists_exactly_the_commands_in_order() {
        let help = help();
        assert_eq!(
            help,
            "Commands: !assign @user · !unassign · !status open|pending|closed · !close · \
             !reopen · !label add|remove LABEL · !priority low|medium|high|urgent · \
             !language es|en|… · !ticket TITLE · !template NAME · !note (the staff-only notes \
             room) · !suggest · !help"
        );
        let listed: Vec<&str> = help
            .trim_start_matches("Commands: ")
            .split(" · ")
            .map(|line| line.split_whitespace().next().unwrap())
            .collect();
        let names: Vec<String> = Name::ALL
            .iter()
            .map(|n| format!("!{}", n.as_str()))
            .collect();
        assert_eq!(listed, names);
        for listed in &listed {
            assert!(Call::parse(listed).is_some(), "{listed} does not parse");
        }
    }
}
